"""Baselines the classifier must beat; picklable, loaded by `evaluate` from models/baselines/."""

from __future__ import annotations

import numpy as np


class Constant:
    """The same probabilities for every prompt (majority class, or the training prior)."""

    def __init__(self, probs: np.ndarray):
        self.probs = np.asarray(probs, dtype=np.float64)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.tile(self.probs, (len(texts), 1))


class EmbeddingKNN:
    """kNN over frozen encoder embeddings (no fine-tuning)."""

    def __init__(self, base_model: str, max_length: int, knn):
        self.base_model, self.max_length, self.knn = base_model, max_length, knn

    @property
    def classes_(self):
        return self.knn.classes_

    def fit(self, texts: list[str], labels: np.ndarray) -> EmbeddingKNN:
        from complexitynet.classifier import embed

        self.knn.fit(embed(texts, self.base_model, self.max_length), labels)
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        from complexitynet.classifier import embed

        return self.knn.predict_proba(embed(texts, self.base_model, self.max_length))


class Padded:
    """An sklearn-style model whose predict_proba always has one column per ladder level."""

    def __init__(self, model, num_labels: int):
        self.model, self.num_labels = model, num_labels

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        probs = self.model.predict_proba(texts)
        out = np.zeros((len(texts), self.num_labels))
        out[:, self.model.classes_] = probs
        return out
