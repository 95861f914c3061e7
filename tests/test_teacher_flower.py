"""Federated DP-SGD on real Flower: simulation engine, real SecAgg+, real Opacus, real dropouts.

Four organisations hold parts of the bundled Adult table and train a 6-class teacher
(label ``relationship``). Their noise comes from a fixed seed (tests only), so the test
replays each organisation's own computation and separates the noise from the clipped
gradient sums in the decoded total.
"""

from dataclasses import replace

import attr
import numpy as np
import pytest
from noise_checks import matches_skellam

from fedsynth.cli import bundled
from fedsynth.client.app import build_client_app
from fedsynth.client.organisation import Organisation, RequestRefused
from fedsynth.common.accounting import Ledger
from fedsynth.common.identity import simulated_federation
from fedsynth.common.schema import load_schema
from fedsynth.common.teacher import Features, TeacherSettings, dimension, get_flat, teacher_event
from fedsynth.server.secure_sum import Federation, RoundAborted
from fedsynth.server.teacher import TeacherPlan, fit_teacher
from fedsynth.simulations.engine import run_in_simulation
from fedsynth.simulations.split import split_table

SEED, PARTIES, T = 11, 4, 3
SCHEMA = replace(load_schema(bundled("adult.schema.yaml")), label="relationship")
TABLES = split_table(SCHEMA.read_csv(bundled("adult.csv")).iloc[:2000], PARTIES, "iid", None, seed=0)
PLAN = TeacherPlan(
    noise_multiplier=2.0,
    min_survivors=T,
    settings=TeacherSettings(steps=2),
    features=Features(SCHEMA.domain(), "relationship"),
    seed=0,
)
NOISE_ROUNDS = 6


class Party(Organisation):
    """A real organisation over its table that can be told to stop mid-round (after key sharing, by a
    refusal: a failure while computing an admitted round is answered with zeros and noise)."""

    def __init__(self, context):
        self.party = int(context.node_config["partition-id"])
        super().__init__(f"party-{self.party}", lambda _schema: TABLES[self.party], accepts=SCHEMA)

    def contribute(self, request, arrays, rng):
        if str(self.party) in str(request.get("fail", "")).split(","):
            raise RequestRefused(f"{self.name}: refused (rule test-fault; it stops after key sharing)")
        return super().contribute(request, arrays, rng)


def step_request():
    return {"schema": SCHEMA.dumps("json"), "task": "gradients", **PLAN.settings.to_config()}


def event_for(spec):
    """The DP-SGD step event with ``s`` survivors' noise, computed independently of the ledger."""
    return lambda s: teacher_event(
        np.sqrt(2.0 * spec.mu_of_survivors(s)) / spec.l2_sensitivity, PLAN.settings, spec.dim, steps=1
    )


def assert_same_event(recorded, expected):
    """Same mechanism and parameters, up to floating-point rounding."""
    a, b = attr.asdict(recorded), attr.asdict(expected)
    assert type(recorded) is type(expected) and a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12), key


def job(ledger_path):
    def run(grid, context):
        out = {}
        ledger = Ledger(ledger_path, cap_epsilon=1e9, delta=1e-6)
        with Federation(grid, context, num_clients=PARTIES, ledger=ledger) as fed:
            model = fit_teacher(fed, SCHEMA, PLAN, rows=2000.0, progress=lambda _m: None)
            out["weights"] = get_flat(model)
            spec = PLAN.spec(dimension(model))
            out["spec"] = spec.against_collusion(PARTIES)  # what the organisations add

            def step(fail=""):
                return fed.noisy_sum(
                    spec, {**step_request(), "fail": fail}, phase="teacher", mechanism="test step",
                    parameters=[out["weights"]],
                )

            out["noise_rounds"] = [step() for _ in range(NOISE_ROUNDS)]
            out["drop1"] = step(fail="1")
            before = len(ledger.entries)
            try:
                step(fail="1,2")
            except RoundAborted as exc:
                out["abort"] = str(exc)
            out["entries_around_abort"] = (before, len(ledger.entries))
        return out

    return run


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "ledger.jsonl"
    app = build_client_app(Party, fixed_seed=SEED, identities=simulated_federation(PARTIES))
    out = run_in_simulation(job(path), app, PARTIES)
    return out, Ledger(path, cap_epsilon=1e9, delta=1e-6)


