"""The SecAgg+ graph: safe in every order, the parameter choice, the guard's check, the release.

The exhaustive checks place dead and colluding organisations anywhere, as a coordinator that
lies and sees the graph could (``common.secagg_graph.privacy_broken``): a graph the module calls
safe survives every placement, and one step weaker does not.
"""

import itertools
import random

import numpy as np
import pytest

from fedsynth.cli import bundled, main
from fedsynth.client.app import guarded_share
from fedsynth.client.guard import Guard, GuardPolicy, GuardRefused, verify_setup
from fedsynth.common.accounting import Ledger, skellam_event
from fedsynth.common.marginals import cliques_to_json
from fedsynth.common.schema import load_schema
from fedsynth.common.secagg_graph import (
    NUM_SHARES,
    SPARSE_FROM,
    THRESHOLD,
    GraphError,
    SecAggGraph,
    choose_graph,
    default_min_survivors,
    flower_neighbourhoods,
    privacy_broken,
    sparse_graph,
)
from fedsynth.common.secure_sum import MAX_WEIGHT, NoisySumSpec, secure_ranges
from fedsynth.server.release import privacy_statement


def broken_by_some_placement(graph: SecAggGraph, dead: int, colluders: int) -> bool:
    """Whether any placement of ``dead`` and ``colluders`` nodes breaks the graph (exhaustive)."""
    nodes = range(graph.organisations)
    neighbourhoods = flower_neighbourhoods(list(nodes), graph.num_shares)
    for bad in itertools.combinations(nodes, colluders):
        rest = [i for i in nodes if i not in bad]
        for gone in itertools.combinations(rest, dead):
            if privacy_broken(neighbourhoods, graph.threshold, set(gone), set(bad)):
                return True
    return False


@pytest.mark.parametrize("n, t", [(11, 10), (12, 10), (13, 11), (14, 12), (15, 13)])
def test_the_safe_sparse_graph_survives_every_placement_and_a_smaller_one_does_not(n, t):
    d = n - t
    graph = sparse_graph(n, 2 * d + 3, d, d)
    assert graph is not None and graph.safe() and graph.live()
    assert not broken_by_some_placement(graph, d, d)
    weaker = SecAggGraph(n, 2 * d + 1, d + 1, d, d)  # h = d: two gaps of d fit in 2d removed nodes
    assert not weaker.safe() and broken_by_some_placement(weaker, d, d)
    low = SecAggGraph(n, 2 * d + 3, d + 2, d, d + 2)  # threshold not above the colluders
    assert not low.safe() and broken_by_some_placement(low, 0, d + 2)


def test_the_complete_graph_survives_every_placement_of_n_minus_t():
    for n, t in [(4, 3), (5, 4), (7, 5), (9, 7)]:
        graph = choose_graph(n, t)
        assert graph.complete and graph.safe() and not broken_by_some_placement(graph, n - t, n - t)


def test_a_random_placement_never_breaks_the_chosen_graph_at_scale():
    rng = random.Random(5)
    for n, t in [(100, 95), (200, 190)]:
        graph = choose_graph(n, t)
        for _ in range(200):
            order = rng.sample(range(n), n)
            removed = rng.sample(range(n), 2 * (n - t))
            gone, bad = set(removed[: n - t]), set(removed[n - t:])
            assert not privacy_broken(flower_neighbourhoods(order, graph.num_shares), graph.threshold, gone, bad)


@pytest.mark.parametrize("n", [3, 4, 5, 10, 19])
def test_the_default_t_tolerates_a_dropout_but_keeps_3t_above_2n(n):
    t = default_min_survivors(n)
    assert 3 * t > 2 * n and t <= n and (t == n - 1 or n <= 3)
    graph = choose_graph(n, t)
    assert graph.complete and graph.threshold == min(t, n - 1)


@pytest.mark.parametrize("n, t, k, s", [(20, 19, 5, 3), (100, 99, 5, 3), (100, 95, 13, 7), (200, 190, 23, 12),
                                        (1000, 950, 103, 52)])
def test_the_chosen_sparse_graph_is_the_smallest_safe_one(n, t, k, s):
    graph = choose_graph(n, t)
    assert (graph.num_shares, graph.threshold) == (k, s) and graph.safe() and graph.live()
    assert all(sparse_graph(n, smaller, n - t, n - t) is None for smaller in range(3, k, 2))


def test_below_the_sparse_threshold_the_graph_is_complete():
    graph = choose_graph(SPARSE_FROM - 1, SPARSE_FROM - 2)
    assert graph.complete and graph.safe()


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
        (chosen.num_shares - 2, chosen.threshold, "can be broken by 5 dead and 5 colluding"),  # two gaps fit
        (5, 3, "can be broken by"),
        (n, t - 1, "a complete graph shares at threshold 95"),
    ]
    for k, s, why in weaker:
        request, spec = sparse_request(n, t, k, s)
        with pytest.raises(GuardRefused, match=f"org-7: refused \\(rule secagg-graph; .*{why}"):
            guarded_share(org, request, [], np.random.default_rng(0))
    assert len(org.guard.ledger) == 1  # refusals spent nothing


def test_the_guard_refuses_a_threshold_n_minus_t_colluders_could_get_round(tmp_path):
    for n, t in [(3, 2), (10, 6), (100, 66)]:
        request, spec = sparse_request(n, t, n, min(t, n - 1))
        with pytest.raises(GuardRefused, match=f"rule shamir-threshold; t={t} of n={n}: need 2n/3 < t <= n"):
            guarded_share(Plain(guard(tmp_path / f"{n}")), request, [], np.random.default_rng(0))


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


def test_the_release_states_the_graph_and_adds_nothing_to_delta_for_it(tmp_path):
    graph = choose_graph(200, 190)
    names = [f"org-{i}" for i in range(200)]
    ledger = Ledger(tmp_path / "ledger.jsonl", cap_epsilon=10.0, delta=1e-6)
    for round_ in (1, 2):
        ledger.append("generator", "marginals", skellam_event(400.0, 1.0, 1.0), metadata={
            "round": round_, "survivors": names[:195], "mu": 400.0, "dim": 10,
            "graph": {"num_shares": graph.num_shares, "threshold": graph.threshold, "safe_for_every_order": True}})
    plan = {"min_survivors": 190, "epsilon_planned": 1.0, "secagg": graph.summary()}
    statement = privacy_statement(ledger, 0, plan, names)
    assert "delta_graph_failure" not in statement
    assert statement["delta"] == pytest.approx(1e-6 + statement["delta_noise_tail"])
    stated = statement["trust"]["secagg_graph"]
    assert stated["neighbourhood_size_k"] == graph.num_shares
    assert stated["shamir_threshold_per_neighbourhood"] == graph.threshold
    assert stated["safe_for_every_order"] is True and stated["kind"].startswith("sparse")
    assert statement["trust"]["tolerated_colluding_organisations"] == 10  # n - t, whatever survived


def test_simulate_refuses_up_front_a_neighbourhood_that_cannot_meet_the_dropouts(tmp_path, capsys):
    out = tmp_path / "release"
    code = main(["simulate", "--parties", "100", "--min-survivors", "90", "--secagg-neighbours", "9",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and "Traceback" not in err
    assert ("fedsynth simulate: a SecAgg+ neighbourhood of 9 among 100 organisations cannot tolerate 10 dropouts"
            in err and f"use at least {choose_graph(100, 90).num_shares} neighbours, or t = 97" in err)
