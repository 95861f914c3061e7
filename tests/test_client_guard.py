"""An organisation's own privacy guard and its daemon config, without Flower.

The guard is checked against the same accountant the coordinator uses: every admitted round
is in its ledger as ``round_event`` of the request, every refusal names the organisation and
the rule and leaves the ledger and the organisation's data untouched.
"""

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedsynth.cli import bundled, main
from fedsynth.client import app as client_app
from fedsynth.client.app import daemon_organisation, guarded_share, warm_tables
from fedsynth.client.daemon import ConfigError, DaemonConfig, preflight
from fedsynth.client.guard import Guard, GuardPolicy, GuardRefused
from fedsynth.client.organisation import Organisation, RequestRefused
from fedsynth.common.accounting import CombinedAccountant, Ledger, skellam_event
from fedsynth.common.marginals import cliques_to_json
from fedsynth.common.rounds import plan_request, round_event
from fedsynth.common.schema import load_schema
from fedsynth.common.secure_sum import NoisySumSpec, noisy_share, secure_ranges
from fedsynth.common.identity import write_federation

SCHEMA = load_schema(bundled("adult.schema.yaml"))
TABLE = SCHEMA.read_csv(bundled("adult.csv")).iloc[:500]
CLIQUES = [("age",), ("sex",)]
DIM = SCHEMA.domain()["age"] + SCHEMA.domain()["sex"]


def policy(tmp_path, **changes) -> GuardPolicy:
    base = GuardPolicy(tmp_path / "guard" / "ledger.jsonl", epsilon_cap=2.0, delta=1e-6,
                       min_noise_multiplier=1.0, min_survivors=2)
    return replace(base, **changes)


def marginals_round(sigma: float = 20.0, t: int = 2, round_: int = 1) -> tuple[dict, NoisySumSpec]:
    spec = NoisySumSpec(dim=DIM, mu=sigma**2 / 2, min_survivors=t, max_abs=1_000_000)
    request = {"schema": SCHEMA.dumps("json"), "task": "marginals", "cliques": cliques_to_json(CLIQUES),
               "round": round_, "num_clients": 2, **spec.to_config()}
    return request, spec


class CountingOrganisation(Organisation):
    """The real organisation, counting how often its table was read for a contribution."""

    def __init__(self, guard):
        super().__init__("hospital-a", lambda _schema: TABLE, accepts=SCHEMA, guard=guard)
        self.computed = 0

    def contribute(self, request, arrays, rng):
        self.computed += 1
        return super().contribute(request, arrays, rng)


def test_an_admitted_round_is_in_the_guards_ledger_before_the_share_is_returned(tmp_path):
    org = CountingOrganisation(Guard("hospital-a", policy(tmp_path)))
    request, spec = marginals_round()
    share = guarded_share(org, request, [], np.random.default_rng(0))
    expected = noisy_share(org.contribute(request, [], np.random.default_rng(0)), spec,
                           secure_ranges(spec, 2), np.random.default_rng(0))
    np.testing.assert_array_equal(share, expected)
    on_disk = Ledger(policy(tmp_path).ledger, cap_epsilon=2.0, delta=1e-6)  # read back from the file
    assert len(on_disk) == 1
    entry = on_disk.entries[0]
    assert entry.dp_event() == round_event(request, spec) == skellam_event(spec.mu, 1.0, 1.0, count=2)
    assert entry.metadata == {"round": 1, "t": 2, "n": 2, "mu": spec.mu, "noise_accounting": "planned", "dim": DIM}


@pytest.mark.parametrize(
    ("round_", "rule"),
    [
        (marginals_round(t=1), "min-survivors"),  # fewer honest shares than the policy allows
        (marginals_round(sigma=0.5), "min-noise-multiplier"),  # z = 0.5 < 1
        (marginals_round(sigma=0.0), "min-noise-multiplier"),  # un-noised counts
    ],
    ids=["low-t", "weak-noise", "no-noise"],
)
def test_a_refused_round_reads_no_data_and_spends_nothing(tmp_path, round_, rule):
    org = CountingOrganisation(Guard("hospital-a", policy(tmp_path)))
    request, _spec = round_
    with pytest.raises(GuardRefused, match=rf"^hospital-a: refused \(rule {rule}; "):
        guarded_share(org, request, [], np.random.default_rng(0))
    assert org.computed == 0
    assert len(org.guard.ledger) == 0 and not policy(tmp_path).ledger.exists()


