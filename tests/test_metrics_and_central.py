"""Fidelity metrics and the in-process (central) aggregator."""

import numpy as np
import pandas as pd
import pytest
from noise_checks import matches_skellam

from fedsynth.client.organisation import Organisation
from fedsynth.common.accounting import Ledger
from fedsynth.common.metrics import mean_tvd, random_cliques, total_variation, tstr_auc
from fedsynth.common.noise import skellam_mu_for_sigma
from fedsynth.common.schema import Schema
from fedsynth.common.secure_sum import NoisySumSpec
from fedsynth.server.central import CentralAggregator

SCHEMA = Schema.from_dict(
    {"name": "t", "label": "y", "na_values": [], "columns": [
        {"name": "x", "kind": "categorical", "categories": ["a", "b", "c"]},
        {"name": "y", "kind": "categorical", "categories": ["0", "1"]},
    ]}
)


def test_total_variation_of_known_distributions():
    assert total_variation(np.array([1, 1]), np.array([2, 2])) == 0.0
    assert total_variation(np.array([1, 0]), np.array([0, 5])) == 1.0
    assert total_variation(np.array([3, 1]), np.array([1, 1])) == pytest.approx(0.25)


def test_mean_tvd_is_zero_on_identical_tables_and_positive_otherwise():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, 400)
    codes = np.column_stack([x, (x == 0).astype(int)])  # y depends on x
    domain = SCHEMA.domain()
    assert mean_tvd(codes, codes, domain, [("x", "y")]) == 0.0
    other = codes.copy()
    other[:, 1] = 1 - other[:, 1]
    assert mean_tvd(codes, other, domain, [("x", "y")]) > 0.3


def test_random_cliques_are_reproducible_and_distinct():
    domain = {c: 2 for c in "abcdef"}
    first = random_cliques(domain, 3, 10, seed=0)
    assert first == random_cliques(domain, 3, 10, seed=0) and len(set(first)) == 10


def test_tstr_auc_separates_a_learnable_label_from_noise():
    rng = np.random.default_rng(1)
    x = rng.choice(["a", "b", "c"], 2000)
    y = np.where((x == "a") ^ (rng.random(2000) < 0.1), "1", "0")
    real = pd.DataFrame({"x": x, "y": y})
    shuffled = real.assign(y=rng.permutation(real["y"].to_numpy()))
    for model in ("hgb", "logreg"):
        assert tstr_auc(real, real, "y", "1", model) > 0.85
        assert tstr_auc(shuffled, real, "y", "1", model) < 0.6


def test_central_aggregator_sums_organisations_with_noise_and_records_it(tmp_path):
    rng = np.random.default_rng(2)
    tables = [pd.DataFrame({"x": rng.choice(["a", "b", "c"], 300), "y": rng.choice(["0", "1"], 300)}) for _ in range(3)]
    orgs = [Organisation(f"org-{i}", lambda _s, t=t: t, accepts=SCHEMA) for i, t in enumerate(tables)]
    ledger = Ledger(tmp_path / "l.jsonl", cap_epsilon=1e6, delta=1e-6)
    agg = CentralAggregator(orgs, ledger, seed=0)
    spec = NoisySumSpec(dim=6, mu=skellam_mu_for_sigma(4.0), min_survivors=1, max_abs=10_000)
    request = {"schema": SCHEMA.dumps("json"), "task": "marginals", "cliques": '[["x", "y"]]'}
    counts = sum(np.bincount(SCHEMA.encode(t)[:, 0] * 2 + SCHEMA.encode(t)[:, 1], minlength=6) for t in tables)
    noise = np.concatenate([agg.noisy_sum(spec, request, phase="p", mechanism="m").total - counts for _ in range(150)])
    assert matches_skellam(noise, 3 * spec.mu)  # each of 3 organisations adds Sk(mu / t), t = 1
    assert len(ledger.entries) == 150 and ledger.entries[0].metadata["survivors"] == ["org-0", "org-1", "org-2"]
