"""What an organisation checks and what leaves it, without Flower: contribution bounding, fixed
refusal codes, the SecAgg+ setup and unmask checks, collusion-aware accounting.

The property tests at the end run every refusal and error path of the ClientApp (schema
discovery's rounds and the check of a discovered schema among them), and the real
deployment ClientApp's ``hello`` and ``check`` queries, for pairs of tables that differ in one
row (one of them a row that breaks the schema) and require byte-identical messages to the
coordinator.
"""

import json
import logging
import math
import os
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from fedsynth.cli import bundled
from fedsynth.client.app import build_client_app, guarded_share, public_errors, table_organisation
from fedsynth.client.daemon import cap_seed
from fedsynth.client.guard import Guard, GuardPolicy, GuardRefused, verify_setup, verify_unmask
from fedsynth.client.organisation import LocalTable, Organisation, TableUnreadable
from fedsynth.common.accounting import CombinedAccountant, Ledger, skellam_event
from fedsynth.common.discovery import protocol as discovery
from fedsynth.common.marginals import cells, cliques_to_json, grid_score_sensitivity, marginals
from fedsynth.common.rounds import plan_request, round_event
from fedsynth.common.schema import Schema
from fedsynth.common.schema import load_schema
from fedsynth.common.secure_sum import MAX_WEIGHT, NoisySumSpec, secure_ranges
from fedsynth.server.release import tail_delta, tolerated_colluders

SCHEMA = load_schema(bundled("adult.schema.yaml"))
TABLE = SCHEMA.read_csv(bundled("adult.csv")).iloc[:400].reset_index(drop=True)
DOMAIN = SCHEMA.domain()
CLIQUES = [("sex",), ("race",)]
DIM = sum(cells(DOMAIN, c) for c in CLIQUES)
CANDIDATES = [("sex", "race"), ("age", "sex")]


def policy(folder, **changes) -> GuardPolicy:
    base = GuardPolicy(folder / "ledger.jsonl", epsilon_cap=2.0, delta=1e-6, min_noise_multiplier=1.0, min_survivors=2)
    return replace(base, **changes)


def org(folder, table=TABLE, **changes) -> Organisation:
    return Organisation("hospital-a", lambda _s: table, accepts=SCHEMA, guard=Guard("hospital-a", policy(folder, **changes)),
                        cap_seed=7)


def count_round(sigma=20.0, t=3, n=3, max_abs=10**6, scale=1.0, round_=1, row_cap=None):
    spec = NoisySumSpec(dim=DIM, mu=sigma**2 / 2, min_survivors=t, max_abs=max_abs, scale=scale)
    request = {"schema": SCHEMA.dumps("json"), "task": "marginals", "cliques": cliques_to_json(CLIQUES),
               "round": round_, "num_clients": n, **spec.to_config()}
    if row_cap is not None:
        request["row_cap"] = row_cap
    return request, spec


def vote_round(model=None, t=3, n=3):
    spec = NoisySumSpec(dim=len(CANDIDATES), mu=0.0, min_survivors=t, max_abs=1)
    request = {"schema": SCHEMA.dumps("json"), "task": "select", "cliques": cliques_to_json(CANDIDATES),
               "epsilon": 0.1, "k": 1, "penalty_std": 5.0, "round": 1, "num_clients": n, **spec.to_config()}
    size = sum(cells(DOMAIN, c) for c in CANDIDATES)
    return request, spec, [np.full(size, 1.0 / size) if model is None else model]


def discovery_round(kinds=None, sigma=20.0, t=3, n=3):
    """Round 0 of a schema discovery over the agreed schema's columns (or ``kinds``)."""
    kinds = list(discovery.schema_kinds(SCHEMA.columns).items()) if kinds is None else kinds
    request = discovery.first_request(kinds, SCHEMA.na_values, 32)
    spec = NoisySumSpec(dim=discovery.dimension(request), mu=sigma**2 / 2, min_survivors=t, max_abs=10**6)
    return {**request, "round": 1, "num_clients": n, **spec.to_config()}, spec