def clipped_sums(round_, parties, weights):
    """Each organisation's un-noised integer gradient sum, replayed from its (test-only) seed."""
    total = 0
    for p in parties:
        org = Organisation(f"party-{p}", lambda _schema, p=p: TABLES[p], accepts=SCHEMA)
        total = total + org.contribute(step_request(), [weights], np.random.default_rng([SEED, p, round_]))
    return total


def test_every_step_is_recorded_with_the_survivors_noise(federation):
    out, ledger = federation
    spec = out["spec"]
    steps = [e for e in ledger.entries if e.mechanism.startswith("DP-SGD step")]
    assert [e.mechanism for e in steps] == ["DP-SGD step 1", "DP-SGD step 2"]
    assert all(e.metadata["survivors"] == [f"party-{i}" for i in range(PARTIES)] for e in steps)
    assert_same_event(steps[0].dp_event(), event_for(spec)(PARTIES))
    assert spec.mu_of_survivors(PARTIES) == pytest.approx(spec.mu * PARTIES / T)
    assert spec.honest_mu(PARTIES) == pytest.approx(spec.mu * (2 * T - PARTIES) / T)  # the planned noise
    assert dimension(PLAN.model()) == 6 * (PLAN.features.width + 1)  # a 6-class teacher


def test_decoded_gradient_noise_matches_the_plan_and_the_check_has_power(federation):
    out, _ = federation
    spec = out["spec"]
    noise = np.concatenate(
        [r.total - clipped_sums(r.round, range(PARTIES), out["weights"]) for r in out["noise_rounds"]]
    )
    mu = spec.mu_of_survivors(PARTIES)
    assert matches_skellam(noise, mu)
    assert not matches_skellam(noise, 2 * mu)  # a plan claiming twice the noise actually added is caught


def test_clipped_sums_respect_the_per_record_bound(federation):
    out, _ = federation
    first = out["noise_rounds"][0]
    sums = clipped_sums(first.round, range(PARTIES), out["weights"])
    rows = sum(len(t) for t in TABLES)
    assert 0 < np.linalg.norm(sums) <= rows * out["spec"].l2_sensitivity  # triangle inequality over records


def test_one_dropout_is_survived_with_less_noise_and_one_more_aborts_cleanly(federation):
    out, ledger = federation
    one = out["drop1"]
    assert one.dropped == ("party-1",) and len(one.survivors) == 3
    survivors_noise = one.total - clipped_sums(one.round, [0, 2, 3], out["weights"])
    assert matches_skellam(survivors_noise, out["spec"].mu_of_survivors(3))
    recorded = [e for e in ledger.entries if e.metadata["round"] == one.round][0]
    assert recorded.metadata["mu"] == pytest.approx(out["spec"].mu)  # exactly t survivors: the plan
    assert_same_event(recorded.dp_event(), event_for(out["spec"])(3))
    assert "aborted" in out["abort"] and "party-1, party-2" in out["abort"]
    before, after = out["entries_around_abort"]
    assert before == after


@pytest.mark.parametrize("settings", [
    {"teacher.clip": "nan"}, {"teacher.clip": 5e-324}, {"teacher.clip": "inf"},  # scaled rows overflow: rounding never ends
    {"teacher.resolution": 10**19},  # integers past int64
    {"teacher.model": "mlp", "teacher.hidden": 3000},  # memory that grows with the rows
    {"teacher.no_such_setting": 1}, {"teacher.steps": float("inf")}, {"teacher.resolution": float("inf")},
])
def test_an_organisation_refuses_teacher_settings_outside_the_public_bounds_whatever_its_rows(settings):
    """A hostile review found that a NaN or subnormal clip made the rounding loop forever on any
    non-empty batch while an empty table answered: refused now from the request alone."""
    weights = get_flat(PLAN.model())
    answers = []
    for table in (TABLES[0].iloc[:0], TABLES[0].iloc[:1], TABLES[0]):
        org = Organisation("party-0", lambda _schema, table=table: table, accepts=SCHEMA)
        with pytest.raises(RequestRefused, match="rule teacher-settings") as refused:
            org.contribute({**step_request(), **settings}, [weights], np.random.default_rng(0))
        answers.append(str(refused.value))
    assert len(set(answers)) == 1
