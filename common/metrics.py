"""Fidelity and utility of a synthetic table against real data (only ever run where the real
data may be read: in simulations and benchmarks, or by an organisation on its own rows)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from .marginals import Clique, marginal


def total_variation(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Half the L1 distance between two count vectors, each normalised to a distribution."""
    p = real / max(real.sum(), 1)
    q = synthetic / max(synthetic.sum(), 1)
    return 0.5 * float(np.abs(p - q).sum())


def mean_tvd(
    real: np.ndarray, synthetic: np.ndarray, domain: Mapping[str, int], cliques: Sequence[Clique]
) -> float:
    """Mean total-variation distance over the marginals of ``cliques`` (integer-coded tables)."""
    columns = list(domain)
    return float(
        np.mean([total_variation(marginal(real, columns, domain, cl), marginal(synthetic, columns, domain, cl)) for cl in cliques])
    )


def all_cliques(domain: Mapping[str, int], size: int) -> list[Clique]:
    return list(itertools.combinations(domain, size))


def random_cliques(domain: Mapping[str, int], size: int, count: int, seed: int) -> list[Clique]:
    every = all_cliques(domain, size)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(every), size=min(count, len(every)), replace=False)
    return [every[i] for i in sorted(picks)]


def tstr_auc(train: pd.DataFrame, test: pd.DataFrame, label: str, positive: str, model: str) -> float:
    """Train on ``train`` (synthetic or real), test on real ``test``: ROC AUC for ``positive``.

    ``model`` is ``hgb`` (HistGradientBoosting on categorical codes) or ``logreg`` (one-hot
    logistic regression). Every feature is treated as categorical (binned numerics included).
    """
    y_train = (train[label].astype(str) == positive).to_numpy()
    y_test = (test[label].astype(str) == positive).to_numpy()
    if y_train.all() or not y_train.any():
        return 0.5  # a synthetic table with one label value cannot rank anything
    features = [c for c in train.columns if c != label]
    clf = classifier(model, features).fit(train[features].astype(str), y_train)
    return float(roc_auc_score(y_test, clf.predict_proba(test[features].astype(str))[:, 1]))


def classifier(model: str, features: Sequence[str]) -> Pipeline:
    """An unfitted classifier on ``features``, all read as categories (text): ``hgb``
    (HistGradientBoosting on one-hot codes) or ``logreg`` (one-hot logistic regression)."""
    if model == "logreg":
        return make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=2000))
    if model == "hgb":
        ordinal = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(features))])
        return make_pipeline(ordinal, HistGradientBoostingClassifier(random_state=0))
    raise ValueError(f"unknown model {model!r}; use 'hgb' or 'logreg'")
