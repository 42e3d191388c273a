"""Baselines the classifier must beat; picklable, loaded by `evaluate` from models/baselines/."""

from __future__ import annotations

import math

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


class SparseLinear:
    """The predict_proba of a fitted Padded(TfidfVectorizer -> LogisticRegression) in plain Python, for
    serving: the vectorizer's own analyzer, vocabulary and idf weights, the model's own coefficients
    and softmax, so the probabilities are scikit-learn's to rounding. A prompt has a few dozen terms,
    so a loop over them beats both scikit-learn's per-call input validation and sparse machinery
    (~1.3 ms a call) and numpy's per-operation overhead: ~40 us a prompt here, which is what lets
    the router classify inline. `compile` returns None for any other model or option it does not
    reproduce."""

    def __init__(self, analyzer, vocabulary: dict[str, int], idf: list[float], sublinear_tf: bool,
                 weights: list[tuple[float, ...]], intercept: list[float], columns: list[int], num_labels: int):
        self.analyzer, self.vocabulary, self.idf, self.sublinear_tf = analyzer, vocabulary, idf, sublinear_tf
        self.weights, self.intercept = weights, intercept  # weights[term] = that term's coefficient per class
        self.columns, self.num_labels = columns, num_labels

    @classmethod
    def compile(cls, model) -> SparseLinear | None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        if not isinstance(model, Padded) or not isinstance(model.model, Pipeline) or len(model.model.steps) != 2:
            return None
        vec, lr = model.model[0], model.model[1]
        if not (type(vec) is TfidfVectorizer and type(lr) is LogisticRegression):
            return None
        if vec.analyzer != "word" or vec.norm != "l2" or not vec.use_idf or vec.binary or len(lr.classes_) < 3:
            return None  # binary models use a sigmoid, not the softmax below
        return cls(vec.build_analyzer(), dict(vec.vocabulary_), [float(x) for x in vec.idf_], bool(vec.sublinear_tf),
                   [tuple(float(x) for x in col) for col in np.asarray(lr.coef_, dtype=np.float64).T],
                   [float(x) for x in lr.intercept_], [int(c) for c in lr.classes_], model.num_labels)

    def scores(self, text: str) -> list[float]:
        """The logistic regression's decision values for one text."""
        counts: dict[int, int] = {}
        vocabulary = self.vocabulary
        for token in self.analyzer(text):
            j = vocabulary.get(token)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        idf = self.idf
        tfidf = [((math.log(n) + 1.0) if self.sublinear_tf else n) * idf[j] for j, n in counts.items()]
        norm = math.sqrt(sum(w * w for w in tfidf)) or 1.0
        out = list(self.intercept)
        for j, w in zip(counts, tfidf):
            w /= norm
            for k, coef in enumerate(self.weights[j]):
                out[k] += w * coef
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.num_labels))
        for row, text in enumerate(texts):
            scores = self.scores(text)
            top = max(scores)
            exp = [math.exp(x - top) for x in scores]
            total = sum(exp)
            out[row, self.columns] = [e / total for e in exp]
        return out