def test_the_cap_holds_across_restarts_of_the_daemon(tmp_path):
    """Rounds are admitted until the next would pass the cap; a fresh guard over the same
    file (a restarted daemon) refuses it too, and the refused round adds nothing."""
    admitted = 0
    while True:
        guard = Guard("hospital-a", policy(tmp_path))  # a new ClientApp process per message
        request, spec = marginals_round(sigma=8.0, round_=admitted + 1)
        try:
            guarded_share(CountingOrganisation(guard), request, [], np.random.default_rng(admitted))
        except GuardRefused as exc:
            assert "(rule epsilon-cap;" in str(exc) and f"over {admitted} contributions" in str(exc)
            break
        admitted += 1
    assert admitted >= 1
    ledger = Ledger(policy(tmp_path).ledger, cap_epsilon=2.0, delta=1e-6)
    assert len(ledger) == admitted
    composed = CombinedAccountant().compose(skellam_event(32.0, 1.0, 1.0, count=2 * admitted))
    assert ledger.epsilon().epsilon == pytest.approx(composed.epsilon(1e-6).epsilon)
    assert ledger.epsilon().epsilon <= 2.0
    over = CombinedAccountant().compose(skellam_event(32.0, 1.0, 1.0, count=2 * (admitted + 1)))
    assert over.epsilon(1e-6).epsilon > 2.0


def test_unknown_tasks_are_refused(tmp_path):
    request, _ = marginals_round()
    guard = Guard("hospital-a", policy(tmp_path))
    with pytest.raises(GuardRefused, match="rule task; unknown task 'dump'"):
        guarded_share(CountingOrganisation(guard), {**request, "task": "dump"}, [], np.random.default_rng(0))


def test_the_job_preflight_judges_the_whole_plan(tmp_path):
    org = Organisation("hospital-a", lambda _s: TABLE, accepts=SCHEMA, guard=Guard("hospital-a", policy(tmp_path)))
    job = {"schema": SCHEMA.dumps("json")}
    small = skellam_event(800.0, 1.0, 1.0, count=10)
    org.check({**job, **plan_request(small, 2, {"generator": 40.0})})  # admitted, nothing spent
    assert len(org.guard.ledger) == 0
    with pytest.raises(GuardRefused, match="rule epsilon-cap;"):
        org.check({**job, **plan_request(skellam_event(2.0, 1.0, 1.0, count=50), 2, {"generator": 2.0})})
    with pytest.raises(GuardRefused, match="rule min-survivors;.*t=1"):
        org.check({**job, **plan_request(small, 1, {"generator": 40.0})})
    with pytest.raises(GuardRefused, match="rule min-noise-multiplier;.*teacher"):
        org.check({**job, **plan_request(small, 2, {"generator": 40.0, "teacher": 0.3})})
    with pytest.raises(GuardRefused, match="rule plan;"):
        org.check(job)


def test_an_organisation_takes_part_only_with_its_agreed_schema():
    other = replace(SCHEMA, columns=tuple(replace(c, name="years") if c.name == "age" else c for c in SCHEMA.columns))
    org = Organisation("hospital-a", lambda _s: TABLE, accepts=SCHEMA)
    with pytest.raises(RequestRefused, match=r"hospital-a: refused \(rule agreed-schema; it accepts only its agreed schema.*column age.*column years"):
        org.check({"schema": other.dumps("json")})


# ---- the daemon's config file


GUARD = {"ledger": "state/ledger.jsonl", "epsilon-cap": 4.0, "delta": 1e-6, "min-noise-multiplier": 0.5,
         "min-survivors": 2}


def write_config(folder: Path, **sections) -> Path:
    (folder / "table.csv").write_text(bundled("adult.csv").read_text(encoding="utf-8")[:20000].rsplit("\n", 1)[0] + "\n")
    config = {
        "organisation": {"name": "hospital-a", "data": "table.csv", "schema": str(bundled("adult.schema.yaml"))},
        "superlink": {"address": "link.example.org:9092", "root-certificates": "ca.crt", "auth-key": "node.key",
                      "clientappio-port": 9300},
        "guard": GUARD,
        "identity": {"signing-key": "keys/hospital-a.signing.pem", "roster": "keys/roster.toml"},
    }
    write_federation(folder / "keys", ["hospital-a"])
    for section, values in sections.items():
        config[section] = values
    for name in ("ca.crt", "node.key"):
        (folder / name).write_text("test\n")
    text = "".join(
        f"[{section}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
        for section, values in config.items() if values is not None
    )
    path = folder / "org.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_daemon_config_becomes_a_supernode_command(tmp_path):
    config = DaemonConfig.load(write_config(tmp_path))
    assert config.data == tmp_path / "table.csv" and config.guard.ledger == tmp_path / "state" / "ledger.jsonl"
    cmd = config.supernode_command(11)
    assert cmd[:4] == [sys.executable, "-m", "fedsynth.client.node", "supernode"]
    joined = " ".join(cmd)
    assert "--isolation process" in joined
    assert config.superexec_command(4242, 10)[3:] == ["superexec", "--runtime-api-address", "127.0.0.1:9300",
                                                      "--parent-pid", "4242", "--config", str(tmp_path / "org.toml"),
                                                      "--wake-fd", "10"]
    assert cmd[3:6] == ["supernode", "--wake-fd", "11"]  # the pipe to its SuperExec
    assert "--superlink link.example.org:9092" in joined and "--insecure" not in joined
    assert f"--root-certificates {tmp_path / 'ca.crt'}" in joined
    assert f"--auth-supernode-private-key {tmp_path / 'node.key'}" in joined and "--port 9300" in joined
    assert cmd[cmd.index("--node-config") + 1] == f'config="{tmp_path / "org.toml"}" org="hospital-a"'
    summary = preflight(config)
    assert "hospital-a:" in summary and "conform to schema 'adult'" in summary and "0 contributions" in summary
    assert config.guard.noise_accounting == "planned"
    strict = write_config(tmp_path, guard={**GUARD, "noise-accounting": "own-share"})
    assert DaemonConfig.load(strict).guard.noise_accounting == "own-share"
    # Every ClientApp process of the daemon draws the same row-cap subsample.
    assert config.organisation().cap_seed == DaemonConfig.load(strict).organisation().cap_seed


