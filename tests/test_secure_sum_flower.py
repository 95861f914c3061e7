"""The secure noisy sum on real Flower: simulation engine, real SecAgg+, real dropouts.

Each simulation is expensive (Ray start-up), so one job per federation size runs several
rounds and the tests below check what each round returned.
"""

import numpy as np
import pytest
from noise_checks import matches_skellam

from fedsynth.client.app import build_client_app
from fedsynth.client.organisation import RequestRefused
from fedsynth.common.accounting import Ledger
from fedsynth.common.identity import simulated_federation
from fedsynth.common.noise import skellam_mu_for_sigma
from fedsynth.common.secure_sum import NoisySumSpec, noisy_share, quantization_error_bound, secure_ranges
from fedsynth.server.secure_sum import Federation, RoundAborted
from fedsynth.simulations.engine import run_in_simulation

SEED = 7
DIM = 1000
T = 4


def local_vector(party: int, round_: int, kind: str) -> np.ndarray:
    """What party ``party`` contributes in round ``round_`` (known to the test, not to Flower)."""
    rng = np.random.default_rng([party, round_, 99])
    if kind == "float":
        return rng.normal(0.0, 50.0, DIM)
    return rng.integers(0, 30_000, DIM)


class VectorParty:
    """An organisation whose vector the test knows; it can be told to fail mid-round."""

    guard = None

    def __init__(self, context):
        self.party = int(context.node_config["partition-id"])
        self.name = f"party-{self.party}"

    def contribute(self, request, _arrays, _rng):
        failing = {int(p) for p in str(request.get("fail", "")).split(",") if p}
        if self.party in failing:  # stops after key sharing (a failure while computing would be answered)
            raise RequestRefused(f"{self.name}: refused (rule test-fault; it stops after key sharing)")
        return local_vector(self.party, int(request["round"]), str(request["kind"]))

    def check(self, _request):
        pass


def expected_noisy_total(spec, parties, round_, kind, num_clients):
    """Replicate every survivor's client-side computation from its (test-only) seed."""
    ranges = secure_ranges(spec, num_clients)
    return sum(
        noisy_share(local_vector(p, round_, kind), spec, ranges, np.random.default_rng([SEED, p, round_]))
        for p in parties
    ).astype(np.int64)


NOISY = NoisySumSpec(dim=DIM, mu=skellam_mu_for_sigma(8.0), min_survivors=T, max_abs=30_000)
TWENTY = NoisySumSpec(dim=DIM, mu=skellam_mu_for_sigma(8.0), min_survivors=19, max_abs=30_000)
SENT = NOISY.against_collusion(5)  # what the five organisations add: 2t - n = 3 honest shares carry mu
FLOAT_EXACT = NoisySumSpec(dim=DIM, mu=0.0, min_survivors=T, max_abs=2**20, scale=2.0**10)


def five_party_job(ledger_path):
    def job(grid, context):
        out = {}
        ledger = Ledger(ledger_path, cap_epsilon=1e6, delta=1e-6)
        with Federation(grid, context, num_clients=5, ledger=ledger) as fed:
            out["orgs"] = sorted(fed.org_names.values())
            out["int"] = fed.noisy_sum(NOISY, {"kind": "int"}, phase="test", mechanism="int sum")
            fed.ledger = None  # noise-free exactness check: the only ledger-free use
            out["float"] = fed.noisy_sum(FLOAT_EXACT, {"kind": "float"}, phase="test", mechanism="float")
            fed.ledger = ledger
            out["drop1"] = fed.noisy_sum(NOISY, {"kind": "int", "fail": "1"}, phase="test", mechanism="drop 1")
            entries_before_abort = len(ledger.entries)
            try:
                fed.noisy_sum(NOISY, {"kind": "int", "fail": "1,3"}, phase="test", mechanism="drop 2")
            except RoundAborted as exc:
                out["abort"] = str(exc)
            out["entries_after_abort"] = (entries_before_abort, len(ledger.entries))
            out["noise_rounds"] = [
                fed.noisy_sum(NOISY, {"kind": "int"}, phase="test", mechanism="stat") for _ in range(12)
            ]
        return out

    return job


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    path = tmp_path_factory.mktemp("ledger") / "ledger.jsonl"
    out = run_in_simulation(five_party_job(path), build_client_app(VectorParty, fixed_seed=SEED, identities=simulated_federation(5)), 5)
    return out, path


def test_organisations_are_named(five):
    out, _ = five
    assert out["orgs"] == [f"party-{i}" for i in range(5)]


def test_decoded_sum_equals_the_exact_sum_of_noised_contributions(five):
    out, _ = five
    res = out["int"]
    assert res.survivors == tuple(f"party-{i}" for i in range(5))
    np.testing.assert_array_equal(res.total, expected_noisy_total(SENT, range(5), res.round, "int", 5))


def test_noise_free_float_sum_is_within_the_stated_quantization_error(five):
    out, _ = five
    res = out["float"]
    plain = sum(local_vector(p, res.round, "float") for p in range(5))
    err = np.abs(res.real_sum(FLOAT_EXACT) - plain)
    assert err.max() <= quantization_error_bound(FLOAT_EXACT, survivors=5)  # 5 / scale
    assert err.max() > 0  # the rounding is real, not skipped
    np.testing.assert_array_equal(res.total, expected_noisy_total(FLOAT_EXACT, range(5), res.round, "float", 5))


def test_dropouts_reduce_the_recorded_noise_and_one_too_many_aborts(five):
    out, path = five
    one = out["drop1"]
    assert one.dropped == ("party-1",) and len(one.survivors) == 4
    np.testing.assert_array_equal(one.total, expected_noisy_total(SENT, [0, 2, 3, 4], one.round, "int", 5))
    entries = Ledger(path, cap_epsilon=1e6, delta=1e-6).entries
    mus = [e.metadata["mu"] for e in entries[:2]]
    assert mus == pytest.approx([SENT.mu * 5 / T, SENT.mu * 4 / T])
    assert all(e.metadata["planned_mu"] == pytest.approx(NOISY.mu) for e in entries[:2])
    assert entries[1].metadata["dropped"] == ["party-1"]
    assert "aborted" in out["abort"] and "party-1, party-3" in out["abort"]
    before, after = out["entries_after_abort"]
    assert before == after  # an aborted round spends nothing and records nothing


def test_aggregate_noise_matches_the_plan_and_the_check_has_power(five):
    out, _ = five
    rounds = out["noise_rounds"]
    noise = np.concatenate(
        [r.total - sum(local_vector(p, r.round, "int") for p in range(5)) for r in rounds]
    )
    mu = SENT.mu_of_survivors(5)
    assert matches_skellam(noise, mu)
    # The same check rejects a plan claiming twice the variance the clients actually add.
    assert not matches_skellam(noise, 2 * mu)


def test_twenty_parties_sum_exactly(tmp_path):
    def job(grid, context):
        ledger = Ledger(tmp_path / "l.jsonl", cap_epsilon=1e6, delta=1e-6)
        with Federation(grid, context, num_clients=20, ledger=ledger) as fed:
            return fed.noisy_sum(TWENTY, {"kind": "int"}, phase="test", mechanism="sum")

    res = run_in_simulation(job, build_client_app(VectorParty, fixed_seed=SEED, identities=simulated_federation(20)), 20,
                            cpus_per_party=0.5)
    assert len(res.survivors) == 20
    np.testing.assert_array_equal(res.total, expected_noisy_total(TWENTY.against_collusion(20), range(20), res.round, "int", 20))
