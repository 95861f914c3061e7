"""A hostile coordinator on real Flower (simulation engine, real SecAgg+), against four guards, with forged keys among the attacks.

The ServerApp below does not use ``Federation.noisy_sum``'s honest round: it drives Flower's
SecAgg+ workflow itself with whatever request, setup and unmask messages an attacker would
send. Each attack is either refused by every organisation before its masked vector leaves
(checked by a mod outside SecAgg+ that records exactly what each node sent), or is accounted
in every guard's ledger at what the organisation actually sent; no guard's ledger passes its cap.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.common import ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from fedsynth.cli import bundled
from fedsynth.client.app import build_client_app, org_name
from fedsynth.client.guard import Guard, GuardPolicy
from fedsynth.client.organisation import Organisation
from fedsynth.common.accounting import Ledger
from fedsynth.common.identity import request_digest, simulated_federation
from fedsynth.common.marginals import cells, cliques_to_json
from fedsynth.common.noise import sample_skellam
from fedsynth.common.rounds import round_event
from fedsynth.common.schema import load_schema
from fedsynth.common.secagg_wire import KEY_NODES, KEY_PK1, KEY_PK2
from fedsynth.common.secure_sum import MAX_WEIGHT, NoisySumSpec, decode_sum, secure_ranges
from fedsynth.server.secure_sum import Federation, _ErrorsByNode, _OneRound, _TrackedSecAggPlus
from fedsynth.simulations.engine import run_in_simulation
from fedsynth.simulations.split import split_table

SCHEMA = load_schema(bundled("adult.schema.yaml"))
N, T, SEED, CAP = 4, 3, 11, 1.0
TABLES = split_table(SCHEMA.read_csv(bundled("adult.csv")).iloc[:1200], N, "iid", None, seed=1)
DOMAIN = SCHEMA.domain()
CLIQUES = [("sex",), ("race",)]
DIM = sum(cells(DOMAIN, c) for c in CLIQUES)
SIGMA = 17.0  # aggregate noise std at t survivors: six such rounds fit each guard's cap, eight do not


def ledger_of(folder: Path, party: int) -> Path:
    return folder / f"party-{party}" / "ledger.jsonl"


def make_org_factory(folder: Path):
    def make_org(context):
        party = int(context.node_config["partition-id"])
        policy = GuardPolicy(ledger_of(folder, party), epsilon_cap=CAP, delta=1e-6, min_noise_multiplier=0.5,
                             min_survivors=2)
        return Organisation(org_name(context), lambda _s: TABLES[party], accepts=SCHEMA,
                            guard=Guard(org_name(context), policy), cap_seed=party)

    return make_org


def recording_mod(folder: Path):
    """Which node sent a masked vector (or an error) in which round: exactly what left it."""

    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        secagg = reply.content.config_records.get(RECORD_KEY_CONFIGS, {}) if reply.has_content() else {}
        record = {"round": msg.metadata.group_id, "masked": "masked_params" in secagg, "error": reply.has_error()}
        with open(folder / f"sent-{context.node_id}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return reply

    return mod


def marginals(max_abs: int = 10**6, scale: float = 1.0, t: int = T, sigma: float = SIGMA):
    spec = NoisySumSpec(dim=DIM, mu=sigma**2 / 2, min_survivors=t, max_abs=max_abs, scale=scale)
    return spec, {"schema": SCHEMA.dumps("json"), "task": "marginals", "cliques": cliques_to_json(CLIQUES)}


class HostileGrid(_ErrorsByNode):
    """Lists one active neighbour as dead too in every unmask request (Flower does not check)."""

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001
        for m in messages:
            configs = m.content.config_records.get(RECORD_KEY_CONFIGS)
            if configs is not None and configs.get(Key.STAGE) == Stage.UNMASK:
                configs[Key.DEAD_NODE_ID_LIST] = [*configs[Key.DEAD_NODE_ID_LIST], configs[Key.ACTIVE_NODE_ID_LIST][0]]
        return super().send_and_receive(messages, timeout=timeout)


class ForgingGrid(_ErrorsByNode):
    """Relays keys of its own for every other node, in Flower's entries and in the signed list."""

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001
        for m in messages:
            configs = m.content.config_records.get(RECORD_KEY_CONFIGS)
            if configs is None or configs.get(Key.STAGE) != Stage.SHARE_KEYS:
                continue
            own = str(m.metadata.dst_node_id)
            fake = {nid: [public_key_to_bytes(generate_key_pairs()[1]) for _ in range(2)]
                    for nid in configs if nid.isdigit() and nid != own}
            for nid, keys in fake.items():
                configs[nid] = keys
            index = {str(n): i for i, n in enumerate(configs[KEY_NODES])}
            for column, position in ((KEY_PK1, 0), (KEY_PK2, 1)):
                values = list(configs[column])
                for nid, keys in fake.items():
                    values[index[nid]] = keys[position]
                configs[column] = values
        return super().send_and_receive(messages, timeout=timeout)


