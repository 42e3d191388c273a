"""train: a LoRA complexity classifier on the label set, plus baselines, all tracked in MLflow.

Trains on the train split and selects the epoch on validation (early stopping on macro-F1); the
test split is never read here. `accelerate` places the model on a GPU when there is one (several
with `accelerate launch`), else on the CPU. Class imbalance: class-weighted cross-entropy
(`train.imbalance: balanced`). Saves models/classifier/ (adapter, head, tokenizer, label map and
config) and models/baselines/, and logs one MLflow run per classifier (params, per-epoch metrics,
validation metrics under the names `evaluate` gives the test ones, the confusion matrix, the
classification report, the splits as inputs, and a one-call-loadable model; see tracking.py).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from complexitynet.classifier import quiet_libraries
from complexitynet.config import TrainParams
from complexitynet.errors import DataError
from complexitynet.paths import load_samples
from complexitynet.schemas import Label, Problem

if TYPE_CHECKING:
    from complexitynet.config import Params
    from complexitynet.paths import Paths

log = logging.getLogger("complexitynet")


@dataclass
class Split:
    task_ids: list[str]
    texts: list[str]
    labels: np.ndarray


def training_data(problems: list[Problem], labels: list[Label], field_name: str, max_n: int = 0
                  ) -> dict[str, Split]:
    """The train and validation splits (never test, never the few-shot examples)."""
    text_of = {p.task_id: getattr(p, field_name) for p in problems}
    out = {}
    for split in ("train", "validation"):
        rows = [lab for lab in labels if lab.split == split]
        if max_n:
            rows = rows[:max_n]
        missing = [lab.task_id for lab in rows if lab.task_id not in text_of]
        if missing:
            raise DataError(f"data/labels.jsonl: {missing[:3]} not in data/problems.jsonl; rerun the pipeline")
        out[split] = Split([r.task_id for r in rows], [text_of[r.task_id] for r in rows],
                           np.array([r.label for r in rows], dtype=np.int64))
        if not rows:
            raise DataError(f"data/labels.jsonl has no '{split}' prompts; the classifier needs both splits")
    return out


def scores(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """accuracy, macro-F1 and within-one-level accuracy of argmax predictions."""
    from sklearn.metrics import f1_score

    pred = probs.argmax(axis=1)
    return {
        "accuracy": float((pred == y_true).mean()),
        "macro_f1": float(f1_score(y_true, pred, average="macro", labels=range(probs.shape[1]), zero_division=0)),
        "within_one": float((np.abs(pred - y_true) <= 1).mean()),
    }


def class_weights(y: np.ndarray, num_labels: int) -> np.ndarray:
    """Inverse-frequency weights, normalised to mean 1 (absent classes get weight 0)."""
    counts = np.bincount(y, minlength=num_labels).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_labels, 0.0)
    return weights / weights[weights > 0].mean()


@dataclass
class FitResult:
    model: Any
    tokenizer: Any
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    device: str = "cpu"


def fit_lora(data: dict[str, Split], num_labels: int, cfg: TrainParams, seed: int, on_epoch=None) -> FitResult:
    """The LoRA training loop (accelerate); keeps the weights of the best validation epoch."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from complexitynet.classifier import build_model

    set_seed(seed)
    accelerator = Accelerator()
    model, tokenizer = build_model(cfg.base_model, num_labels, cfg.lora.model_dump())

    def loader(split: Split, shuffle: bool) -> DataLoader:
        with accelerator.main_process_first():
            enc = tokenizer(split.texts, truncation=True, max_length=cfg.max_length)
        rows = [{"input_ids": ids, "attention_mask": mask, "labels": int(y)}
                for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], split.labels)]
        return DataLoader(rows, batch_size=cfg.batch_size, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(seed),
                          collate_fn=lambda batch: tokenizer.pad(batch, return_tensors="pt"))

    train_dl, val_dl = loader(data["train"], True), loader(data["validation"], False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(train_dl)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(int(cfg.warmup_ratio * steps), steps))
    model, optimizer, train_dl, val_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, val_dl, scheduler)
    weight = None
    if cfg.imbalance == "balanced":
        weight = torch.tensor(class_weights(data["train"].labels, num_labels), dtype=torch.float32,
                              device=accelerator.device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)

    result = FitResult(None, tokenizer, device=str(accelerator.device))
    best_f1, best_state, stale = -1.0, None, 0
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, batches, epoch_start = torch.zeros((), device=accelerator.device), 0, time.perf_counter()
        for batch in train_dl:
            labels = batch.pop("labels")
            loss = loss_fn(model(**batch).logits, labels)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total, batches = total + loss.detach(), batches + 1  # summed on the device: no per-batch sync
        train_seconds = time.perf_counter() - epoch_start
        probs = predict_loader(model, val_dl, accelerator)
        row = {"epoch": epoch, "train_loss": float(total) / max(batches, 1), "train_seconds": train_seconds,
               **{f"val_{k}": v for k, v in scores(data["validation"].labels, probs).items()}}
        result.history.append(row)
        if on_epoch:
            on_epoch(row)
        if row["val_macro_f1"] > best_f1:
            best_f1, stale, result.best_epoch = row["val_macro_f1"], 0, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in accelerator.unwrap_model(model)
                                        .state_dict().items() if "lora_" in k or "classifier" in k})
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    result.seconds = time.perf_counter() - start
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_state, strict=False)
    result.model = unwrapped.eval()
    return result


