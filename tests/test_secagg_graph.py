"""The sparse SecAgg+ graph: parameter choice, failure bounds checked by Monte-Carlo, the guard's check.

The Monte-Carlo runs draw Flower's graph the way Flower 1.41 builds it (a shuffled cyclic order,
``common.secagg_graph.flower_neighbourhoods``; ``tests/test_secagg_sparse_flower.py`` checks that
real SecAgg+ draws exactly such graphs) with random dropouts and colluders, and count how often
the privacy argument breaks (a neighbourhood with ``threshold`` colluders, or honest survivors
split into components) or a neighbourhood keeps fewer than ``threshold`` survivors.
"""

import math
import random

import numpy as np
import pytest
from scipy.stats import hypergeom

from fedsynth.cli import bundled, main
from fedsynth.client.app import guarded_share
from fedsynth.client.guard import Guard, GuardPolicy, GuardRefused, verify_setup
from fedsynth.common.accounting import Ledger, skellam_event
from fedsynth.common.marginals import cliques_to_json
from fedsynth.common.schema import load_schema
from fedsynth.common.secagg_graph import (
    ABORT_PROBABILITY,
    NUM_SHARES,
    PRIVACY_FAILURE,
    SPARSE_FROM,
    THRESHOLD,
    GraphError,
    SecAggGraph,
    choose_graph,
    flower_neighbourhoods,
    privacy_broken,
    sparse_graph,
)
from fedsynth.common.secure_sum import MAX_WEIGHT, NoisySumSpec, secure_ranges
from fedsynth.server.release import privacy_statement

TRIALS = 4000


def draw(n: int, k: int, dropouts: int, colluders: int, rng: random.Random):
    """One graph as Flower draws it, and disjoint random sets of dropouts and colluders."""
    order = list(range(n))
    rng.shuffle(order)
    removed = rng.sample(range(n), dropouts + colluders)
    return flower_neighbourhoods(order, k), set(removed[:dropouts]), set(removed[dropouts:])


def upper(successes: int, trials: int) -> float:
    """A generous (about 4 sigma) upper confidence limit for a frequency."""
    p = successes / trials
    return p + 4 * math.sqrt(max(p, 1 / trials) * (1 - p) / trials) + 1 / trials


def test_a_neighbourhood_is_a_uniform_subset_so_its_colluders_are_hypergeometric():
    n, k, colluders, rng = 30, 7, 6, random.Random(1)
    counts = np.zeros(k, dtype=int)
    for _ in range(TRIALS):
        graph, _, bad = draw(n, k, 0, colluders, rng)
        honest = min(set(graph) - bad)
        counts[len((graph[honest] - {honest}) & bad)] += 1
    expected = hypergeom(n - 1, colluders, k - 1).pmf(np.arange(k)) * TRIALS
    # chi-square over the cells with enough mass: the exact law, not just a bound
    cells = expected > 5
    chi2 = float(np.sum((counts[cells] - expected[cells]) ** 2 / expected[cells]))
    assert chi2 < 20, (counts, expected.round(1))


@pytest.mark.parametrize("threshold, tolerated", [(4, 4), (5, 5)])
def test_monte_carlo_privacy_failures_stay_below_the_computed_bound(threshold, tolerated):
    # weak on purpose (30 organisations, k=7) so that failures are frequent enough to count
    graph, rng = SecAggGraph(30, 7, threshold, tolerated, tolerated), random.Random(threshold)
    bound, broken = graph.privacy_failure(), 0
    for _ in range(TRIALS):
        neighbourhoods, dropped, bad = draw(30, 7, tolerated, tolerated, rng)
        broken += privacy_broken(neighbourhoods, threshold, dropped, bad)
    assert broken > 0  # the event is real: the bound is not vacuous here
    assert broken / TRIALS <= bound < 3 * upper(broken, TRIALS)  # a union bound, but a tight one


def test_monte_carlo_aborts_stay_below_the_computed_bound():
    graph, rng = SecAggGraph(30, 7, 5, 4, 0), random.Random(3)
    bound, aborted = graph.abort_probability(), 0
    for _ in range(TRIALS):
        neighbourhoods, dropped, _ = draw(30, 7, 4, 0, rng)
        aborted += any(len(nbrs - dropped) < graph.threshold for nbrs in neighbourhoods.values())
    assert aborted > 0 and aborted / TRIALS <= bound < 20 * upper(aborted, TRIALS)


