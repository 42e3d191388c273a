"""The whole flow on a copy of the repository, against real components: the same bytes as
`dvc repro`, and a rerun that runs only the stage whose outputs changed; the Dask task runner on a
LocalCluster of 2 workers; a deployment from prefect.yaml run by a process worker against a real
Prefect server on 127.0.0.1; and, in headless Chromium, that server's UI showing the evaluation on
the top-level flow run, and the MLflow UI listing the runs with their metrics."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from complexitynet.config import load_params
from tests.flows.browser import chromium, free_port, get_json, process, screenshot_on_failure, wait_healthy
from tests.project import STAGES, make_project, run, tree_digest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]
OUTPUTS = ("data/problems.jsonl", "data/samples", "data/verdicts", "data/labels.jsonl", "models", "metrics",
           "plots", "reports")


@pytest.fixture(scope="module")
def project(tmp_path_factory, mirror):
    tmp = tmp_path_factory.mktemp("flow")
    # The flow's orchestration is under test here, not the hidden tests (test_dvc runs those through
    # DVC): without MBPP+ each of the four pipelines below runs in minutes less on 2 cores.
    root, env = make_project(tmp, mirror, prepare={"mbppplus": False})
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    # flows/pipeline.py gives the ephemeral server 120 s to start by itself (as `make flow` does)
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    return root, env


@pytest.fixture(scope="module")
def reference(project):
    """`dvc repro`'s outputs (and, as a side effect, a warm verdict cache)."""
    root, env = project
    run([sys.executable, "-m", "dvc", "repro"], root, env)
    return digest(root)


def digest(root: Path) -> dict[str, str]:
    return {name: h for sub in ("data", "metrics", "plots", "reports") for name, h in tree_digest(root / sub).items()}


def clear_outputs(root: Path, *extra: str) -> None:
    for rel in (*OUTPUTS, *extra):
        path = root / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def summary(output: str) -> dict:
    return json.loads(re.search(r"complexitynet summary: (\{.*\})", output).group(1))


@pytest.fixture(scope="module")
def flow_run(project, reference) -> tuple[str, dict]:
    """`python flows/pipeline.py` (as `make flow`: an ephemeral Prefect server) after `dvc repro`, every
    output but the fetched sources removed: its output and summary."""
    root, env = project
    clear_outputs(root)
    out = run([sys.executable, "flows/pipeline.py"], root, env)
    return out, summary(out)


def test_flow_writes_the_same_bytes_as_dvc_repro_and_records_the_version(project, reference, flow_run):
    root, env = project
    out, result = flow_run
    assert digest(root) == reference
    assert result["data_version"] == "dvc commit (no DVC remote configured: nothing pushed)"
    assert (result["skipped"], result["ran"]) == (["fetch"], list(STAGES[1:]))  # dvc repro fetched the same sources
    assert "fetch: skipped (up to date with dvc.lock)" in out
    assert "prepare: ran (changed outs: data/problems.jsonl deleted); recorded in dvc.lock" in out
    assert "Data and pipelines are up to date" in run([sys.executable, "-m", "dvc", "status"], root, env)


def test_a_rerun_runs_only_the_stages_whose_inputs_or_outputs_changed(project, reference, flow_run, busy_machine):
    # labels.jsonl removed: label runs and writes the same bytes, so train (no LoRA retraining) and
    # evaluate are up to date against what label recorded; the artifacts come from evaluate's files.
    # Every core is busy: the flow (as `make flow`) still starts its ephemeral Prefect server.
    root, env = project
    (root / "data/labels.jsonl").unlink()
    out = run([sys.executable, "flows/pipeline.py"], root, env)
    result = summary(out)
    assert (result["ran"], result["skipped"]) == (["label"], [s for s in STAGES if s != "label"])
    assert "label: ran (changed outs: data/labels.jsonl deleted); recorded in dvc.lock" in out
    assert "train: skipped (up to date with dvc.lock)" in out
    assert result["lora_run_id"] is None and result["execute_workers"] == []
    assert result["router_pass_rate"] == flow_run[1]["router_pass_rate"]
    assert digest(root) == reference
    assert "Data and pipelines are up to date" in run([sys.executable, "-m", "dvc", "status"], root, env)