def discovered_schema() -> Schema:
    """SCHEMA as a discovery would write it: unlisted values to ``other``, numbers clipped, no rules."""
    columns = []
    for column in SCHEMA.to_dict()["columns"]:
        if column["kind"] in ("categorical", "ordinal"):
            column = {**column, "categories": [*column["categories"], "other"], "other": "other"}
        elif column["kind"] in ("integer", "numeric", "datetime"):
            column = {**column, "out_of_range": "clip"}
        columns.append(column)
    return Schema.from_dict({**SCHEMA.to_dict(), "columns": columns, "rules": [], "provenance": {"phase": "schema"}})


def honest_setup(spec, n=3) -> dict:
    ranges = secure_ranges(spec, n)
    return {"threshold": min(spec.min_survivors, n - 1), "share_num": n, "sample_num": n,
            "clipping_range": float(ranges.clipping_range), "target_range": ranges.quantization_range,
            "mod_range": ranges.modulus_range, "max_weight": float(MAX_WEIGHT)}


# ---- contribution bounding


def test_the_row_cap_is_a_uniform_subsample_fixed_by_the_seed():
    table = LocalTable.from_frame(SCHEMA, TABLE, "hospital-a")
    capped = table.capped(50, seed=3)
    assert len(capped.codes) == 50 and table.capped(50, seed=3).codes.tobytes() == capped.codes.tobytes()
    assert table.capped(50, seed=4).codes.tobytes() != capped.codes.tobytes()
    assert table.capped(400, seed=3) is table and table.capped(None, seed=3) is table
    rows = {r.tobytes() for r in table.codes}
    assert all(r.tobytes() in rows for r in capped.codes)  # rows of the table, not made up
    # Uniform: over many seeds every row is kept about cap / n of the time.
    kept = np.zeros(len(table.codes))
    for seed in range(400):
        kept[np.random.default_rng(seed).permutation(len(table.codes))[:50]] += 1
    assert abs(kept.mean() / 400 - 50 / 400) < 1e-12 and kept.std() / 400 < 0.03


def test_counts_never_pass_the_cap_so_no_round_can_fail_on_the_data(tmp_path):
    organisation = org(tmp_path)
    for cap in (1, 37):
        request, _spec = count_round(row_cap=cap)
        counts = organisation.contribute(request, [], np.random.default_rng(0))
        assert counts.max() <= cap and counts.sum() == len(CLIQUES) * min(cap, len(TABLE))
    request, spec = count_round(max_abs=0)
    share = guarded_share(organisation, request, [], np.random.default_rng(5), honest_setup(spec))
    expected = guarded_share(org(tmp_path / "empty", TABLE.iloc[:0]), request, [], np.random.default_rng(5))
    np.testing.assert_array_equal(share, expected)  # a max_abs 0 probe sees noise only (vectors are projected)


def test_count_rounds_are_accounted_at_the_replacement_sensitivity_when_rows_are_capped():
    capped, spec = count_round(row_cap=50)
    assert round_event(capped, spec) == skellam_event(spec.mu, 2.0, math.sqrt(2.0), count=2)
    uncapped, spec = count_round()
    assert round_event(uncapped, spec) == skellam_event(spec.mu, 1.0, 1.0, count=2)
    # Two capped neighbours (the cap binds) differ by a replaced row: L1 2, L2 sqrt 2 per marginal.
    a, b = TABLE.iloc[:10], TABLE.iloc[1:11]
    codes = [LocalTable.from_frame(SCHEMA, t, "x").codes for t in (a, b)]
    diff = marginals(codes[0], list(DOMAIN), DOMAIN, [("age",)]) - marginals(codes[1], list(DOMAIN), DOMAIN, [("age",)])
    assert np.abs(diff).sum() <= 2 and np.sqrt((diff**2).sum()) <= math.sqrt(2.0)


# ---- the guard checks what the client will send


