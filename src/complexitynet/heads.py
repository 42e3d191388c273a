"""Per-model success prediction: P(model i passes | prompt) for every rung of the ladder.

Candidates, fitted on train + validation prompts only:
- `tfidf`: TF-IDF word 1-2 grams, one logistic regression per model;
- `minilm`: frozen MiniLM embeddings (the classifier's encoder, not fine-tuned), one logistic
  regression per model;
- `knn`: the similarity-weighted mean pass rate of the k nearest prompts in MiniLM space;
- `ensemble`: the mean of the three;
- `lora` (not in the default list: ~1 min a fold on 2 CPU cores, seconds on a GPU): a LoRA adapter
  on the same encoder with one sigmoid output per model, fine-tuned through accelerate.
Targets are pass rates: with k > 1 trials a prompt counts as a pass with weight p and a fail with
weight 1 - p. Probabilities are calibrated per model by Platt scaling fitted on out-of-fold
predictions (`Calibrated`). The choice among candidates is train.py's (`select_router`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

CANDIDATES = ("tfidf", "minilm", "knn", "ensemble", "lora")


class SuccessModel(Protocol):
    def fit(self, texts: list[str], targets: np.ndarray) -> SuccessModel: ...
    def predict(self, texts: list[str]) -> np.ndarray: ...  # [prompt, model] in [0, 1]


class Embedder:
    """Frozen encoder embeddings, memoised by text for the whole process: folds, candidates and
    loaded models (each unpickles its own Embedder) share one embedding per text and encoder."""

    _shared: dict[tuple[str, int], dict[str, np.ndarray]] = {}

    def __init__(self, base_model: str, max_length: int):
        self.base_model, self.max_length = base_model, max_length

    @classmethod
    def forget(cls) -> None:
        """Drop every memoised embedding (to measure what a prompt never seen before costs)."""
        cls._shared.clear()

    @property
    def _memo(self) -> dict[str, np.ndarray]:
        return self._shared.setdefault((self.base_model, self.max_length), {})

    def __call__(self, texts: list[str]) -> np.ndarray:
        from complexitynet.classifier import embed

        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            self._memo.update(zip(missing, embed(missing, self.base_model, self.max_length)))
        return np.stack([self._memo[t] for t in texts])


def _soft_logistic(x, y: np.ndarray, c: float, seed: int):
    """A logistic regression on soft targets (duplicated rows weighted p and 1 - p); a constant
    column (every prompt passes, or none does) is kept as its value."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():
        return float(y[0])
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    if np.isin(y, (0.0, 1.0)).all():
        return model.fit(x, y.astype(int))
    both = sparse.vstack([x, x]) if sparse.issparse(x) else np.vstack([x, x])
    labels = np.concatenate([np.ones(len(y), int), np.zeros(len(y), int)])
    return model.fit(both, labels, sample_weight=np.concatenate([y, 1 - y]))


def _column(model, x, n: int) -> np.ndarray:
    return np.full(n, model) if isinstance(model, float) else model.predict_proba(x)[:, 1]


class Heads:
    """One logistic regression per model over TF-IDF features (`embedder` None) or embeddings."""

    def __init__(self, embedder: Embedder | None, c: float = 1.0, seed: int = 0):
        self.embedder, self.c, self.seed = embedder, c, seed
        self.vectorizer: Any = None
        self.columns: list[Any] = []

    def _features(self, texts: list[str], fit: bool = False):
        if self.embedder is not None:
            return self.embedder(texts)
        if fit:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
            return self.vectorizer.fit_transform(texts)
        return self.vectorizer.transform(texts)

    def fit(self, texts: list[str], targets: np.ndarray) -> Heads:
        x = self._features(texts, fit=True)
        self.columns = [_soft_logistic(x, targets[:, j], self.c, self.seed) for j in range(targets.shape[1])]
        return self

    def predict(self, texts: list[str]) -> np.ndarray:
        x = self._features(texts)
        return np.column_stack([_column(m, x, len(texts)) for m in self.columns])


class KnnHeads:
    """The mean pass rate of the k most similar training prompts (cosine similarity of MiniLM
    embeddings, weighted by similarity)."""

    def __init__(self, embedder: Embedder, k: int = 15):
        self.embedder, self.k = embedder, k
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None

    def fit(self, texts: list[str], targets: np.ndarray) -> KnnHeads:
        self.x, self.y = self.embedder(texts), np.asarray(targets, dtype=np.float64)
        return self

    def predict(self, texts: list[str]) -> np.ndarray:
        sims = self.embedder(texts) @ self.x.T
        k = min(self.k, sims.shape[1])
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        weights = np.clip(np.take_along_axis(sims, nearest, axis=1), 1e-6, None)
        return np.einsum("pk,pkm->pm", weights, self.y[nearest]) / weights.sum(axis=1, keepdims=True)


class Mean:
    """The mean prediction of several success models."""

    def __init__(self, members: list[SuccessModel]):
        self.members = members

    def fit(self, texts: list[str], targets: np.ndarray) -> Mean:
        for m in self.members:
            m.fit(texts, targets)
        return self

    def predict(self, texts: list[str]) -> np.ndarray:
        return np.mean([m.predict(texts) for m in self.members], axis=0)


