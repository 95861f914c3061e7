"""Sparse SecAgg+ on real Flower with 20 organisations: exact sums, dropouts, the ledger's record.

One simulation (20 organisations, t = 17: the graph ``common.secagg_graph`` chooses has
neighbourhoods of 9 at Shamir threshold 5) runs every round; the tests check what each returned.
The ledger's record of a round with dropouts is recomputed independently: the survivors' noise
``s * mu / t`` from the survivors the test made, its Skellam RDP curve written out here from
Agarwal, Kairouz & Liu (2021, Theorem 3.5) and converted by dp-accounting, and its exact PLD built
by dp-accounting from scipy's Skellam pmf.
"""

import math

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import stats
from test_secure_sum_flower import SEED, VectorParty, expected_noisy_total

from fedsynth.client.app import build_client_app
from fedsynth.common.accounting import CombinedAccountant, Ledger
from fedsynth.common.noise import skellam_mu_for_sigma
from fedsynth.common.secagg_graph import choose_graph, flower_neighbourhoods
from fedsynth.common.secure_sum import NoisySumSpec
from fedsynth.common.identity import simulated_federation
from fedsynth.server.secure_sum import Federation, RoundAborted
from fedsynth.simulations.engine import run_in_simulation

N, T = 20, 17
SPEC = NoisySumSpec(dim=1000, mu=skellam_mu_for_sigma(8.0), min_survivors=T, max_abs=30_000)
SENT = SPEC.against_collusion(N)  # what each organisation adds: 2t - n = 14 honest shares carry mu
DROPPED = (1, 7, 13)  # fail after key sharing, like crashed daemons
DELTA = 1e-6


def sparse_job(ledger_path):
    def job(grid, context):
        out = {}
        ledger = Ledger(ledger_path, cap_epsilon=1e6, delta=DELTA)
        with Federation(grid, context, num_clients=N, ledger=ledger) as fed:
            out["all"] = fed.noisy_sum(SPEC, {"kind": "int"}, phase="test", mechanism="all")
            out["graph"] = {fed.name(nid): {fed.name(j) for j in nbrs} for nid, nbrs in fed.last_graph.items()}
            fail = ",".join(map(str, DROPPED))
            out["drop"] = fed.noisy_sum(SPEC, {"kind": "int", "fail": fail}, phase="test", mechanism="drop 3")
            before = len(ledger.entries)
            try:  # 4 dropouts: every neighbourhood keeps its 5 shares, but only 16 < t vectors arrived
                fed.noisy_sum(SPEC, {"kind": "int", "fail": fail + ",19"}, phase="test", mechanism="drop 4")
            except RoundAborted as exc:
                out["abort"] = str(exc)
            out["entries"] = (before, len(ledger.entries))
        return out

    return job


pytestmark = pytest.mark.slow  # one 20-organisation simulation: about 60-75 s on 2 cores


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    path = tmp_path_factory.mktemp("sparse") / "ledger.jsonl"
    out = run_in_simulation(sparse_job(path), build_client_app(VectorParty, fixed_seed=SEED, identities=simulated_federation(N)), N,
                            cpus_per_party=0.5)
    return out, Ledger(path, cap_epsilon=1e6, delta=DELTA)


def cyclic_order(graph: dict[str, set[str]], k: int) -> list[str]:
    """The cyclic order behind a circulant graph: ring neighbours share k - 1 of their k members."""
    order = [min(graph)]
    while len(order) < len(graph):
        here = order[-1]
        nxt = [v for v in graph[here] - {here} if len(graph[here] & graph[v]) == k - 1 and v not in order[-2:]]
        order.append(nxt[0])
    return order


def test_flower_draws_the_chosen_sparse_circulant_graph(sparse):
    out, _ = sparse
    chosen = choose_graph(N, T)
    assert (chosen.num_shares, chosen.threshold) == (9, 5)
    graph = out["graph"]
    assert len(graph) == N and all(len(members) == 9 and name in members for name, members in graph.items())
    assert flower_neighbourhoods(cyclic_order(graph, 9), 9) == graph  # exactly Flower's construction


def test_a_sparse_round_sums_exactly(sparse):
    out, _ = sparse
    res = out["all"]
    assert len(res.survivors) == N and not res.dropped
    np.testing.assert_array_equal(res.total, expected_noisy_total(SENT, range(N), res.round, "int", N))


def test_a_sparse_round_with_dropouts_sums_the_survivors_exactly(sparse):
    out, _ = sparse
    res = out["drop"]
    survivors = [p for p in range(N) if p not in DROPPED]
    assert res.dropped == tuple(sorted(f"party-{p}" for p in DROPPED))
    np.testing.assert_array_equal(res.total, expected_noisy_total(SENT, survivors, res.round, "int", N))


def test_fewer_than_t_vectors_are_never_unmasked_even_when_every_neighbourhood_could_be(sparse):
    out, ledger = sparse
    assert "aborted at the masked vectors stage: 16 of 20 organisations remained, at least t=17" in out["abort"]
    before, after = out["entries"]
    assert before == after == len(ledger.entries) == 2


def skellam_epsilons_by_hand(mu: float, delta: float) -> tuple[float, float]:
    """(RDP, PLD) epsilon of one Skellam release with L1 = L2 = 1, independently of fedsynth."""
    orders = np.arange(2, 257, dtype=float)
    rdp = orders / (4 * mu) + np.minimum((2 * orders - 1 + 6) / (16 * mu**2), 3 / (4 * mu))
    eps_rdp, _ = rdp_privacy_accountant.compute_epsilon(orders, rdp, delta)
    k = int(mu + 60 * math.sqrt(2 * mu))
    support = np.arange(-k, k + 2)
    pmf = stats.skellam.pmf(support, mu, mu)
    upper = dict(zip(support[1:].tolist(), pmf[1:].tolist()))
    lower = dict(zip(support[1:].tolist(), pmf[:-1].tolist()))
    pld = pld_lib.from_two_probability_mass_functions(
        {x: math.log(p) for x, p in lower.items() if p > 0},
        {x: math.log(p) for x, p in upper.items() if p > 0},
        value_discretization_interval=1e-4,
        symmetric=True,
    )
    return eps_rdp, pld.get_epsilon_for_delta(delta)


def test_the_ledger_records_the_survivors_noise_as_recomputed_by_hand(sparse):
    _, ledger = sparse
    entry = ledger.entries[1]
    survivors = sorted(f"party-{p}" for p in range(N) if p not in DROPPED)
    mu = len(survivors) * SENT.mu / T  # every survivor added Sk(mu' / t)
    assert entry.metadata["survivors"] == survivors and entry.metadata["mu"] == pytest.approx(mu)
    assert entry.metadata["graph"] == {"num_shares": 9, "threshold": 5, "safe_for_every_order": True}
    event = entry.dp_event()
    assert type(event).__name__ == "SkellamDpEvent"
    assert (event.mu, event.l1_sensitivity, event.l2_sensitivity) == (pytest.approx(mu), 1.0, 1.0)
    recorded = CombinedAccountant().compose(event).epsilon(DELTA)
    eps_rdp, eps_pld = skellam_epsilons_by_hand(mu, DELTA)
    assert recorded.rdp == pytest.approx(eps_rdp, rel=1e-3)
    assert recorded.pld == pytest.approx(eps_pld, rel=2e-2)
    assert recorded.epsilon == pytest.approx(min(eps_rdp, eps_pld), rel=2e-2)