@pytest.mark.parametrize("n, t", [(3, 2), (4, 3), (5, 3), (7, 4), (SPARSE_FROM - 1, SPARSE_FROM - 2)])
def test_the_complete_graph_below_the_sparse_threshold_keeps_t_and_fails_never(n, t):
    graph = choose_graph(n, t)
    assert graph.complete and graph.threshold == t
    assert graph.privacy_failure() == 0.0 and graph.abort_probability() == 0.0


@pytest.mark.parametrize("n, t", [(20, 19), (50, 48), (100, 95), (200, 190), (1000, 950), (100_000, 95_000)])
def test_the_chosen_sparse_graph_is_the_smallest_that_meets_both_bounds(n, t):
    graph = choose_graph(n, t)
    k, s = graph.num_shares, graph.threshold
    assert not graph.complete and k % 2 == 1 and k / 2 < s < k
    assert graph.privacy_failure() <= PRIVACY_FAILURE and graph.abort_probability() <= ABORT_PROBABILITY
    assert all(sparse_graph(n, smaller, n - t, n - t) is None for smaller in range(3, k, 2))
    if s - 1 > k / 2:  # a lower threshold would break the privacy bound
        assert SecAggGraph(n, k, s - 1, n - t, n - t).privacy_failure() > PRIVACY_FAILURE