class LoraHeads:
    """A LoRA adapter on the encoder with one output per model, trained on the pass rates with binary
    cross-entropy for a fixed number of epochs (cross-validation compares candidates, so nothing here
    looks at held-out prompts). accelerate places it on a GPU when there is one. Pickles as its
    trainable weights only; the encoder loads again on first use."""

    def __init__(self, base_model: str, max_length: int, lora: dict[str, Any], epochs: int, batch_size: int,
                 lr: float, seed: int):
        self.base_model, self.max_length, self.lora = base_model, max_length, lora
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.num_labels = 0
        self.weights: dict[str, np.ndarray] = {}
        self._model: Any = None
        self._tokenizer: Any = None

    def fit(self, texts: list[str], targets: np.ndarray) -> LoraHeads:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from complexitynet.classifier import build_model

        set_seed(self.seed)
        accelerator = Accelerator()
        self.num_labels = targets.shape[1]
        model, tokenizer = build_model(self.base_model, self.num_labels, self.lora)
        enc = tokenizer(texts, truncation=True, max_length=self.max_length)
        rows = [{"input_ids": i, "attention_mask": m, "labels": [float(v) for v in y]}
                for i, m, y in zip(enc["input_ids"], enc["attention_mask"], targets)]
        loader = torch.utils.data.DataLoader(rows, batch_size=self.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(self.seed),
                                             collate_fn=lambda batch: tokenizer.pad(batch, return_tensors="pt"))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=self.lr)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train()
        for _ in range(self.epochs):
            for batch in loader:
                labels = batch.pop("labels").float()
                accelerator.backward(loss_fn(model(**batch).logits.float(), labels))
                optimizer.step()
                optimizer.zero_grad()
        model = accelerator.unwrap_model(model).eval()
        self.weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
                        if "lora_" in k or "classifier" in k}
        self._model, self._tokenizer = model, tokenizer
        return self

    def predict(self, texts: list[str]) -> np.ndarray:
        import torch

        if self._model is None:
            from complexitynet.classifier import build_model

            model, self._tokenizer = build_model(self.base_model, self.num_labels, self.lora)
            model.load_state_dict({k: torch.from_numpy(v) for k, v in self.weights.items()}, strict=False)
            self._model = model.eval()
        device = next(self._model.parameters()).device
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                enc = self._tokenizer(texts[start:start + 32], truncation=True, max_length=self.max_length,
                                      padding=True, return_tensors="pt").to(device)
                out.append(torch.sigmoid(self._model(**enc).logits.float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_labels))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}


def makers(embedder: Embedder, c: float, knn_k: int, seed: int, lora: Callable[[], SuccessModel] | None = None
           ) -> dict[str, Callable[[], SuccessModel]]:
    """A fresh, unfitted model per candidate name (`lora`: how to make the LoRA candidate)."""
    made: dict[str, Callable[[], SuccessModel]] = {
        "tfidf": lambda: Heads(None, c, seed),
        "minilm": lambda: Heads(embedder, c, seed),
        "knn": lambda: KnnHeads(embedder, knn_k),
    }
    if lora is not None:
        made["lora"] = lora
    made["ensemble"] = lambda: Mean([made[name]() for name in ("tfidf", "minilm", "knn")])
    return made


def out_of_fold(make: Callable[[], SuccessModel], texts: list[str], targets: np.ndarray, folds: int,
                seed: int) -> np.ndarray:
    """Each prompt's prediction by a model fitted on the other folds."""
    from sklearn.model_selection import KFold

    oof = np.zeros_like(targets, dtype=np.float64)
    for fit_idx, held_idx in KFold(n_splits=folds, shuffle=True, random_state=seed).split(texts):
        model = make().fit([texts[i] for i in fit_idx], targets[fit_idx])
        oof[held_idx] = model.predict([texts[i] for i in held_idx])
    return oof


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


class Calibrated:
    """A fitted success model with per-model Platt scaling: sigmoid(a * logit(p) + b)."""

    def __init__(self, model: SuccessModel, platt: list[tuple[float, float]]):
        self.model, self.platt = model, platt

    @staticmethod
    def fit_platt(oof: np.ndarray, targets: np.ndarray, seed: int = 0) -> list[tuple[float, float]]:
        """(a, b) per model, from out-of-fold predictions and their pass rates."""
        from sklearn.linear_model import LogisticRegression

        out = []
        for j in range(targets.shape[1]):
            y = targets[:, j]
            if y.min() == y.max() or oof[:, j].min() == oof[:, j].max():
                out.append((1.0, 0.0))
                continue
            x = _logit(oof[:, j])[:, None]
            lr = LogisticRegression(C=1e6, max_iter=1000, random_state=seed).fit(
                np.vstack([x, x]), np.r_[np.ones(len(y), int), np.zeros(len(y), int)],
                sample_weight=np.r_[y, 1 - y])
            out.append((float(lr.coef_[0, 0]), float(lr.intercept_[0])))
        return out

    @staticmethod
    def apply(platt: list[tuple[float, float]], probs: np.ndarray) -> np.ndarray:
        a, b = np.array([p[0] for p in platt]), np.array([p[1] for p in platt])
        return 1.0 / (1.0 + np.exp(-(a * _logit(probs) + b)))

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.apply(self.platt, self.model.predict(texts))