def test_flow_on_a_dask_local_cluster_spreads_sandbox_batches_over_both_workers(project, reference):
    # (Sampling on Dask is spread over both workers in tests/flows/test_flow_units.py, with live models:
    # a recorded model's task takes a fraction of a second, and Dask may run all three on one worker.)
    root, env = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["orchestrate"].update(task_runner="dask", dask_workers=2, execute_batch=128)
    (root / "params-dask.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    clear_outputs(root)
    cache, kept = root / "data/cache/verdicts", root.parent / "verdict-cache"
    cache.rename(kept)  # every sample runs again, on the Dask workers
    try:
        out = run([sys.executable, "flows/pipeline.py", "--params", "params-dask.yaml"], root, env)
    finally:  # later tests compare with the reference, whose verdict durations live in this cache
        shutil.rmtree(root.parent / "dask-cache", ignore_errors=True)
        if cache.exists():
            cache.rename(root.parent / "dask-cache")
        kept.rename(cache)
    result = summary(out)
    assert result["task_runner"] == "dask"
    assert len(result["sample_workers"]) >= 1 and len(result["execute_workers"]) == 2
    assert result["data_version"].startswith("params differ")  # dvc.lock keeps describing params.yaml
    now = digest(root)
    deterministic = [name for name in reference if name.startswith(("samples/", "problems", "sources/"))]
    assert {n: now[n] for n in deterministic} == {n: reference[n] for n in deterministic}
    # Verdicts were computed afresh on the Dask workers. They match the reference's (a direct comparison
    # on an idle machine found no difference in 2,920), but a sample near its time limit may time out in
    # one run and not the other when the 2 cores are loaded, so a handful may differ.
    cached, fresh = cached_statuses(root / "data/cache/verdicts"), cached_statuses(root.parent / "dask-cache")
    assert len(fresh) >= 2000 and set(fresh) <= set(cached)
    differ = {key: (cached[key], status) for key, status in fresh.items() if cached[key] != status}
    assert len(differ) <= len(fresh) // 100, differ


def cached_statuses(cache_dir: Path) -> dict[str, str]:
    """Verdict status by job key, from a verdict cache directory (all models)."""
    return {row["key"]: row["outcome"]["status"] for path in cache_dir.glob("*.jsonl")
            for row in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def prefect_api(project, flow_run, tmp_path_factory):
    """A real Prefect server (API and UI) on 127.0.0.1 over the database the ephemeral servers of the
    runs above wrote (the project's PREFECT_HOME): its root URL and an environment pointing at it."""
    root, env = project
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "PREFECT_API_URL": f"{url}/api"}  # also the API address the UI is served with
    logs = tmp_path_factory.mktemp("prefect-server")
    with process([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 root, env, logs / "server.log") as server:
        wait_healthy(f"{url}/api/health", server, "Prefect server")
        yield url, env


def test_deployment_from_prefect_yaml_runs_on_a_process_worker(project, reference, prefect_api, tmp_path):
    root, _ = project
    _, env = prefect_api
    prefect = [sys.executable, "-m", "prefect"]
    run([*prefect, "work-pool", "create", "complexitynet", "--type", "process"], root, env)
    with process([*prefect, "worker", "start", "--pool", "complexitynet", "--limit", "1"], root, env,
                 tmp_path / "worker.log"):
        clear_outputs(root)
        out = run([*prefect, "--no-prompt", "deploy", "--name", "nightly"], root, env)
        assert "complexitynet/nightly" in out
        out = run([*prefect, "deployment", "run", "complexitynet/nightly", "--watch"], root, env, timeout=1200)
        assert "Completed" in out, out
        assert digest(root) == reference
        assert "Data and pipelines are up to date" in run([sys.executable, "-m", "dvc", "status"], root, env)
        artifact = run([*prefect, "artifact", "inspect", "complexitynet-evaluation"], root, env)
        assert "router" in artifact and "pass_rate" in artifact


# --- the web UIs, in a browser ------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def test_prefect_ui_shows_the_policy_table_and_the_frontier_on_the_top_level_run(flow_run, prefect_api, browser,
                                                                                 tmp_path):
    """Both of Prefect's UIs (the default, v2, and v1): the run's Artifacts tab lists the evaluation's
    artifacts; the policy table shows rounded numbers; the frontier and the report's plots decode."""
    from playwright.sync_api import expect

    run_id = flow_run[1]["flow_run_id"]
    url, _ = prefect_api
    ui = get_json(f"{url}/ui-settings")
    assert ui["default_ui"] in ui["available_uis"] and "v2" in ui["available_uis"], ui
    for version in ui["available_uis"]:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        def open_artifact(key: str) -> None:
            page.goto(f"{url}{ui[f'{version}_base_url'].rstrip('/')}/runs/flow-run/{run_id}")
            page.get_by_text("Artifacts", exact=True).first.click()
            for listed in ("complexitynet-evaluation", "complexitynet-report", "complexitynet-frontier"):
                expect(page.get_by_text(listed, exact=True).first).to_be_visible(timeout=30_000)
            page.get_by_text(key, exact=True).first.click()
            page.wait_for_url(re.compile(r"/artifacts/artifact/"))

        def decoded_images(least: int) -> list[int]:
            images = page.locator('img[src^="data:image/png;base64,"]')
            expect(images.nth(least - 1)).to_be_visible(timeout=30_000)
            page.wait_for_function("n => [...document.querySelectorAll('img[src^=\"data:image/png\"]')]"
                                   ".filter(i => i.complete && i.naturalWidth > 0).length >= n", arg=least)
            return images.evaluate_all("els => els.map(e => e.naturalWidth)")

        with screenshot_on_failure(page, tmp_path / f"prefect-ui-{version}.png"):
            open_artifact("complexitynet-evaluation")
            table = page.locator("table").first
            expect(table).to_contain_text("router", timeout=30_000)
            cells = [c.strip() for c in table.locator("td").all_inner_texts()]
            numbers = [c for c in cells if re.fullmatch(r"-?\d+(\.\d+)?", c)]
            assert numbers and all(re.fullmatch(r"-?\d+(\.\d{1,3})?", c) for c in numbers), cells
            open_artifact("complexitynet-frontier")
            assert all(width > 0 for width in decoded_images(1))
            open_artifact("complexitynet-report")
            assert sum(width > 0 for width in decoded_images(2)) >= 2  # frontier and confusion matrix
        page.close()


def test_mlflow_ui_lists_the_runs_with_their_metric_columns(project, flow_run, browser, tmp_path):
    """`mlflow ui` over the flow's tracking store: the experiment's runs table, with a val_ (or test_)
    metric's column added from the Columns menu, shows that column with numbers in it."""
    root, env = project
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "ui", "--backend-store-uri", env["MLFLOW_TRACKING_URI"], "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    with process(cmd, tmp_path, env, tmp_path / "mlflow.log") as server:
        wait_healthy(f"{url}/health", server, "MLflow server", timeout=180)  # ~40 s to start on a busy 2-core machine
        name = load_params(root / "params.yaml").train.experiment
        experiment = get_json(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")["experiment"]
        page = browser.new_page(viewport={"width": 2400, "height": 1600})
        page.set_default_timeout(60_000)
        with screenshot_on_failure(page, tmp_path / "mlflow-ui.png"):
            page.goto(f"{url}/#/experiments/{experiment['experiment_id']}/runs")
            page.locator("[role=gridcell][col-id]").first.wait_for()  # the runs table, with a run in it
            page.get_by_role("button", name="Columns", exact=True).click()
            search = page.get_by_placeholder("Search columns")
            for prefix in ("val_", "test_"):
                search.fill(prefix)
                group = page.get_by_text(re.compile(r"^Metrics \(\d+\)$"))
                if group.count():
                    break
            else:
                raise AssertionError("no metric named val_* or test_* in the Columns menu")
            group.click()
            page.keyboard.press("Escape")
            header = page.locator("[role=columnheader][col-id^='metrics.']", has_text=prefix).first
            header.wait_for()
            column = header.get_attribute("col-id")
            values = page.locator(f'[role=gridcell][col-id="{column}"]').all_inner_texts()
            assert any(re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", v.strip()) for v in values), (column, values)
        page.close()