def test_a_warm_table_serves_tasks_until_its_file_changes_and_nothing_else_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(client_app, "WARM", {})
    path = write_config(tmp_path)
    warm_tables(str(path))
    schema_json = load_schema(bundled("adult.schema.yaml")).dumps("json")
    warm, = client_app.WARM.values()
    kept = warm.tables
    org = daemon_organisation(str(path))
    assert org.validated_tables[schema_json] is kept[schema_json]  # validated once, before any task
    assert org.accepts is warm.schema  # under the schema parsed once, from the same file
    assert daemon_organisation(str(path)) is not org  # organisation, guard, identity: per task
    assert "ledger" not in vars(org.guard)  # the guard's ledger is read by a task, when needed
    # An edited cap applies to the next task, though the table is still the one kept.
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("epsilon-cap = 4.0", "epsilon-cap = 1.0"), encoding="utf-8")
    assert daemon_organisation(str(path)).guard.policy.epsilon_cap == 1.0
    # A changed table file (even of the same size and modification time) is read afresh ...
    table = tmp_path / "table.csv"
    before = table.stat()
    lines = table.read_text(encoding="utf-8").splitlines(keepends=True)
    table.write_text("".join([lines[0], lines[2], lines[1], *lines[3:]]), encoding="utf-8")  # two rows swapped
    os.utime(table, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert table.stat().st_size == before.st_size
    assert schema_json not in daemon_organisation(str(path)).validated_tables
    # ... until the warm process, before its next fork, validates it again.
    warm_tables(str(path))
    assert daemon_organisation(str(path)).validated_tables[schema_json] is not kept[schema_json]
    # An edited agreed schema makes the warm process validate the table again, under the new schema.
    kept = next(iter(client_app.WARM.values())).tables
    schema = tmp_path / "schema.yaml"
    schema.write_text(bundled("adult.schema.yaml").read_text(encoding="utf-8").replace("name: adult", "name: adult-v2", 1))
    path.write_text(path.read_text(encoding="utf-8").replace(str(bundled("adult.schema.yaml")), str(schema)))
    assert daemon_organisation(str(path)).accepts.name == "adult-v2"  # the edited file, before the warm process saw it
    warm_tables(str(path))
    org = daemon_organisation(str(path))
    assert org.accepts.name == "adult-v2" and org.validated_tables[org.accepts.dumps("json")] is not kept.get(schema_json)


def test_a_missing_table_counts_as_empty_and_a_database_table_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(client_app, "WARM", {})
    path = write_config(tmp_path)
    warm_tables(str(path))
    (tmp_path / "table.csv").unlink()  # erased between tasks: no error reaches the coordinator
    org = daemon_organisation(str(path))
    assert len(org.table(org.accepts.dumps("json")).codes) == 0
    monkeypatch.setattr(client_app, "WARM", {})
    path = write_config(tmp_path, organisation={"name": "hospital-a", "data": "sqlite:///:memory:",
                                                 "query": "SELECT 1", "schema": str(bundled("adult.schema.yaml"))})
    warm_tables(str(path))
    assert client_app.WARM == {}


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"guard": {"ledger": "l.jsonl", "epsilon-cap": 4.0}}, r"\[guard\]: missing key\(s\) delta, min-noise-multiplier"),
        ({"superlink": {"address": "x:1", "root-certificate": "ca.crt"}}, r"\[superlink\]: unknown key\(s\) root-certificate"),
        ({"superlink": {"address": "x:1"}}, r"\[superlink\]: give root-certificates"),
        ({"extra": {"a": 1}}, r"unknown section \[extra\]"),
        ({"guard": {"ledger": "l", "epsilon-cap": 4.0, "delta": 1e-6, "min-noise-multiplier": 0.5,
                    "min-survivors": 1}}, r"\[guard\]: guard min-survivors must be at least 2"),
        ({"guard": {"ledger": "l", "epsilon-cap": 4.0, "delta": 1e-6, "min-noise-multiplier": 0.5,
                    "min-survivors": 2, "noise-accounting": "trusting"}}, r"\[guard\]: guard noise-accounting must be"),
    ],
)
def test_a_wrong_daemon_config_names_its_section_and_key(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message):
        DaemonConfig.load(write_config(tmp_path, **sections))


