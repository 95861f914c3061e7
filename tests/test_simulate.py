"""`fedsynth simulate` end to end: a small non-IID federation in Flower's simulation engine."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dp_accounting import ComposedDpEvent

from fedsynth.cli import bundled, main
from fedsynth.common.accounting import CombinedAccountant, Ledger, gaussian_event
from fedsynth.common.accounting import BudgetError
from fedsynth.common.generator import ORGANISATION, GeneratorSettings
from fedsynth.common.schema import load_schema
from fedsynth.common.teacher import Features, TeacherSettings, predict_proba
from fedsynth.server.job import JobConfig, parse_budget_split, plan_job
from fedsynth.server.release import load_labeller
from fedsynth.simulations.main import simulate
from fedsynth.simulations.split import SplitError, split_table

SCHEMA = load_schema(bundled("adult.schema.yaml"))
SMALL = GeneratorSettings(rounds=1, per_round=2, fit_iters=100, final_iters=200, score_sample=20_000)
TEACHER_STEPS = 3


@pytest.fixture(scope="module")
def table():
    return SCHEMA.read_csv(bundled("adult.csv"))


@pytest.fixture(scope="module")
def release(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "release"
    parties = split_table(table, 3, "dirichlet:0.5", SCHEMA.label, seed=0)
    config = JobConfig(
        schema=SCHEMA, parties=3, epsilon=1.0, delta=1e-6, out=out, min_survivors=3, generator=SMALL,
        teacher=TeacherSettings(steps=TEACHER_STEPS),
    )
    return simulate(config, parties, progress=lambda _m: None)


def test_release_is_complete(release):
    names = sorted(p.name for p in release.path.iterdir())
    assert names == sorted(
        ["synthetic.csv", "synthetic.parquet", "privacy.json", "ledger.jsonl", "ledger.jsonl.head", "measurements.json",
         "schema.yaml", "labeller.pt", "job.toml"]
    )
    assert not release.path.with_name("release.partial").exists()


def test_privacy_json_epsilon_is_recomputed_from_the_ledger(release):
    statement = json.loads((release.path / "privacy.json").read_text())
    ledger = Ledger(release.path / "ledger.jsonl", cap_epsilon=1.0, delta=1e-6)
    recomputed = CombinedAccountant().compose(ComposedDpEvent([e.dp_event() for e in ledger.entries]))
    assert statement["epsilon"] == pytest.approx(recomputed.epsilon(1e-6).epsilon, rel=1e-9)
    # spent (the ledger's events) is the plan's (every organisation survived), up to the last bit of
    # the float: the 1-way round's noise is its scale times sigma in one, squared in the other
    assert statement["epsilon"] <= statement["plan"]["epsilon_planned"] * (1 + 1e-12) and statement["plan"]["epsilon_planned"] <= 1.0
    assert statement["delta"] == pytest.approx(1e-6 + statement["delta_noise_tail"])  # no graph term: every graph is safe
    assert "delta_graph_failure" not in statement
    assert "consistency stage" in statement["trust"]["secure_aggregation"]
    # 1-way round, the organisations' profile, one selection round (votes, then scores), one
    # measurement round, then the teacher's DP-SGD steps; the student's distillation and the
    # labelling add no event (post-processing).
    assert [e["mechanism"].split()[0] for e in statement["events"]] == [
        "1-way", "profile", "votes", "scores", "round"
    ] + ["DP-SGD"] * TEACHER_STEPS
    assert set(statement["per_phase"]) == {"generator", "teacher"}
    assert "masks from a ChaCha20 stream" in statement["trust"]["secure_aggregation"]  # read from the code run
    assert statement["plan"]["labels"] == "sample" and statement["plan"]["budget_split"] == {
        "generator": 0.7, "teacher": 0.3}
    assert all(s == ["party-0", "party-1", "party-2"] for s in statement["survivors_per_round"].values())
    assert statement["libraries"]["flwr"] == "1.41.0"


def test_synthetic_rows_conform_to_the_schema_and_keep_its_rules(release):
    synthetic = SCHEMA.read_csv(release.path / "synthetic.csv")
    assert SCHEMA.rules and SCHEMA.validate(synthetic).ok  # validation includes every rule
    assert SCHEMA.rule_violations(SCHEMA.conform(synthetic)).to_numpy().sum() == 0
    assert list(synthetic.columns) == SCHEMA.column_names
    assert 4_500 < len(synthetic) < 5_500  # the noisy count of 5,000 rows, paid for by the 1-way round
    parquet = pd.read_parquet(release.path / "synthetic.parquet")
    assert len(parquet) == len(synthetic)


def test_release_labels_come_from_the_released_student(release):
    features = Features(SCHEMA.domain(), "Y")
    models = load_labeller(release.path, features)
    codes = SCHEMA.encode(SCHEMA.read_csv(release.path / "synthetic.csv"))
    proba = predict_proba(models["student"], features.x(codes))[:, 1]
    labels = codes[:, list(SCHEMA.domain()).index("Y")]
    # Drawn from the student's probabilities: in each half (by probability) the share of >50K
    # labels is the mean probability there, within 4 standard errors.
    halves = [proba > np.median(proba), proba <= np.median(proba)]
    for rows in halves:
        p = proba[rows]
        assert abs(labels[rows].mean() - p.mean()) < 4 * np.sqrt(np.mean(p * (1 - p)) / rows.sum()) + 1e-3
    assert proba[halves[0]].mean() > proba[halves[1]].mean()


def test_generator_labels_train_no_teacher_and_spend_everything_on_the_generator():
    base = JobConfig(schema=SCHEMA, parties=3, epsilon=1.0, delta=1e-6, out=Path("unused"), min_survivors=3)
    alone = plan_job(replace(base, labels="generator"))
    shared = plan_job(base)
    assert alone.teacher is None and shared.teacher is not None
    assert alone.generator.sigma < shared.generator.sigma  # the whole budget buys less noise
    assert alone.epsilon_planned <= 1.0 and shared.epsilon_planned <= 1.0


def test_budget_split_is_parsed_and_checked():
    assert parse_budget_split("generator=0.6, teacher=0.4") == {"generator": 0.6, "teacher": 0.4}
    with pytest.raises(BudgetError, match="phases are generator, teacher"):
        parse_budget_split("generator=0.6,labeller=0.4")
    with pytest.raises(BudgetError, match="not PHASE=SHARE"):
        parse_budget_split("generator")


def test_labels_without_a_label_column_are_refused(tmp_path, capsys):
    unlabelled = tmp_path / "schema.yaml"
    unlabelled.write_text(bundled("adult.schema.yaml").read_text().replace("label: Y", "label: null"))
    code = main(["simulate", "--schema", str(unlabelled), "--labels", "sample", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "names no label column" in err and "labels 'generator'" in err
    assert not (tmp_path / "out").exists()


def test_measurements_are_what_the_coordinator_measured_of_the_schemas_columns(release):
    measured = json.loads((release.path / "measurements.json").read_text())
    mechanisms = [e["mechanism"] for e in json.loads((release.path / "privacy.json").read_text())["events"]]
    assert any("profile" in m for m in mechanisms)  # the organisations were profiled, paid for ...
    assert all(ORGANISATION not in m["clique"] for m in measured)  # ... and no block of theirs is published
    assert len(measured) == len(SCHEMA.measured_domain()) + 2  # the 1-way marginals, fine grids, one round of two
    assert [m["clique"] for m in measured[:3]] == [["age"], ["workclass"], ["fnlwgt"]]
    assert all(m["sigma"] > 0 for m in measured)


def test_a_job_past_the_federation_cap_is_refused_before_any_round(tmp_path, capsys):
    ledger_path = tmp_path / "federation.jsonl"
    earlier = Ledger(ledger_path, cap_epsilon=1.0, delta=1e-6)
    earlier.append("earlier job", "test", gaussian_event(4.5))
    assert 0.9 < earlier.epsilon().epsilon < 1.0  # room left, but not for a 0.5 job
    before = ledger_path.read_bytes()
    code = main(["simulate", "--epsilon", "0.5", "--ledger", str(ledger_path), "--cap", "1",
                 "--delta", "1e-6", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "cap" in err and "nothing was released" in err
    assert "split" not in err  # refused before the data was even split
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    assert ledger_path.read_bytes() == before


def test_an_unreachable_budget_is_refused_before_any_round(tmp_path, capsys):
    code = main(["simulate", "--epsilon", "1e-5", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "nothing was released" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_table_that_breaks_the_schema_is_refused_naming_the_column(tmp_path, capsys, table):
    bad = table.copy()
    bad.loc[7, "race"] = "Martian"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    code = main(["simulate", "--data", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "race" in err and "Martian" in err
    assert not (tmp_path / "out").exists()


def test_dirichlet_split_skews_labels_and_keeps_every_row(table):
    parties = split_table(table, 5, "dirichlet:0.5", "Y", seed=0)
    assert sum(len(p) for p in parties) == len(table)
    shares = [np.mean(p["Y"] == ">50K") for p in parties if len(p)]
    assert max(shares) - min(shares) > 0.2  # far from the IID share of ~0.24 everywhere
    iid = split_table(table, 5, "iid", "Y", seed=0)
    iid_shares = [np.mean(p["Y"] == ">50K") for p in iid]
    assert max(iid_shares) - min(iid_shares) < 0.05


def test_by_column_split_keeps_each_value_in_one_party(table):
    parties = split_table(table, 3, "by-column:race", None, seed=0)
    owners = {v: [i for i, p in enumerate(parties) if (p["race"] == v).any()] for v in table["race"].unique()}
    assert all(len(o) == 1 for o in owners.values())


def test_by_column_split_shares_each_value_among_a_multiple_of_parties(table):
    values = table["race"].nunique()
    parties = split_table(table, 3 * values, "by-column:race", None, seed=0)
    assert len(parties) == 3 * values
    assert sorted(pd.concat(parties)["fnlwgt"]) == sorted(table["fnlwgt"])  # every row once
    assert all(p["race"].nunique() == 1 for p in parties)  # each organisation in one value
    for value, size in table["race"].value_counts().items():
        holders = [len(p) for p in parties if p["race"].iloc[0] == value]
        assert len(holders) == 3 and max(holders) - min(holders) <= 1  # evenly among 3


def test_by_column_shared_split_is_seeded(table):
    values = table["race"].nunique()
    first, again, other = (split_table(table, 2 * values, "by-column:race", None, seed=s) for s in (0, 0, 1))
    assert all(a.equals(b) for a, b in zip(first, again))
    assert not all(a.equals(b) for a, b in zip(first, other))


def test_by_column_split_refuses_parties_not_a_multiple_of_the_values_and_says_what_works(table):
    values = table["race"].nunique()
    with pytest.raises(SplitError) as err:
        split_table(table, 2 * values + 1, "by-column:race", None, seed=0)
    assert f"at most {values} parties" in str(err.value) and f"{2 * values}, {3 * values}" in str(err.value)
    assert "'race'" in str(err.value)