@pytest.mark.parametrize(
    ("round_", "rule"),
    [
        (count_round(scale=1000.0), "scale"),
        (count_round(t=2, n=4), "shamir-threshold"),  # 3t <= 2n: colluders could get two survivor sets signed
        (count_round(t=6, n=9), "shamir-threshold"),
        (count_round(t=5, n=3), "shamir-threshold"),
        (count_round(sigma=0.5), "min-noise-multiplier"),
    ],
    ids=["scale", "2t<=n", "3t<=2n", "t>n", "weak"],
)
def test_requests_the_guard_cannot_vouch_for_are_refused_before_any_data_is_read(tmp_path, round_, rule):
    request, _spec = round_
    organisation = org(tmp_path)
    with pytest.raises(GuardRefused, match=rf"^hospital-a: refused \(rule {rule}; "):
        guarded_share(organisation, request, [], np.random.default_rng(0))
    assert not organisation._tables and len(organisation.guard.ledger) == 0


@pytest.mark.parametrize(
    "model",
    [np.r_[50.0, -49.0, np.zeros(34)], np.r_[np.nan, np.ones(35)], np.r_[np.inf, np.ones(35)], np.ones(5)],
    ids=["negative", "nan", "inf", "wrong-size"],
)
def test_crafted_model_marginals_are_refused(tmp_path, model):
    request, _spec, arrays = vote_round(model)
    assert sum(cells(DOMAIN, c) for c in CANDIDATES) == 36
    with pytest.raises(GuardRefused, match="rule model-marginals;"):
        guarded_share(org(tmp_path), request, arrays, np.random.default_rng(0))


def scores_round(view=None, sigma=200.0):
    spec = NoisySumSpec(dim=len(CANDIDATES), mu=sigma**2 / 2, min_survivors=3, max_abs=8 * 10**6)
    request = {"schema": SCHEMA.dumps("json"), "task": "scores", "cliques": cliques_to_json(CANDIDATES),
               "round": 1, "num_clients": 3, **spec.to_config()}
    return request, spec, [np.full(36, 1.0 / 36) if view is None else view]


def test_scores_are_accounted_at_the_grid_sensitivity_and_crafted_views_refused(tmp_path):
    request, spec, arrays = scores_round()
    guarded_share(org(tmp_path), request, arrays, np.random.default_rng(0), honest_setup(spec))
    entry = Ledger(policy(tmp_path).ledger, 2.0, 1e-6).entries[0]
    assert entry.dp_event() == skellam_event(spec.mu, *grid_score_sensitivity(len(CANDIDATES)))
    for view in (np.r_[5.0, -4.0, np.zeros(34)], np.r_[np.nan, np.ones(35)], np.ones(3)):
        with pytest.raises(GuardRefused, match="rule model-marginals;"):
            guarded_share(org(tmp_path / "other"), request, [view], np.random.default_rng(0))


def test_a_sound_vote_is_admitted(tmp_path):
    request, spec, arrays = vote_round()
    share = guarded_share(org(tmp_path), request, arrays, np.random.default_rng(0), honest_setup(spec))
    assert share.sum() == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", 3), ("share_num", 5), ("sample_num", 4), ("clipping_range", 1e9), ("target_range", 2**20),
     ("mod_range", 2**62), ("max_weight", 1.0)],
)
def test_a_setup_other_than_the_request_implies_is_refused(tmp_path, field, value):
    request, spec = count_round()
    setup = {**honest_setup(spec), field: value}
    organisation = org(tmp_path)
    with pytest.raises(GuardRefused, match=rf"rule secagg-setup; {field}="):
        guarded_share(organisation, request, [], np.random.default_rng(0), setup)
    assert len(organisation.guard.ledger) == 0
    verify_setup("hospital-a", honest_setup(spec), spec, secure_ranges(spec, 3), 3)


def test_an_unmask_request_must_be_disjoint_with_at_least_t_active():
    verify_unmask("a", [1, 2], [3], 2)
    for active, dead, t in (([1, 2], [2], 2), ([1], [2, 3], 2), ([1, 1], [3], 2), ([1, 2], [3], 0)):
        with pytest.raises(GuardRefused, match="rule secagg-unmask;"):
            verify_unmask("a", active, dead, t)