def test_fedsynth_client_check_refuses_a_table_that_breaks_the_schema(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["client", "--config", str(path), "--check"]) == 0
    assert "rows conform to schema 'adult'" in capsys.readouterr().out
    with open(tmp_path / "table.csv", "a", encoding="utf-8") as f:
        f.write("250, Private, 1, Bachelors, 13, Never-married, Sales, Husband, White, Male, 0, 0, 40, Cuba, <=50K\n")
    assert main(["client", "--config", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert "hospital-a: local table does not conform to schema 'adult'" in err and "age" in err
    assert os.path.exists(tmp_path / "state" / "ledger.jsonl") is False


def test_the_table_can_come_from_parquet_or_a_database(tmp_path):
    path = write_config(tmp_path)
    typed = TABLE.copy()
    typed["age"] = typed["age"].astype(int)  # as a database or Parquet would store it
    typed.to_parquet(tmp_path / "table.parquet")
    typed.to_sql("visits", f"sqlite:///{tmp_path / 'clinic.db'}", index=False)
    text = path.read_text().replace('data = "table.csv"', 'data = "table.parquet"')
    path.write_text(text)
    assert f"{len(TABLE):,} rows conform" in preflight(DaemonConfig.load(path))
    url = f"sqlite:///{tmp_path / 'clinic.db'}"
    path.write_text(text.replace('data = "table.parquet"', f'data = "{url}"\nquery = "SELECT * FROM visits"'))
    config = DaemonConfig.load(path)
    assert f"{len(TABLE):,} rows conform" in preflight(config)
    with pytest.raises(ConfigError, match="cannot read its table from sqlite:///.*OperationalError"):
        preflight(replace(config, query="SELECT * FROM nowhere"))
    path.write_text(text.replace('data = "table.parquet"', f'data = "{url}"'))
    with pytest.raises(ConfigError, match="a database URL in data needs a query"):
        DaemonConfig.load(path)


class FailingOrganisation(Organisation):
    """The real organisation, whose computation fails on some row (stands in for a parser fault)."""

    def __init__(self, guard, table):
        super().__init__("hospital-a", lambda _schema: table, accepts=SCHEMA, guard=guard)

    def contribute(self, request, arrays, rng):
        if len(self.table(str(request["schema"])).codes) > 300:  # fails on its 301st row
            raise OverflowError("date value out of range")
        return super().contribute(request, arrays, rng)


def test_a_computation_that_fails_on_a_row_answers_like_any_table_after_the_round_is_recorded(tmp_path, caplog):
    request, spec = marginals_round()
    shares = {}
    for name, table in (("without", TABLE.iloc[:300]), ("with", TABLE)):
        org = FailingOrganisation(Guard("hospital-a", policy(tmp_path / name)), table)
        share = guarded_share(org, request, [], np.random.default_rng(0))
        shares[name] = share
        assert share.shape == (DIM,) and len(Ledger(policy(tmp_path / name).ledger, 2.0, 1e-6)) == 1
    assert "computing marginals round 1 failed" in caplog.text  # said locally only
    assert not np.array_equal(shares["with"], shares["without"])  # the zero vector, noised


def test_a_request_of_the_wrong_length_answers_alike_whether_computing_fails_or_not(tmp_path):
    request, spec = marginals_round()
    request = {**request, "sum.dim": DIM + 997}  # a length the vector cannot have
    replies = []
    for name, table in (("works", TABLE.iloc[:300]), ("fails", TABLE)):
        org = FailingOrganisation(Guard("hospital-a", policy(tmp_path / name)), table)
        replies.append(guarded_share(org, request, [], np.random.default_rng(0)).shape)
    assert replies == [(DIM + 997,), (DIM + 997,)]


def test_a_failed_vote_answers_k_votes_so_the_vote_total_does_not_tell():
    from fedsynth.client.app import stand_in

    spec = NoisySumSpec(dim=12, mu=0.0, min_survivors=2, max_abs=1)
    vote = stand_in({"task": "select", "k": 3}, spec, np.random.default_rng(0))
    assert vote.sum() == 3 and set(np.unique(vote)) == {0, 1}
    assert stand_in({"task": "marginals"}, spec, np.random.default_rng(0)).sum() == 0
