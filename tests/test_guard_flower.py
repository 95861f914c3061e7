"""Organisations' guards and what leaves them, on real Flower (simulation engine, real SecAgg+).

Three organisations, each with its own guard and ledger. The coordinator first sends a job
whose plan every guard refuses, then a round too weakly noised for any guard; both reach
it as errors naming the organisation and the rule, and nothing is spent. Then a whole small
job runs (generator and teacher), and every message each organisation sent during all of
this, recorded by a mod outside SecAgg+ (exactly what left the node), is inspected: only
SecAgg+ protocol records and the pre-flight answers, masked vectors that look uniform
modulo SecAgg+'s modulus, never rows, row counts or un-noised statistics.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from fedsynth.cli import bundled
from fedsynth.client.app import build_client_app, org_name
from fedsynth.client.guard import Guard, GuardPolicy
from fedsynth.client.organisation import Organisation
from fedsynth.common.accounting import Ledger, skellam_event
from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.marginals import cliques_to_json
from fedsynth.common.rounds import plan_request
from fedsynth.common.schema import load_schema
from fedsynth.common.secure_sum import MAX_WEIGHT, NoisySumSpec
from fedsynth.common.teacher import TeacherSettings
from fedsynth.common.identity import simulated_federation
from fedsynth.server.job import JobConfig, run_job
from fedsynth.server.secure_sum import Federation, JobRefused, RoundAborted
from fedsynth.simulations.engine import run_in_simulation
from fedsynth.simulations.split import split_table

SCHEMA = load_schema(bundled("adult.schema.yaml"))
TABLES = split_table(SCHEMA.read_csv(bundled("adult.csv")).iloc[:1800], 3, "iid", None, seed=0)
GUARD_CAP, MIN_Z = 5.0, {0: 0.3, 1: 1.0, 2: 1.0}
#: Flower's SecAgg+ replies, the setup's signed keys and the consistency stage's signature.
SECAGG_REPLIES = [{"pk1", "pk2", "fedsynth.org", "fedsynth.signature"}, {"dsts", "ctxts"}, {"masked_params"},
                  {"fedsynth.signature"}, {"nids", "shares"}]


def guard_ledger(folder: Path, party: int) -> Path:
    return folder / f"party-{party}" / "ledger.jsonl"


def make_org_factory(folder: Path):
    def make_org(context):
        party = int(context.node_config["partition-id"])
        policy = GuardPolicy(guard_ledger(folder, party), epsilon_cap=GUARD_CAP, delta=1e-6,
                             min_noise_multiplier=MIN_Z[party], min_survivors=2)
        return Organisation(org_name(context), lambda _s: TABLES[party], accepts=SCHEMA,
                            guard=Guard(org_name(context), policy))

    return make_org


def recording_mod(folder: Path):
    """Appends a description of every reply a node sends to ``folder/sent-<node>.jsonl``."""

    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        content = reply.content if reply.has_content() else None
        record = {"type": msg.metadata.message_type, "error": reply.has_error()}
        if content is not None:
            record["arrays"] = {name: len(arrays) for name, arrays in content.array_records.items()}
            record["metrics"] = {name: dict(metrics) for name, metrics in content.metric_records.items()}
            record["configs"] = {name: sorted(cfg) for name, cfg in content.config_records.items()}
            secagg = content.config_records.get(RECORD_KEY_CONFIGS, {})
            if "masked_params" in secagg:
                record["masked"] = [bytes_to_ndarray(b).tolist() for b in secagg["masked_params"]]
            if "config" in content.config_records:
                record["answer"] = dict(content.config_records["config"])
        with open(folder / f"sent-{context.node_id}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return reply

    return mod


def job(folder: Path):
    def run(grid, context):
        out = {}
        ledger = Ledger(folder / "coordinator-test-ledger.jsonl", cap_epsilon=100.0, delta=1e-6)
        with Federation(grid, context, num_clients=3, ledger=ledger) as fed:
            too_much = plan_request(skellam_event(2.0, 1.0, 1.0, count=200), 3, {"generator": 2.0})
            try:
                fed.check({"schema": SCHEMA.dumps("json"), **too_much})
            except JobRefused as exc:
                out["check"] = str(exc)
            spec = NoisySumSpec(dim=2 + 16, mu=0.5**2 / 2, min_survivors=3, max_abs=10**6)  # z = 0.5
            request = {"schema": SCHEMA.dumps("json"), "task": "marginals", "cliques": cliques_to_json([("sex",), ("education",)])}
            try:
                fed.noisy_sum(spec, request, phase="test", mechanism="weak round")
            except RoundAborted as exc:
                out["round"] = str(exc)
        config = JobConfig(
            schema=SCHEMA, parties=3, epsilon=1.0, delta=1e-6, out=folder / "release", min_survivors=3,
            generator=GeneratorSettings(rounds=1, per_round=2, fit_iters=50, final_iters=100, score_sample=5000),
            teacher=TeacherSettings(steps=2),
        )
        out["release"] = run_job(grid, context, config, progress=lambda _m: None)
        return out

    return run


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guards")
    app = build_client_app(make_org_factory(folder), fixed_seed=3, mods=[recording_mod(folder)],
                           identities=simulated_federation(3))
    return folder, run_in_simulation(job(folder), app, 3)


def sent(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("sent-*.jsonl")) for line in path.read_text().splitlines()]


def test_a_plan_past_the_guards_caps_is_refused_before_any_round(federation):
    folder, out = federation
    refusal = out["check"]
    for party in range(3):
        assert f"party-{party}: refused (rule epsilon-cap;" in refusal
    assert "job refused before any data left an organisation" in refusal


def test_a_round_too_weak_for_two_guards_aborts_naming_them(federation):
    _folder, out = federation
    assert "aborted" in out["round"] and "Nothing from this round was used" in out["round"]
    for party in (1, 2):
        assert f"party-{party}: refused (rule min-noise-multiplier;" in out["round"]
    assert "noise multiplier 0.5, the policy requires at least 1" in out["round"]  # std 0.5, sensitivity 1
    # party-0's policy admits z = 0.35, but so little noise would take it past its cap.
    assert "party-0: refused (rule epsilon-cap;" in out["round"]


def test_each_guard_ledger_holds_exactly_the_jobs_rounds(federation):
    folder, out = federation
    release = out["release"]
    coordinator = Ledger(release.path / "ledger.jsonl", cap_epsilon=1.0, delta=1e-6).entries
    phases = [e.phase for e in coordinator]  # the generator's rounds, then two DP-SGD steps
    assert phases.count("teacher") == 2 and phases.count("generator") >= 3
    for party in range(3):
        mine = Ledger(guard_ledger(folder, party), cap_epsilon=GUARD_CAP, delta=1e-6)
        # Nothing from the refused check or the refused round: only the job's rounds.
        job_entries = mine.entries
        assert [e.metadata["round"] for e in job_entries] == [e.metadata["round"] for e in coordinator]
        # The guard counts the planned noise (2t - n = 3 honest shares); with t = n = 3 that is
        # exactly the 3 shares the coordinator saw.
        assert [e.metadata["mu"] for e in job_entries] == [e.metadata.get("planned_mu", 0.0) for e in coordinator]
        assert [e.metadata["mu"] for e in job_entries] == pytest.approx([e.metadata["mu"] for e in coordinator])
        assert mine.epsilon().epsilon == pytest.approx(Ledger(release.path / "ledger.jsonl", 1.0, 1e-6).epsilon().epsilon)


def test_only_secure_aggregation_records_and_preflight_answers_leave_an_organisation(federation):
    folder, _out = federation
    messages = sent(folder)
    assert {m["type"] for m in messages} == {"query", "train"}
    masked = 0
    for m in messages:
        if m["error"]:  # a refusal: nothing but Flower's error, no content
            assert "configs" not in m
            continue
        if m["type"] == "query":
            assert m["arrays"] == {} and m["metrics"] == {}
            assert list(m["configs"]) == ["config"] and set(m["answer"]) <= {"org", "ok", "reason"}
            continue
        assert set(m["configs"][RECORD_KEY_CONFIGS]) in SECAGG_REPLIES
        if "masked" in m:
            # Flower's SecAgg+ mod keeps the emptied shell of the ClientApp's FitRes: no arrays,
            # no metrics, and as "number of examples" fedsynth's constant, never a row count.
            assert m["arrays"] == {"fitres.parameters": 0}
            assert m["metrics"] == {"fitres.num_examples": {"num_examples": MAX_WEIGHT}}
            assert m["configs"] == {"fitres.metrics": [], "fitres.status": ["code", "message"],
                                    RECORD_KEY_CONFIGS: ["masked_params"]}
        else:
            assert m["arrays"] == {} and m["metrics"] == {} and list(m["configs"]) == [RECORD_KEY_CONFIGS]
        for vector in m.get("masked", []):
            values = np.asarray(vector, dtype=np.float64)
            if values.size >= 100:  # uniform on [0, M): mean near M / 2, never small counts
                top = values.max()
                assert 0.35 < values.mean() / top < 0.65
                masked += 1
    assert masked >= 3 * 4  # every organisation's masked vectors of the job's larger rounds