class UncheckedSecAggPlus(_TrackedSecAggPlus):
    """fedsynth's workflow without its own stop below t signed keys: a coordinator that presses on."""

    def setup_stage(self, grid, context, state):  # noqa: ANN001
        super().setup_stage(grid, context, state)
        return bool(self.keys)


def hostile_round(fed, number, spec, request, *, claim_t=None, claim_n=N, threshold=None, arrays=(), grid=None):
    """One SecAgg+ round with a request and a setup of the attacker's choosing."""
    spec = spec.against_collusion(claim_n)
    ranges = secure_ranges(spec, claim_n)
    config = {**request, **spec.to_config(), "job": fed.job, "round": number, "num_clients": claim_n}
    if claim_t is not None:
        config["sum.min_survivors"] = claim_t
    strategy = _OneRound(N, config)
    fed._legacy.strategy = strategy
    fed._legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(list(arrays)), keep_input=True
    )
    fed._legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: number})
    workflow = UncheckedSecAggPlus(
        num_shares=N, reconstruction_threshold=threshold or min(spec.min_survivors, N - 1),
        min_survivors=claim_t or spec.min_survivors, job=fed.job, round_=number, request=request_digest(config),
        max_weight=float(MAX_WEIGHT),
        clipping_range=float(ranges.clipping_range), quantization_range=ranges.quantization_range,
        modulus_range=ranges.modulus_range,
    )
    errors = (grid or _ErrorsByNode)(fed.grid)
    workflow(errors, fed._legacy)
    total = None if strategy.mean is None else decode_sum(strategy.mean, len(strategy.survivor_ids), spec)
    return {"total": total, "errors": sorted(errors.errors.values())}


def attacks(grid, context):
    out = {}
    with Federation(grid, context, num_clients=N, ledger=None) as fed:
        spec, request = marginals()
        out["scale"] = hostile_round(fed, 1, marginals(scale=1000.0)[0], request)
        out["false_t_n"] = hostile_round(fed, 2, *marginals(t=1000), claim_n=1000, threshold=T)
        # t = 3 in the request (each share mu/3) but a setup unmaskable from 2 survivors (2mu/3)
        out["setup_threshold"] = hostile_round(fed, 3, *marginals(t=3), threshold=2)
        out["probe"] = hostile_round(fed, 4, *marginals(max_abs=0))
        candidates = [("sex", "race"), ("age", "sex")]
        select = {"schema": SCHEMA.dumps("json"), "task": "select", "cliques": cliques_to_json(candidates),
                  "epsilon": 0.1, "k": 1, "penalty_std": 1.0}
        crafted = np.zeros(sum(cells(DOMAIN, c) for c in candidates))
        crafted[:2] = [50.0, -49.0]
        vote = NoisySumSpec(dim=2, mu=0.0, min_survivors=T, max_abs=1)
        out["marginals"] = hostile_round(fed, 5, vote, select, arrays=[crafted])
        out["unmask"] = hostile_round(fed, 6, spec, request, grid=HostileGrid)
        out["replay"] = [hostile_round(fed, 7, spec, request) for _ in range(2)]
        out["split"] = [hostile_round(fed, 8 + i, spec, request) for i in range(6)]
        out["forged"] = hostile_round(fed, 14, spec, request, grid=ForgingGrid)
    return out


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adversary")
    app = build_client_app(make_org_factory(folder), fixed_seed=SEED, mods=[recording_mod(folder)],
                           identities=simulated_federation(N))
    return folder, run_in_simulation(attacks, app, N)