def test_own_share_accounting_counts_only_the_organisations_own_noise(tmp_path):
    request, spec = count_round(sigma=60.0, t=3, n=3)
    guarded_share(org(tmp_path, noise_accounting="own-share"), request, [], np.random.default_rng(0))
    entry = Ledger(policy(tmp_path).ledger, 2.0, 1e-6).entries[0]
    assert entry.dp_event() == round_event(request, spec, spec.mu / 3)
    assert entry.metadata["mu"] == spec.mu / 3 and entry.metadata["noise_accounting"] == "own-share"
    with pytest.raises(ValueError, match="noise-accounting must be one of planned, own-share"):
        policy(tmp_path, noise_accounting="trusting")


def test_a_replayed_round_is_accounted_again(tmp_path):
    request, spec = count_round()
    organisation = org(tmp_path)
    for _ in range(2):
        guarded_share(organisation, request, [], np.random.default_rng(0))
    assert [e.metadata["round"] for e in organisation.guard.ledger.entries] == [1, 1]


# ---- deployment: a guard always, a cap seed that stays


def test_a_bare_clientapp_gets_a_default_guard_and_its_agreed_schema(tmp_path):
    context = Context(run_id=1, node_id=1, node_config={"org": "clinic", "data-path": "x.csv",
                                                         "schema-path": str(bundled("adult.schema.yaml")),
                                                         "guard-ledger": str(tmp_path / "g.jsonl")},
                      state=RecordDict(), run_config={})
    organisation = table_organisation(context)
    assert organisation.guard is not None and organisation.guard.policy.ledger == tmp_path / "g.jsonl"
    assert organisation.accepts == SCHEMA


def test_the_cap_seed_is_created_once_private_and_kept(tmp_path):
    path = tmp_path / "ledger.jsonl.cap-seed"
    first = cap_seed(path)
    assert cap_seed(path) == first and oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.jsonl.cap-seed"]


# ---- no unpaid bits: the table is read under the agreed schema only, and answers never depend on it


def _age_capped_at(upper: int) -> Schema:
    """The attack's probe: the agreed schema with age's upper bound (and last bin edge) at ``upper``."""
    data = SCHEMA.to_dict()
    age = next(c for c in data["columns"] if c["name"] == "age")
    age.update(upper=upper, bins=[*age["bins"][:-1], upper])
    return Schema.from_dict(data)


PLAN = plan_request(skellam_event(800.0, 1.0, 1.0, count=10), 2, {"generator": 40.0})
HELLO = {"action": "hello"}
AGREED_CHECK = {"action": "check", "schema": SCHEMA.dumps("json"), **PLAN}
#: Six checks that binary-searched max(age) when a bare ClientApp validated any schema it was sent.
PROBES = [{"action": "check", "schema": _age_capped_at(u).dumps("json"), **PLAN} for u in (94, 91, 89, 88, 87, 86)]


def _query(app, context, config) -> bytes:
    """What leaves the real ClientApp for one ``query`` message: its answer, or the text of the
    exception Flower would forward."""
    metadata = Metadata(run_id=1, message_id=f"q-{config['action']}", src_node_id=0, dst_node_id=context.node_id,
                        reply_to_message_id="", group_id="", created_at=0.0, ttl=3600.0, message_type="query")
    try:
        reply = app(Message(RecordDict({"config": ConfigRecord(config)}), metadata=metadata), context)
    except Exception as exc:  # noqa: BLE001 (the point: whatever leaves)
        return f"{type(exc).__name__}:{exc}".encode()
    return json.dumps(dict(reply.content["config"]), sort_keys=True).encode()


