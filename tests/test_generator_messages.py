"""What a selection round sends to each organisation is bounded whatever the number of columns
(``GeneratorSettings.max_view_cells``; the bound is stated in docs/generator.md).

A 50-column table has ~20,000 candidate marginals with ~4 million cells; a round must send each
organisation at most ``max_view_cells`` cells of the model's view (each organisation computes the
penalties itself; here a bound of 2**14 cells, below the default, to keep the test short).
The sizes are measured on the arrays the coordinator hands to the round, serialised as Flower
serialises them (``ndarrays_to_parameters``).
"""

import json

import numpy as np
import pandas as pd
import pytest
from flwr.common import ndarrays_to_parameters

from fedsynth.client.organisation import Organisation
from fedsynth.common.accounting import Ledger
from fedsynth.common.generator import GeneratorSettings, MarginalModel, Measurement
from fedsynth.common.marginals import candidate_cliques, marginal, total_cells
from fedsynth.common.schema import Schema
from fedsynth.server.central import CentralAggregator
from fedsynth.server.generator import round_candidates, select
from fedsynth.server.job import JobConfig, plan_job

SIZES = [2 + (7 * j) % 9 for j in range(50)]  # 2 to 10 values per column
ROWS = 1500
ORGS = 3


def wide_schema() -> Schema:
    return Schema.from_dict({
        "name": "wide",
        "label": None,
        "na_values": [],
        "columns": [
            {"name": f"c{j:02d}", "kind": "categorical", "categories": [str(v) for v in range(k)]}
            for j, k in enumerate(SIZES)
        ],
    })


class MeasuringAggregator(CentralAggregator):
    """Notes, per round and organisation, the floats and serialised bytes of its parameters."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent: list[dict] = []

    def noisy_sum(self, spec, request, *, phase, mechanism, parameters=None, node_parameters=None):
        for arrays in self._arrays(parameters, node_parameters):
            self.sent.append({
                "task": request["task"],
                "floats": sum(int(np.asarray(a).size) for a in arrays),
                "bytes": sum(len(t) for t in ndarrays_to_parameters(arrays).tensors),
                "arrays": len(arrays),
                "candidates": len(json.loads(request["cliques"])),
            })
        return super().noisy_sum(spec, request, phase=phase, mechanism=mechanism,
                                 parameters=parameters, node_parameters=node_parameters)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Three organisations of a 50-column table, a plan for it, and a model fitted to its 1-ways."""
    schema = wide_schema()
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.integers(0, k, ROWS) for k in SIZES]).astype(np.int8)
    frames = [
        pd.DataFrame({c.name: pd.Categorical.from_codes(part[:, j], categories=list(c.categories))
                      for j, c in enumerate(schema.columns)})
        for part in np.array_split(codes, ORGS)
    ]
    out = tmp_path_factory.mktemp("wide")
    config = JobConfig(schema=schema, parties=ORGS, epsilon=1.0, delta=1e-6, out=out, min_survivors=ORGS - 1,
                       labels="generator", generator=GeneratorSettings(score_sample=5_000, max_view_cells=2**14))
    plan = plan_job(config).generator
    domain = schema.domain()
    model = MarginalModel(domain)
    columns = list(domain)
    for c in columns:  # exact 1-way counts stand in for the first round: the model is the same kind
        model.add(Measurement((c,), marginal(codes.astype(np.int64), columns, domain, (c,)).astype(float), 1.0))
    model.fit(5)
    orgs = [Organisation(f"org-{i}", lambda _s, f=f: f, accepts=schema) for i, f in enumerate(frames)]
    return schema, plan, model, orgs, out


def test_a_round_considers_at_most_max_view_cells_and_fills_it(wide):
    schema, plan, model, _orgs, _out = wide
    settings, domain = plan.settings, schema.domain()
    every = candidate_cliques(domain, settings.max_size, settings.max_cells)
    assert total_cells(domain, every) > 50 * settings.max_view_cells  # the bound binds here

    considered, remaining = round_candidates(model, every, settings, np.random.default_rng(3))
    used = total_cells(domain, considered)
    assert used <= settings.max_view_cells
    # Walking every candidate, only ones larger than the room left are skipped: the room left at
    # the end is smaller than some candidate, hence than max_cells.
    assert used > settings.max_view_cells - settings.max_cells
    assert set(considered) <= set(every) and len(set(considered)) == len(considered)
    assert remaining == every  # nothing here makes the model too large
    again, _ = round_candidates(model, every, settings, np.random.default_rng(3))
    assert again == considered  # a function of the coordinator's (public) random draw only