def linear_warmup_decay(warmup: int, total: int):
    """LR multiplier: linear warm-up to 1, then linear decay to 0 at `total` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def predict_loader(model, dataloader, accelerator) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for batch in dataloader:
            batch = {k: v for k, v in batch.items() if k != "labels"}
            logits = accelerator.gather_for_metrics(model(**batch).logits)
            out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out)


def fit_baselines(data: dict[str, Split], num_labels: int, cfg: TrainParams, seed: int,
                  only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Majority class, the training prior, TF-IDF + logistic regression, kNN on frozen embeddings
    (`only` fits a subset, e.g. for cross-validation)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline

    from complexitynet.baselines import Constant, EmbeddingKNN, Padded

    train = data["train"]
    prior = np.bincount(train.labels, minlength=num_labels) / len(train.labels)
    makers = {
        "majority": lambda: Constant(np.eye(num_labels)[int(prior.argmax())]),
        "prior": lambda: Constant(prior),
        "tfidf_lr": lambda: Padded(make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
            LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed),
        ).fit(train.texts, train.labels), num_labels),
        "knn_minilm": lambda: Padded(EmbeddingKNN(cfg.base_model, cfg.max_length, KNeighborsClassifier(
            n_neighbors=min(cfg.knn_k, len(train.labels)), weights="distance")).fit(train.texts, train.labels),
            num_labels),
    }
    return {name: make() for name, make in makers.items() if only is None or name in only}



def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), value))
        return out
    return {prefix: obj}


def train(problems: list[Problem], labels: list[Label], classes: list[str], cfg: TrainParams, seed: int,
          out_dir, baselines_dir, run_tags: dict[str, str], labels_file: Path = Path("data/labels.jsonl")
          ) -> dict[str, Any]:
    """Fit the classifier and the baselines and save them; one MLflow run each (kind `classifier`),
    all with the same validation metrics (val_accuracy, val_macro_f1, val_within_one), the validation
    confusion matrix and classification report, the train and validation splits as inputs; the LoRA
    classifier is registered when its files are new. Returns the metrics."""
    import mlflow

    from complexitynet import tracking
    from complexitynet.classifier import Classifier, log_pyfunc, save_classifier
    from complexitynet.io import dump_joblib

    data = training_data(problems, labels, cfg.input, cfg.max_train)
    num_labels = len(classes)
    val = data["validation"]
    experiment_id = tracking.setup(cfg.experiment)
    sizes = {"n_train": len(data["train"].labels), "n_validation": len(val.labels)}
    metrics: dict[str, Any] = {"classes": classes, **sizes, "models": {}, "experiment_id": experiment_id}

    def start(name: str, **tags: str):
        run = mlflow.start_run(run_name=tracking.run_name(name, run_tags),
                               tags={**run_tags, "kind": "classifier", "classifier": name, **tags})
        log_splits(data, classes, run_tags["dataset"], labels_file)
        return run

    with start("lora") as run:
        mlflow.log_params({**flatten("train", cfg.model_dump()), **sizes, "seed": seed, "classes": ",".join(classes)})
        fit = fit_lora(data, num_labels, cfg, seed, on_epoch=_epoch_logger(cfg.epochs))
        clf = Classifier(fit.model, fit.tokenizer, classes, cfg.max_length, {})
        probs = clf.predict_proba(val.texts)
        best = scores(val.labels, probs)
        epochs_run = len(fit.history)
        mlflow.log_metrics({**{f"val_{k}": v for k, v in best.items()}, "best_epoch": fit.best_epoch,
                            "epochs_run": epochs_run, "seconds_per_epoch": fit.seconds / max(epochs_run, 1)})
        mlflow.set_tag("device", fit.device)
        log_classification(val.labels, probs, classes, "validation",
                           f"LoRA {cfg.base_model}: validation (n={len(val.labels)})")
        meta = {"classes": classes, "base_model": cfg.base_model, "max_length": cfg.max_length, "input": cfg.input,
                "train_config": cfg.model_dump(), "seed": seed, "best_epoch": fit.best_epoch,
                "validation": best, "tags": {k: v for k, v in run_tags.items() if k in ("ladder", "dataset")}}
        save_classifier(fit.model, fit.tokenizer, Path(out_dir), meta)
        content = tracking.content_hash(Path(out_dir))
        mlflow.set_tag(tracking.CONTENT, content)
        info = log_pyfunc(Path(out_dir), classes)
        _register(cfg.registered_model, info.model_uri, content, run_tags, best["macro_f1"])
        metrics["models"]["lora"] = {**best, "best_epoch": fit.best_epoch, "epochs_run": epochs_run,
                                     "run_id": run.info.run_id}
        metrics["history"] = fit.history

    Path(baselines_dir).mkdir(parents=True, exist_ok=True)
    log.info("train: fitting the baselines (majority, prior, tfidf_lr, knn_minilm)")
    for name, model in fit_baselines(data, num_labels, cfg, seed).items():
        path = Path(baselines_dir) / f"{name}.joblib"
        dump_joblib(model, path)
        with start(name, **{tracking.CONTENT: tracking.content_hash(path)}):
            probs = model.predict_proba(val.texts)
            result = scores(val.labels, probs)
            mlflow.log_params({"baseline": name, **sizes})
            mlflow.log_metrics({f"val_{k}": v for k, v in result.items()})
            log_classification(val.labels, probs, classes, "validation",
                               f"{name}: validation (n={len(val.labels)})")
            mlflow.log_artifact(str(path))
            metrics["models"][name] = result
    return metrics


def log_splits(data: dict[str, Split], classes: list[str], dataset: str, labels_file: Path) -> None:
    """The train and validation splits as inputs of the active run (`<dataset>-train`, `-validation`)."""
    from complexitynet import tracking

    for split, part in data.items():
        tracking.log_dataset(dataset, split, part.task_ids, part.texts, [classes[y] for y in part.labels],
                             "training" if split == "train" else split, labels_file)


def log_classification(y: np.ndarray, probs: np.ndarray, classes: list[str], split: str, title: str) -> None:
    """The confusion matrix (PNG) and sklearn's classification report of argmax predictions, as
    artifacts `<split>/confusion_matrix.png` and `<split>/classification_report.txt` of the active run."""
    import tempfile

    import mlflow
    from sklearn.metrics import classification_report

    from complexitynet.plots import confusion_matrix, confusion_png

    pred = probs.argmax(axis=1)
    with tempfile.TemporaryDirectory() as tmp:
        confusion_png(confusion_matrix(y, pred, len(classes)), classes, Path(tmp) / "confusion_matrix.png", title)
        (Path(tmp) / "classification_report.txt").write_text(classification_report(
            y, pred, labels=list(range(len(classes))), target_names=classes, zero_division=0))
        mlflow.log_artifacts(tmp, split)


def _epoch_logger(epochs: int):
    """on_epoch for fit_lora: the epoch's numbers to MLflow (`epoch/...`, step = epoch) and one log line."""
    import mlflow

    started = time.perf_counter()

    def on_epoch(row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        mlflow.log_metrics({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}, step=epoch)
        elapsed = time.perf_counter() - started
        log.info("train: lora epoch %d/%d  loss %.4f  validation macro-F1 %.3f  %.0f s elapsed, ~%.0f s left at most",
                 epoch, epochs, row["train_loss"], row["val_macro_f1"], elapsed, elapsed / epoch * (epochs - epoch))

    return on_epoch


def _register(name: str, model_uri: str, content: str, run_tags: dict[str, str], macro_f1: float) -> None:
    """Register the classifier unless a version with the same files exists; promote the champion."""
    from complexitynet import tracking

    dataset, ladder = run_tags["dataset"], run_tags["ladder"]
    version, new = tracking.register_once(name, model_uri, content, {
        "dataset": dataset, "ladder": ladder, "val_macro_f1": repr(macro_f1),
        "git_commit": run_tags.get("git_commit", "unknown")})
    champion = _promote_champion(name, version, dataset, ladder, macro_f1)
    log.info("train: %s %s version %s; %s@%s is version %s (alias champion too)",
             "registered" if new else "unchanged files, no new version:", name, version, name,
             tracking.champion_alias(dataset, ladder), champion)


def _promote_champion(name: str, version: str, dataset: str, ladder: str, macro_f1: float) -> str:
    """Point the alias `champion-<dataset>-<ladder>` at `version` if its validation macro-F1 is at
    least the current one's (versions of other datasets or ladders never compete), and `champion` at
    that alias's version: the champion of the label set trained last. Returns the champion version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from complexitynet.tracking import champion_alias

    client = mlflow.MlflowClient()
    alias = champion_alias(dataset, ladder)
    try:
        current = client.get_model_version_by_alias(name, alias)
        champion, best = str(current.version), float(current.tags.get("val_macro_f1", "-1"))
    except MlflowException:
        champion, best = None, -1.0
    if champion is None or macro_f1 >= best:
        champion = version
        client.set_registered_model_alias(name, alias, version)
    client.set_registered_model_alias(name, "champion", champion)
    return champion


def cross_validate(problems: list[Problem], labels: list[Label], num_labels: int, cfg: TrainParams, seed: int,
                   folds: int) -> dict[str, Any]:
    """k-fold cross-validation over the non-test prompts (train + validation pooled), for stable
    numbers on small datasets. Each fold trains for a fixed `cfg.epochs` (no early stopping: the
    held-out fold is only scored, never used to select) and fits the TF-IDF baseline beside it."""
    from sklearn.model_selection import StratifiedKFold

    pooled = training_data(problems, labels, cfg.input, cfg.max_train)
    texts = pooled["train"].texts + pooled["validation"].texts
    y = np.concatenate([pooled["train"].labels, pooled["validation"].labels])
    min_class = np.bincount(y).min(initial=len(y)) if len(y) else 0
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed) if min_class >= folds else None
    if splitter is None:
        from sklearn.model_selection import KFold

        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    fixed = cfg.model_copy(update={"patience": cfg.epochs + 1})
    runs: dict[str, list[dict[str, float]]] = {"lora": [], "tfidf_lr": []}
    for fold, (train_idx, held_idx) in enumerate(splitter.split(texts, y)):
        part = {"train": Split([], [texts[i] for i in train_idx], y[train_idx]),
                "validation": Split([], [texts[i] for i in held_idx], y[held_idx])}
        fit = fit_lora(part, num_labels, fixed, seed + fold)
        runs["lora"].append({k.removeprefix("val_"): v for k, v in fit.history[-1].items() if k.startswith("val_")})
        tfidf = fit_baselines(part, num_labels, fixed, seed + fold, only=("tfidf_lr",))["tfidf_lr"]
        runs["tfidf_lr"].append(scores(part["validation"].labels, tfidf.predict_proba(part["validation"].texts)))
    return {"folds": folds, "n": len(y), "per_fold": runs,
            **{name: {m: {"mean": float(np.mean([r[m] for r in rs])), "std": float(np.std([r[m] for r in rs]))}
                      for m in rs[0]} for name, rs in runs.items()}}



def train_router(problems: list[Problem], labels: list[Label], samples: dict, verdicts: dict, models: list[str],
                 cfg: TrainParams, trials: int, truth: str, seed: int, out_dir, run_tags: dict[str, str],
                 labels_file: Path = Path("data/labels.jsonl")) -> dict[str, Any]:
    """Fit the router that pays (paying.py) on train + validation and save models/router/; one MLflow
    run per success-model candidate (kind `router`) with its out-of-fold numbers under the names
    `evaluate` gives the test ones (val_margin_over_hull, val_pass_rate, val_cost_vs_largest, ...).
    Returns what metrics/train.json keeps."""
    import mlflow

    from complexitynet import tracking
    from complexitynet.paying import recorded, save_router, select_router, targets_of

    data = training_data(problems, labels, cfg.input, cfg.max_train)
    ids = data["train"].task_ids + data["validation"].task_ids
    texts = data["train"].texts + data["validation"].texts
    by_id = {lab.task_id: lab for lab in labels}
    rec = recorded(ids, by_id, samples, verdicts, models, trials, truth)  # type: ignore[arg-type]
    tracking.setup(cfg.experiment)
    started = time.perf_counter()

    def on_fold(name: str, fold: int, folds: int) -> None:
        elapsed = time.perf_counter() - started
        if fold <= folds:
            log.info("train: router candidate %s: fold %d/%d (%.0f s elapsed)", name, fold, folds, elapsed)
        else:
            log.info("train: router candidate %s: final fit on all %d prompts (%.0f s elapsed)", name, len(texts),
                     elapsed)

    spec, fitted = select_router(texts, targets_of(ids, by_id, models), rec, models, cfg.router, cfg, seed,
                                 on_fold=on_fold)
    save_router(spec, fitted, out_dir)
    classes = [*models, "none"]
    for name, cv in spec.candidates.items():
        tags = {**run_tags, "kind": "router", "classifier": name, "chosen": str(name == spec.candidate).lower(),
                tracking.CONTENT: tracking.content_hash(Path(out_dir) / f"{name}.joblib")}
        with mlflow.start_run(run_name=tracking.run_name(f"router-{name}", run_tags), tags=tags):
            log_splits(data, classes, run_tags["dataset"], labels_file)
            mlflow.log_params({"candidate": name, "folds": cv["folds"], "n": cv["n"], "lam": cv["lam"],
                               **flatten("router", cfg.router.model_dump())})
            mlflow.log_metrics({_val_name(k): v for k, v in cv.items() if k not in ("folds", "n", "lam")
                                and v is not None})
    return {"candidate": spec.candidate, "lam": spec.rule.lam, "cascade_lam": spec.cascade_lam,
            "unit_cost": spec.unit_cost, "gate": spec.gate.coef, "candidates": spec.candidates}


def _val_name(key: str) -> str:
    """A candidate's out-of-fold score as an MLflow metric, named as `evaluate` names its test twin."""
    return "val_margin_over_hull" if key == "routing_margin" else f"val_{key}"


# --- the stage's edge: params and paths in, files out (dvc.yaml and the Prefect flow call it) ---

def run(params: Params, paths: Paths) -> dict[str, Any]:
    quiet_libraries()
    from complexitynet.io import read_jsonl, write_metrics
    from complexitynet.label import check_trainable
    from complexitynet.schemas import Label, Problem, Verdict
    from complexitynet.tracking import provenance_tags, ui_url

    classes = params.classes
    tags = {**provenance_tags(), "ladder": params.ladder_name, "dataset": params.base.dataset}
    problems, labels = read_jsonl(paths.problems, Problem), read_jsonl(paths.labels, Label)
    check_trainable(labels, [m.name for m in params.ladder], params.label.max_missing, params.train.router.folds)
    metrics = train(problems, labels, classes, params.train, params.base.seed, paths.classifier,
                    paths.baselines, tags, paths.labels)
    models = [m.name for m in params.ladder]
    verdicts = {m: read_jsonl(paths.verdicts / f"{m}.jsonl", Verdict) for m in models}
    metrics["router"] = train_router(problems, labels, load_samples(params, paths), verdicts, models, params.train,
                                     params.label.k[params.base.dataset], params.label.truth, params.base.seed,
                                     paths.router, tags, paths.labels)
    # run ids and timings differ on every run; the DVC metric keeps only what the inputs determine
    run_id, experiment_id = metrics["models"]["lora"].pop("run_id"), metrics.pop("experiment_id")
    for row in metrics["history"]:
        row.pop("train_seconds")
    router = metrics["router"]
    write_metrics(paths.train_report, paths.train_metrics, metrics, {
        "classifiers": {name: {"val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"]}
                        for name, m in metrics["models"].items()},
        "router": {"candidate": router["candidate"], "cv_margin": router["candidates"][router["candidate"]]["routing_margin"],
                   "cascade_lam": router["cascade_lam"]}})
    for name, m in metrics["models"].items():
        log.info("train: %-12s validation accuracy %.3f  macro-F1 %.3f  within-one %.3f", name, m["accuracy"],
                 m["macro_f1"], m["within_one"])
    for name, m in metrics["router"]["candidates"].items():
        log.info("train: router %-9s cross-validated margin over the hull %+.3f at %.1f%% of the largest's cost "
                 "(lambda %.3g)", name, m["routing_margin"], 100 * m["cost_vs_largest"], m["lam"])
    log.info("train: router -> %s; cascade lambda %.3g", metrics["router"]["candidate"], metrics["router"]["cascade_lam"])
    log.info("train: MLflow runs (`make mlflow-ui`): %s", ui_url(experiment_id))
    return {"run_id": run_id, **metrics}