def _bare_node(folder, table, **node_config) -> Context:
    """A bare SuperNode (no daemon config) whose ``data-path`` holds ``table`` (None: no file there)."""
    folder.mkdir(parents=True, exist_ok=True)
    if table is not None:
        table.to_csv(folder / "table.csv", index=False, na_rep="?")
    config = {"org": "clinic", "data-path": str(folder / "table.csv"), "guard-ledger": str(folder / "l.jsonl"), **node_config}
    return Context(run_id=1, node_id=1, node_config=config, state=RecordDict(), run_config={})


def _one_more(table, column, value):
    return pd.concat([table, _with_bad_cells(table.iloc[[0]], [0], column, value)], ignore_index=True)


def test_check_answers_the_same_whatever_the_table_holds(tmp_path):
    """The bare ClientApp's six-check read of max(age) (88 here) no longer reads anything."""
    assert TABLE["age"].astype(int).max() == 88
    tables = {"max-88": TABLE, "max-95": _one_more(TABLE, "age", "95"), "a-bad-row": _one_more(TABLE, "age", "150"),
              "no-table": None}
    answers = {}
    for name, table in tables.items():
        app = build_client_app(table_organisation)  # the deployment ClientApp, fresh per table
        context = _bare_node(tmp_path / name, table, **{"schema-path": str(bundled("adult.schema.yaml"))})
        answers[name] = [_query(app, context, probe) for probe in (HELLO, AGREED_CHECK, *PROBES)]
    assert all(replies == answers["max-88"] for replies in answers.values())
    hello, agreed, *probes = (json.loads(reply) for reply in answers["max-88"])
    assert hello == agreed == {"org": "clinic", "ok": True}
    for probe in probes:  # refused on the schema alone, naming only what differs from the agreed one
        assert not probe["ok"] and probe["reason"].startswith("clinic: refused (rule agreed-schema;")
        assert probe["reason"].endswith("differs in: column age); nothing was sent")


def test_a_clientapp_without_an_agreed_schema_refuses_every_message_with_a_fixed_code(tmp_path):
    for name, table in (("adult", TABLE), ("smaller", TABLE.iloc[:10]), ("no-table", None)):
        app = build_client_app(table_organisation)
        bare = _bare_node(tmp_path / name, table)
        unloadable = _bare_node(tmp_path / name, table, **{"schema-path": str(tmp_path / "nowhere.yaml")})
        unloadable.node_id = 2
        for probe in (HELLO, AGREED_CHECK, *PROBES):
            assert _query(app, bare, probe).decode() == (
                "RequestRefused:clinic: refused (rule no-agreed-schema; node config names no 'schema-path'); nothing was sent"
            )
            assert _query(app, unloadable, probe).decode() == (
                "RequestRefused:clinic: refused (rule no-agreed-schema; its agreed schema does not load); nothing was sent"
            )


def test_rows_that_break_the_schema_are_left_out_one_by_one_and_reported_only_locally(tmp_path, caplog):
    broken = _with_bad_cells(_with_bad_cells(TABLE, [3], "age", "150"), [7], "sex", "Unknown")
    with caplog.at_level(logging.ERROR):
        kept = LocalTable.from_frame(SCHEMA, broken, "hospital-a")
    assert kept.codes.tobytes() == LocalTable.from_frame(SCHEMA, TABLE.drop(index=[3, 7]), "x").codes.tobytes()
    assert "2 of 400 rows of the local table do not conform" in caplog.text and "'150'" in caplog.text
    # A round from a table with one more, broken row sends exactly what the table alone sends.
    request, spec = count_round()
    shares = [guarded_share(org(tmp_path / str(i), t), request, [], np.random.default_rng(1), honest_setup(spec))
              for i, t in enumerate((TABLE, _one_more(TABLE, "age", "150")))]
    np.testing.assert_array_equal(shares[0], shares[1])
    # A problem of the whole table (a column missing) or an unreadable table leaves no row.
    assert len(LocalTable.from_frame(SCHEMA, TABLE.drop(columns=["sex"]), "x").codes) == 0

    def unreadable(_schema):
        raise TableUnreadable("data file gone.csv does not exist")

    organisation = Organisation("hospital-a", unreadable, accepts=SCHEMA)
    with caplog.at_level(logging.ERROR):
        counts = organisation.contribute(request, [], np.random.default_rng(0))
    assert counts.sum() == 0 and "data file gone.csv does not exist" in caplog.text