def test_every_candidate_is_considered_when_they_fit(wide):
    schema, plan, model, _orgs, _out = wide
    few = candidate_cliques({c: schema.domain()[c] for c in ("c00", "c01", "c02", "c03")}, 3, 2000)
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    considered, remaining = round_candidates(model, few, plan.settings, rng)
    assert considered == few and remaining == few
    assert rng.bit_generator.state == state  # the same draws follow as without the bound


def test_selection_messages_on_50_columns_stay_within_the_stated_bound(wide):
    schema, plan, model, orgs, out = wide
    settings, domain = plan.settings, schema.domain()
    ledger = Ledger(out / "ledger.jsonl", cap_epsilon=1.0, delta=1e-6)
    agg = MeasuringAggregator(orgs, ledger, seed=0)
    rng = np.random.default_rng(1)
    every = candidate_cliques(domain, settings.max_size, settings.max_cells)
    considered, _ = round_candidates(model, every, settings, rng)
    chosen = select(agg, schema, plan, model, considered, np.full(ORGS, ROWS / ORGS), rng)
    assert 1 <= len(chosen) <= settings.per_round

    votes = [m for m in agg.sent if m["task"] == "select"]
    scores = [m for m in agg.sent if m["task"] == "scores"]
    assert len(votes) == len(scores) == ORGS
    for m in votes:  # docs/generator.md
        assert m["floats"] <= settings.max_view_cells and m["arrays"] == 1
        assert m["bytes"] <= 8 * m["floats"] + 256 * m["arrays"]  # float64 plus each array's header
    for m in scores:
        assert m["floats"] <= min(settings.max_view_cells, settings.shortlisted() * settings.max_cells)
    every_floats = total_cells(domain, every)
    assert max(m["floats"] for m in votes) * 50 < every_floats  # what every candidate would have cost


def test_marginals_counted_in_chunks_equal_one_pass(monkeypatch):
    """An organisation counts ``CHUNK_ROWS`` rows at a time (bounded memory); chunk edges lose nothing."""
    from fedsynth.common import marginals as m

    rng = np.random.default_rng(4)
    domain = {"a": 3, "b": 5, "c": 2}
    codes = np.column_stack([rng.integers(0, k, 1000) for k in domain.values()])
    cliques = [("a",), ("a", "b"), ("b", "c"), ("a", "b", "c")]
    whole = m.marginals(codes, list(domain), domain, cliques)
    monkeypatch.setattr(m, "CHUNK_ROWS", 7)  # 143 chunks, the last one partial
    assert np.array_equal(m.marginals(codes, list(domain), domain, cliques), whole)
    expected = pd.crosstab(codes[:, 0], codes[:, 1]).reindex(index=range(3), columns=range(5), fill_value=0)
    assert np.array_equal(m.marginal(codes, list(domain), domain, ("a", "b")), expected.to_numpy().ravel())
    assert m.marginal(codes[:0], list(domain), domain, ("a", "b")).tolist() == [0] * 15


def test_a_shortlist_that_would_outgrow_the_model_size_limit_measures_nothing(wide):
    """With the bound binding, the size limit is checked on the shortlist: nothing too large is picked."""
    from dataclasses import replace

    schema, plan, model, orgs, out = wide
    tiny = replace(plan, settings=replace(plan.settings, max_model_mb=model.size_mb([]) / 2))
    agg = MeasuringAggregator(orgs, Ledger(out / "tiny-ledger.jsonl", cap_epsilon=1.0, delta=1e-6), seed=0)
    rng = np.random.default_rng(2)
    every = candidate_cliques(schema.domain(), tiny.settings.max_size, tiny.settings.max_cells)
    considered, _ = round_candidates(model, every, tiny.settings, rng)
    assert select(agg, schema, tiny, model, considered, np.full(ORGS, ROWS / ORGS), rng) == []
    assert {m["task"] for m in agg.sent} == {"select"}  # the votes ran; no scores round was paid for