def test_the_degree_grows_like_log_n_at_a_fixed_dropout_fraction():
    degrees = {n: choose_graph(n, n - n // 20).num_shares for n in (200, 2_000, 20_000)}
    assert degrees[200] < degrees[2_000] < degrees[20_000] < 3 * degrees[200], degrees


def test_a_requested_neighbourhood_too_small_for_the_dropouts_is_refused_saying_what_would_work():
    with pytest.raises(GraphError) as refused:
        choose_graph(100, 90, neighbours=9)
    message = str(refused.value)
    assert "neighbourhood of 9 among 100 organisations cannot tolerate 10 dropouts" in message
    k = int(message.split("use at least ")[1].split()[0])
    t = int(message.split("or t = ")[1].split()[0])
    assert choose_graph(100, 90, neighbours=k).num_shares == k  # what it says works does
    assert choose_graph(100, t, neighbours=9).num_shares == 9
    with pytest.raises(GraphError, match="use an odd number from 3 to 99"):
        choose_graph(100, 90, neighbours=10)


# ---------------------------------------------------------------- the organisation's guard


class Plain:
    """An organisation whose vector is zeros; the guard is what is under test."""

    name = "org-7"

    def __init__(self, guard):
        self.guard = guard

    def contribute(self, request, arrays, rng):
        return np.zeros(int(request["sum.dim"]), dtype=np.int64)


SCHEMA = load_schema(bundled("adult.schema.yaml"))
CLIQUES = [("sex",), ("race",)]
DIM = SCHEMA.domain()["sex"] + SCHEMA.domain()["race"]


def sparse_request(n: int, t: int, num_shares: int, threshold: int) -> tuple[dict, NoisySumSpec]:
    spec = NoisySumSpec(dim=DIM, mu=800.0, min_survivors=t, max_abs=10)
    request = {"schema": SCHEMA.dumps("json"), "task": "marginals", "cliques": cliques_to_json(CLIQUES),
               "round": 1, "num_clients": n, NUM_SHARES: num_shares, THRESHOLD: threshold, **spec.to_config()}
    return request, spec


def guard(tmp_path, **policy) -> Guard:
    return Guard("org-7", GuardPolicy(tmp_path / "ledger.jsonl", epsilon_cap=50.0, delta=1e-6,
                                      min_noise_multiplier=0.1, min_survivors=2, **policy))


def test_the_guard_admits_the_graph_it_would_choose_and_refuses_weaker_ones(tmp_path):
    n, t = 100, 95
    chosen = choose_graph(n, t)
    request, spec = sparse_request(n, t, chosen.num_shares, chosen.threshold)
    org = Plain(guard(tmp_path))
    assert guarded_share(org, request, [], np.random.default_rng(0)).shape == (DIM,)
    weaker = [
        (chosen.num_shares, chosen.num_shares // 2, "need k/2 < threshold < k"),  # 2s <= k: both shares
        (chosen.num_shares, chosen.num_shares, "need k/2 < threshold < k"),
        (chosen.num_shares - 2, chosen.threshold, "fail with probability"),  # fewer neighbours than it would use
        (5, 3, "fail with probability"),
        (n, t - 1, "a complete graph shares at threshold t=95"),
    ]
    for k, s, why in weaker:
        request, spec = sparse_request(n, t, k, s)
        with pytest.raises(GuardRefused, match=f"org-7: refused \\(rule secagg-graph; .*{why}"):
            guarded_share(org, request, [], np.random.default_rng(0))
    assert len(org.guard.ledger) == 1  # refusals spent nothing


def test_a_stricter_guard_policy_refuses_what_the_coordinator_chose(tmp_path):
    chosen = choose_graph(200, 190)
    assert chosen.privacy_failure() > 0
    request, spec = sparse_request(200, 190, chosen.num_shares, chosen.threshold)
    with pytest.raises(GuardRefused, match="rule secagg-graph"):
        guarded_share(Plain(guard(tmp_path, max_graph_failure=chosen.privacy_failure() / 2)), request, [],
                      np.random.default_rng(0))


def test_the_setup_must_be_the_requested_graph(tmp_path):
    graph = choose_graph(100, 95)
    request, spec = sparse_request(100, 95, graph.num_shares, graph.threshold)
    ranges = secure_ranges(spec, 100)
    setup = {"threshold": graph.threshold, "share_num": graph.num_shares, "sample_num": 100,
             "clipping_range": float(ranges.clipping_range), "target_range": ranges.quantization_range,
             "mod_range": ranges.modulus_range, "max_weight": float(MAX_WEIGHT)}
    verify_setup("org-7", setup, spec, ranges, 100, graph)
    for key, value in [("share_num", 100), ("threshold", 95), ("share_num", graph.num_shares + 2)]:
        with pytest.raises(GuardRefused, match=f"rule secagg-setup; {key}="):
            verify_setup("org-7", {**setup, key: value}, spec, ranges, 100, graph)


# ---------------------------------------------------------------- the release and the CLI


def test_the_release_adds_each_rounds_graph_failure_to_delta_and_states_the_graph(tmp_path):
    graph = choose_graph(200, 190)
    names = [f"org-{i}" for i in range(200)]
    ledger = Ledger(tmp_path / "ledger.jsonl", cap_epsilon=10.0, delta=1e-6)
    for round_ in (1, 2):
        ledger.append("generator", "marginals", skellam_event(400.0, 1.0, 1.0), metadata={
            "round": round_, "survivors": names[:195], "mu": 400.0, "dim": 10,
            "graph": {"num_shares": graph.num_shares, "threshold": graph.threshold,
                      "privacy_failure": graph.privacy_failure()}})
    plan = {"min_survivors": 190, "epsilon_planned": 1.0, "secagg": graph.summary()}
    statement = privacy_statement(ledger, 0, plan, names)
    by_hand = (1 + math.exp(statement["epsilon"])) * 2 * graph.privacy_failure()
    assert statement["delta_graph_failure"] == pytest.approx(by_hand) and by_hand > 0
    assert statement["delta"] == pytest.approx(1e-6 + statement["delta_noise_tail"] + by_hand)
    stated = statement["trust"]["secagg_graph"]
    assert stated["neighbourhood_size_k"] == graph.num_shares
    assert stated["shamir_threshold_per_neighbourhood"] == graph.threshold
    assert stated["privacy_failure_per_round"] == graph.privacy_failure()
    assert stated["kind"].startswith("sparse")
    assert statement["trust"]["tolerated_colluding_organisations"] == 5  # min survivors 195 - t 190


def test_simulate_refuses_up_front_a_neighbourhood_that_cannot_meet_the_dropouts(tmp_path, capsys):
    out = tmp_path / "release"
    code = main(["simulate", "--parties", "100", "--min-survivors", "90", "--secagg-neighbours", "9",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and "Traceback" not in err
    assert ("fedsynth simulate: a SecAgg+ neighbourhood of 9 among 100 organisations cannot tolerate 10 dropouts"
            in err and f"use at least {choose_graph(100, 90).num_shares} neighbours, or t = 97" in err)