# ---- the release's statement


class _Entry:
    def __init__(self, survivors, dim=10, mu=1.0):
        self.metadata = {"survivors": survivors, "dim": dim, "mu": mu}


def test_tolerated_colluders_are_n_minus_t_when_3t_exceeds_2n():
    assert tolerated_colluders(t=3, n=4) == 1
    assert tolerated_colluders(t=4, n=5) == 1 and tolerated_colluders(t=9, n=10) == 1
    assert tolerated_colluders(t=95, n=100) == 5
    assert tolerated_colluders(t=3, n=5) == 0  # 3t <= 2n: two colluders could get two survivor sets signed


def test_the_noise_tail_is_in_delta():
    entries = [_Entry([], dim=1000), _Entry([], dim=1000, mu=0.0)]
    assert tail_delta(entries, 3, 1.0) == pytest.approx((1 + math.e) * 3 * 1000 * 2.0**-100)


def test_a_ledgers_planned_events_count_t_survivors(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl", 100.0, 1e-6)
    entry = ledger.append("g", "m", skellam_event(30.0, 1.0, 1.0, count=2), {"planned_mu": 20.0, "mu": 30.0})
    assert entry.planned_event() == skellam_event(20.0, 1.0, 1.0, count=2)
    eps = [CombinedAccountant().compose(e).epsilon(1e-6).epsilon for e in (entry.dp_event(), entry.planned_event())]
    assert eps[0] < eps[1]


# ---- property: one row never changes what leaves on a refusal or error path


def _reply(call) -> str:
    """What Flower would forward: the text of the exception that leaves ``public_errors``
    (``answered`` where the path admits the table)."""
    context = Context(run_id=1, node_id=1, node_config={"org": "hospital-a"}, state=RecordDict(), run_config={})
    msg = SimpleNamespace(metadata=SimpleNamespace(message_type="train"))  # all the mod reads of it
    try:
        public_errors(msg, context, lambda _m, _c: call())
    except Exception as exc:  # noqa: BLE001 (the point: whatever leaves)
        return f"{type(exc).__module__}.{type(exc).__name__}:{exc}"
    return "answered"


class Leaky(Organisation):
    """An organisation whose code fails with a data-derived message (a bug that must not leave)."""

    def contribute(self, request, arrays, rng):
        raise ValueError(f"{len(self.table(str(request['schema'])).codes)} rows, first age {self._load(None).iloc[0, 0]}")


def _paths(folder, table):
    """Every refusal and error path, as calls over an organisation holding ``table``."""
    spent = count_round(sigma=1.5)

    def fresh(name, **changes):
        return org(folder / name, table, **changes)

    def over_cap():
        return guarded_share(fresh("cap"), spent[0], [], np.random.default_rng(0))

    def check():
        return Organisation("hospital-a", lambda _s: table, accepts=SCHEMA).check({"schema": SCHEMA.dumps("json")})

    def leaky():
        return guarded_share(Leaky("hospital-a", lambda _s: table, accepts=SCHEMA), count_round()[0], [],
                             np.random.default_rng(0))

    request, spec = count_round()
    return {
        "scale": lambda: guarded_share(fresh("s"), count_round(scale=9.0)[0], [], np.random.default_rng(0)),
        "shamir": lambda: guarded_share(fresh("n"), count_round(n=5)[0], [], np.random.default_rng(0)),
        "setup": lambda: guarded_share(fresh("u"), request, [], np.random.default_rng(0),
                                       {**honest_setup(spec), "threshold": 3}),
        "marginals": lambda: guarded_share(fresh("m"), *vote_round(np.r_[-1.0, np.ones(35)])[::2],
                                           np.random.default_rng(0)),
        "cap": over_cap,
        "task": lambda: guarded_share(fresh("t"), {**request, "task": "dump"}, [], np.random.default_rng(0)),
        "check": check,
        "internal": leaky,
        "discovery": lambda: guarded_share(fresh("d"), discovery_round()[0], [], np.random.default_rng(0)),
        "discovery-columns": lambda: guarded_share(fresh("dc"), discovery_round([("age", "categorical")])[0], [],
                                                   np.random.default_rng(0)),
        "discovered-check": lambda: Organisation("hospital-a", lambda _s: table, accepts=SCHEMA).check(
            {"schema": discovered_schema().dumps("json")}),
    }


def _with_bad_cells(table, rows, column, value):
    bad = table.copy()
    bad.loc[bad.index[rows], column] = value
    return bad


@pytest.mark.parametrize("seed", range(4))
def test_tables_differing_in_one_row_send_byte_identical_refusals_and_errors(tmp_path, seed):
    rng = np.random.default_rng(seed)
    row = int(rng.integers(len(TABLE)))
    if seed % 2:
        neighbour = TABLE.drop(index=row).reset_index(drop=True)  # one row removed
    else:
        neighbour = pd.concat([TABLE, TABLE.iloc[[row]]], ignore_index=True)  # one row added
    pairs = [(TABLE, neighbour)]
    # A table and its neighbour with one more row that breaks the schema (the check used to tell them apart).
    pairs.append((TABLE, pd.concat([TABLE, _with_bad_cells(TABLE.iloc[[row]], [0], "age", "150")], ignore_index=True)))
    # A table that breaks the schema, and its neighbour with one more row that breaks it elsewhere.
    broken = _with_bad_cells(TABLE, [row], "sex", "Unknown")
    more = pd.concat([broken, _with_bad_cells(TABLE.iloc[[row]], [0], "age", "not-a-number")], ignore_index=True)
    pairs.append((broken, more))
    for number, pair in enumerate(pairs):
        paths = [_paths(tmp_path / f"{number}-{side}", table) for side, table in enumerate(pair)]
        for name, rule in RULES.items():
            replies = [_reply(p[name]).encode() for p in paths]
            assert replies[0] == replies[1], name
            assert (rule or "answered") in replies[0].decode(), (name, replies[0])


RULES = {
    "scale": "hospital-a: refused (rule scale;",
    "shamir": "hospital-a: refused (rule shamir-threshold;",
    "setup": "hospital-a: refused (rule secagg-setup;",
    "marginals": "hospital-a: refused (rule model-marginals;",
    "cap": "hospital-a: refused (rule epsilon-cap;",
    "task": "hospital-a: refused (rule task;",
    "check": "",  # answered, whatever the table holds
    "internal": "",  # answered: a failure while computing an admitted round sends zeros and noise
    "discovery": "",  # answered: a discovery round's counts, whatever the table holds
    "discovery-columns": "hospital-a: refused (rule discovery-columns;",
    "discovered-check": "",  # answered: a schema discovered from the agreed one
}


@pytest.mark.parametrize("bad", [{"teacher.clip": float("nan")}, {"teacher.clip": 5e-324}, {"teacher.hidden": 3000},
                                 {"teacher.steps": float("inf")}, {"teacher.bogus": 1}])
def test_the_guard_refuses_teacher_settings_outside_their_public_bounds_and_records_nothing(tmp_path, bad):
    from fedsynth.common.teacher import TeacherSettings

    spec = NoisySumSpec(dim=100, mu=1e9, min_survivors=3, max_abs=10**6)
    request = {"schema": SCHEMA.dumps("json"), "task": "gradients", **TeacherSettings().to_config(), **bad,
               "round": 1, "num_clients": 3, **spec.to_config()}
    guard = Guard("hospital-a", policy(tmp_path))
    with pytest.raises(GuardRefused, match="rule teacher-settings"):
        guard.admit(request, spec, [np.zeros(100)])
    assert not (tmp_path / "ledger.jsonl").exists() or Ledger(tmp_path / "ledger.jsonl", cap_epsilon=2.0, delta=1e-6).entries == ()