def sent(folder: Path, round_: int) -> list[dict]:
    lines = [json.loads(x) for p in sorted(folder.glob("sent-*.jsonl")) for x in p.read_text().splitlines()]
    return [r for r in lines if r["round"] == str(round_)]


def guard_rounds(folder: Path) -> list[list[int]]:
    return [[e.metadata["round"] for e in Ledger(ledger_of(folder, p), CAP, 1e-6).entries] for p in range(N)]


def assert_refused_before_sending(folder, out, round_, rule):
    assert out["total"] is None
    assert sorted(e.split(":")[0] for e in out["errors"]) == [f"party-{p}" for p in range(N)]
    assert all(f": refused (rule {rule};" in e for e in out["errors"]), out["errors"]
    assert not any(r["masked"] for r in sent(folder, round_))
    assert all(round_ not in rounds for rounds in guard_rounds(folder))


@pytest.mark.parametrize(
    ("attack", "round_", "rule"),
    [("scale", 1, "scale"), ("false_t_n", 2, "secagg-signature"), ("setup_threshold", 3, "secagg-setup"),
     ("marginals", 5, "model-marginals"), ("forged", 14, "secagg-signature")],
)
def test_a_request_the_guard_cannot_verify_is_refused_before_a_vector_leaves(attacked, attack, round_, rule):
    folder, out = attacked
    assert_refused_before_sending(folder, out[attack], round_, rule)


def test_a_max_abs_zero_probe_reads_nothing_but_noise_and_is_accounted(attacked):
    folder, out = attacked
    spec, _request = marginals(max_abs=0)
    noise = sum(sample_skellam(np.random.default_rng([SEED, p, 4]), spec.against_collusion(N).mu_share, DIM)
                for p in range(N))
    np.testing.assert_array_equal(out["probe"]["total"], noise)  # every count capped to zero rows
    assert out["probe"]["errors"] == []
    assert all(4 in rounds for rounds in guard_rounds(folder))


def test_an_unmask_request_naming_a_node_active_and_dead_is_refused(attacked):
    folder, out = attacked
    assert out["unmask"]["total"] is None
    assert out["unmask"]["errors"] and all("(rule secagg-unmask;" in e for e in out["unmask"]["errors"])
    assert all(6 in rounds for rounds in guard_rounds(folder))  # its masked vectors left: accounted


def test_a_replayed_round_is_accounted_each_time_it_is_answered(attacked):
    folder, out = attacked
    assert all(r["total"] is not None for r in out["replay"])
    assert all(rounds.count(7) == 2 for rounds in guard_rounds(folder))


def test_a_job_split_into_small_rounds_stops_at_each_guards_cap(attacked):
    folder, out = attacked
    refused = [8 + i for i, r in enumerate(out["split"]) if r["total"] is None]
    assert refused and all("(rule epsilon-cap;" in e for i in refused for e in out["split"][i - 8]["errors"])
    spec, request = marginals()
    for party in range(N):
        ledger = Ledger(ledger_of(folder, party), CAP, 1e-6)
        assert ledger.epsilon().epsilon <= CAP
        assert all(e.dp_event() == round_event({**request, "task": e.mechanism}, spec) for e in ledger.entries)
    assert not any(r["masked"] for i in refused for r in sent(folder, i))
    assert all(not set(refused) & set(rounds) for rounds in guard_rounds(folder))
