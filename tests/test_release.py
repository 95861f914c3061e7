"""Free resampling from a release: ``Release.load`` / ``sample`` / ``label`` and ``fedsynth sample``.

One release is made once for the module by the job's own code (``server.job.run_job_with``) on
a ``CentralAggregator``: the same rounds, ledger, teacher, student and release writer as a Flower
run, without the simulation engine. Sampling from it must spend nothing: the ledger's bytes
are compared before and after.
"""

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.cli import bundled, main
from fedsynth.client.organisation import Organisation
from fedsynth.common.generator import ORGANISATION, GeneratorSettings
from fedsynth.common.marginals import cells
from fedsynth.common.metrics import all_cliques, mean_tvd
from fedsynth.common.schema import load_schema
from fedsynth.common.teacher import Features, TeacherSettings, build_model, predict_proba, predict_proba_codes
from fedsynth.server.central import CentralAggregator
from fedsynth.server.job import JobConfig, run_job_with
from fedsynth.server.release import Release, ReleaseError
from fedsynth.simulations.split import split_table

SCHEMA = load_schema(bundled("adult.schema.yaml"))
SMALL = GeneratorSettings(rounds=1, per_round=2, fit_iters=100, final_iters=200, score_sample=20_000)
POSITIVE = ">50K"


PROGRESS: list[str] = []  # the release job's progress messages (the coordinator's view)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    table = SCHEMA.read_csv(bundled("adult.csv"))
    parties = split_table(table, 3, "dirichlet:0.5", SCHEMA.label, seed=0)
    orgs = [Organisation(f"org-{i}", lambda _schema, t=t: t, accepts=SCHEMA) for i, t in enumerate(parties)]
    config = JobConfig(
        schema=SCHEMA, parties=3, epsilon=1.0, delta=1e-6, out=tmp_path_factory.mktemp("job") / "release",
        min_survivors=3, generator=SMALL, teacher=TeacherSettings(steps=3),
    )
    return run_job_with(lambda ledger: CentralAggregator(orgs, ledger, seed=0), config, PROGRESS.append)


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_load_reads_the_release_and_summarises_its_privacy(release):
    loaded = Release.load(release.path)
    assert loaded.rows == release.rows and loaded.statement == json.loads(json.dumps(release.statement))
    assert loaded.schema == SCHEMA  # schema.yaml is the job's schema
    privacy = loaded.privacy
    assert privacy["epsilon"] == release.statement["epsilon"] <= 1.0 and privacy["organisations"] == 3
    assert set(privacy["per_phase"]) == {"generator", "teacher"} and privacy["accountant"] in ("rdp", "pld")
    assert set(loaded.labeller) == {"teacher", "student"} and loaded.labels == "sample"
    assert loaded.model().domain == SCHEMA.measured_domain()  # the schema's columns and fine grids, nothing per organisation
    assert loaded.statement["plan"]["generator"]["denoise_fine"] is True  # the refit denoises as the job did


def test_sample_gives_any_number_of_rows_that_keep_the_rules(release):
    loaded = Release.load(release.path)
    for n in (1, 7, 3 * release.rows):
        frame = loaded.sample(n, seed=1)
        assert len(frame) == n and list(frame.columns) == SCHEMA.column_names
    assert SCHEMA.rules and SCHEMA.rule_violations(frame).to_numpy().sum() == 0
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="at least 1"):
            loaded.sample(bad)


def test_sample_is_deterministic_by_seed_across_refits(release):
    first, second = Release.load(release.path), Release.load(release.path)  # two independent refits
    a = first.sample(2_000, seed=11)
    assert a.equals(second.sample(2_000, seed=11))
    assert a.equals(first.sample(2_000, seed=11))  # the cached model gives the same rows again
    assert not a.equals(first.sample(2_000, seed=12))


def test_sample_follows_the_release(release):
    """More rows from the refitted model look like the released rows (one-way shares)."""
    released = SCHEMA.conform(SCHEMA.read_csv(release.path / "synthetic.csv"))
    more = Release.load(release.path).sample(20_000, seed=3)
    for column in ("sex", "relationship", "education", "race"):
        shares = released[column].value_counts(normalize=True)
        again = more[column].value_counts(normalize=True).reindex(shares.index, fill_value=0.0)
        assert np.abs(shares - again).max() < 0.05, column


def test_no_release_file_holds_anything_per_organisation(release):
    """The organisations differ (the Dirichlet label skew: the coordinator's model joined the
    organisation column to the label), yet no file of the release keeps them apart."""
    assert any(re.search(r"organisations differ on (?!no column)", m) for m in PROGRESS)
    names = set(release.statement["organisations"])
    assert len(names) == 3
    for file in release.path.iterdir():  # the organisation column's name, in any file, text or binary
        assert ORGANISATION.encode() not in file.read_bytes(), file.name
    measured = json.loads((release.path / "measurements.json").read_text())
    domain = SCHEMA.measured_domain()
    assert all(set(m["clique"]) <= set(domain) and len(m["counts"]) == cells(domain, tuple(m["clique"])) for m in measured)

    def per_organisation(value) -> list:
        """Every place in privacy.json where a number or a record is attached to one organisation."""
        found = []
        if isinstance(value, dict):
            found += [k for k in value if k in names]
            for v in value.values():
                found += per_organisation(v)
        elif isinstance(value, list):
            if any(v in names for v in value if isinstance(v, str)):
                found += [v for v in value if not isinstance(v, str) or v not in names]  # only names beside names
            for v in value:
                found += per_organisation(v) if isinstance(v, (dict, list)) else []
        return found

    assert per_organisation(release.statement) == []
    assert release.statement["survivors_per_round"] and release.statement["organisations"] == sorted(names)


def test_resampling_draws_from_the_release_distribution(release):
    """The release's rows came from the model ``Release.sample`` refits (``release_model``): more rows
    differ from them, on every 1-way and 2-way marginal, only as two samples of one model do."""
    released = SCHEMA.encode(SCHEMA.read_csv(release.path / "synthetic.csv"))
    loaded = Release.load(release.path)
    more, again = (SCHEMA.encode(loaded.sample(len(released), seed=seed)) for seed in (21, 22))
    domain = SCHEMA.domain()
    for size in (1, 2):
        cliques = all_cliques(domain, size)
        against_release, sampling_alone = mean_tvd(released, more, domain, cliques), mean_tvd(again, more, domain, cliques)
        assert against_release < 1.25 * sampling_alone, (size, against_release, sampling_alone)
        assert against_release < (0.03 if size == 1 else 0.06)


def test_new_rows_are_labelled_by_the_release_student(release, tmp_path):
    loaded = Release.load(release.path)
    frame = loaded.sample(20_000, seed=2)
    features = loaded.features
    proba = predict_proba(loaded.labeller["student"], features.x(SCHEMA.encode(frame)))
    expected = proba[:, SCHEMA[SCHEMA.label].categories.index(POSITIVE)].mean()
    share = (frame[SCHEMA.label] == POSITIVE).mean()
    assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / len(frame)) + 1e-3
    relabelled = loaded.label(frame.drop(columns=[SCHEMA.label]), seed=5)
    assert abs((relabelled[SCHEMA.label] == POSITIVE).mean() - expected) < 0.01
    # Without labeller.pt the labels are the model's own. Their share is the student's (its prior is
    # matched to the model's), but not where the student is surest: the test can tell.
    positive = SCHEMA[SCHEMA.label].categories.index(POSITIVE)
    sure = proba[:, positive] >= 0.5
    assert sure.sum() > 1000
    assert abs((frame[SCHEMA.label][sure] == POSITIVE).mean() - proba[sure, positive].mean()) < 0.03
    bare = tmp_path / "bare"
    shutil.copytree(release.path, bare)
    (bare / "labeller.pt").unlink()
    unlabelled = Release.load(bare)
    assert unlabelled.labeller is None
    own = unlabelled.sample(20_000, seed=2)
    own_proba = predict_proba(loaded.labeller["student"], features.x(SCHEMA.encode(own)))[:, positive]
    own_sure = own_proba >= 0.5
    assert abs((own[SCHEMA.label][own_sure] == POSITIVE).mean() - own_proba[own_sure].mean()) > 0.05
    with pytest.raises(ReleaseError, match="no labeller.pt"):
        unlabelled.label(frame)


def test_sampling_spends_nothing_and_changes_no_file_of_the_release(release, tmp_path):
    before = fingerprint(release.path)
    Release.load(release.path).sample(5_000, seed=4)
    out = tmp_path / "more.parquet"
    assert main(["sample", str(release.path), "--rows", "3000", "--out", str(out), "--seed", "4"]) == 0
    assert fingerprint(release.path) == before  # ledger.jsonl and its head included: no entry, no budget


def test_cli_writes_csv_and_parquet_that_read_back_under_the_schema(release, tmp_path):
    csv, parquet = tmp_path / "more.csv", tmp_path / "more.parquet"
    assert main(["sample", str(release.path), "--rows", "1500", "--out", str(csv), "--seed", "9"]) == 0
    assert main(["sample", str(release.path), "--rows", "1500", "--out", str(parquet), "--seed", "9"]) == 0
    rows = SCHEMA.read_csv(csv)
    assert len(rows) == 1500 and SCHEMA.validate(rows).ok  # rules included
    assert pd.read_parquet(parquet).astype(str).equals(SCHEMA.conform(rows).astype(str))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["more.csv", "more.parquet"]  # no temporary left


def damaged(release: Release, tmp_path: Path, name: str, text: str | None) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(release.path, copy)
    if text is None:
        (copy / name).unlink()
    else:
        (copy / name).write_text(text)
    return copy


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("schema.yaml", None, "missing schema.yaml"),
        ("measurements.json", "[{", "measurements.json: cannot be read as JSON"),
        ("measurements.json", json.dumps([{"clique": ["age"], "sigma": 1.0, "counts": [1, 2]}]),
         "measurement #1 (age) has 2 counts"),
        ("measurements.json", json.dumps([{"clique": ["height"], "sigma": 1.0, "counts": [1]}]),
         "names 'height', not in schema.yaml"),
        ("privacy.json", "{}", "privacy.json: no 'epsilon'"),
        ("privacy.json", json.dumps({"epsilon": 1, "delta": 0, "organisations": 3, "plan": {}, "rows": 5}),
         "privacy.json: 'organisations' is not a list"),
        ("schema.yaml", "name: x\ncolumns: []\n", "schema.yaml: not a valid schema"),
    ],
)
def test_a_damaged_release_is_refused_naming_the_file(release, tmp_path, capsys, name, text, message):
    folder = damaged(release, tmp_path, name, text)
    with pytest.raises(ReleaseError, match=re.escape(message)):
        Release.load(folder)
    out = tmp_path / "more.csv"
    assert main(["sample", str(folder), "--rows", "10", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "--rows", "10", "--out", "{out}"], "no release folder there"),
        (["{release}", "--rows", "0", "--out", "{out}"], "--rows must be at least 1, got 0"),
        (["{release}", "--rows", "-5", "--out", "{out}"], "--rows must be at least 1, got -5"),
        (["{release}", "--rows", "10", "--out", "{tmp}/no/such/folder/x.csv"], "create it first"),
        (["{release}", "--rows", "10", "--out", "{tmp}/x.txt"], "write a .csv or a .parquet file"),
        (["{release}", "--rows", "10", "--out", "{tmp}/taken.csv"], "is a folder"),
    ],
)
def test_cli_errors_exit_2_with_a_message_and_write_nothing(release, tmp_path, capsys, args, message):
    (tmp_path / "taken.csv").mkdir()
    values = {"missing": tmp_path / "nope", "release": release.path, "out": tmp_path / "x.csv", "tmp": tmp_path}
    assert main(["sample", *(a.format(**values) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsynth sample: ") and message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.csv"]


def test_the_student_labels_codes_as_it_labels_one_hot_features(release):
    """``predict_proba_codes`` (no one-hot matrix: how millions of rows are labelled) is the model."""
    loaded = Release.load(release.path)
    codes = SCHEMA.encode(loaded.sample(500, seed=8))
    features = loaded.features
    for model in loaded.labeller.values():  # the logreg teacher and the mlp student
        assert np.allclose(predict_proba_codes(model, features, codes), predict_proba(model, features.x(codes)), atol=1e-6)


LABEL_KINDS = {
    "boolean": {"kind": "boolean"},
    "categorical": {"kind": "categorical", "categories": ["low", "mid", "high"]},
    "ordinal": {"kind": "ordinal", "categories": ["S", "M", "L", "XL"]},
    "integer": {"kind": "integer", "lower": 0, "upper": 40, "bins": 4},
    "numeric": {"kind": "numeric", "lower": 0.0, "upper": 1.0, "bins": 5},
    "datetime": {"kind": "datetime", "lower": "2020-01-01", "upper": "2020-12-31", "bins": 3},
    "boolean with missing": {"kind": "boolean", "missing": True},
}


def labelled_release(tmp_path: Path, label: dict) -> Release:
    """A release whose label column is of kind ``label``, labelled by a real (seeded, untrained)
    student network: what ``label`` does is independent of how the student was trained."""
    schema = load_schema_text(tmp_path, {
        "name": "kinds", "label": "y", "na_values": ["?"],
        "columns": [{"name": "colour", "kind": "categorical", "categories": ["red", "blue"]},
                    {"name": "age", "kind": "integer", "lower": 0, "upper": 99, "bins": 5},
                    {"name": "y", **label}],
        "rules": [{"name": "young are red", "if": {"age": {"max": 9}}, "then": {"colour": {"in": ["red"]}}}],
    })
    release = Release(tmp_path, 0, {"plan": {"labels": "sample"}})
    features = Features(schema.domain(), "y")
    release._cache.update(schema=schema, labeller={"student": build_model(TeacherSettings(model="mlp"), features, 3)})
    return release


def load_schema_text(tmp_path: Path, data: dict):
    path = tmp_path / "schema.yaml"
    path.write_text(json.dumps(data))
    return load_schema(path)


@pytest.mark.parametrize("kind", list(LABEL_KINDS))
def test_label_works_on_every_label_kind_with_or_without_the_label_column(tmp_path, kind):
    release = labelled_release(tmp_path, LABEL_KINDS[kind])
    schema = release.schema
    rows = schema.decode(np.random.default_rng(0).integers(0, [c.n_codes for c in schema.columns], (400, 3)), 1)
    rows = rows[schema.rule_violations(rows).to_numpy().sum(axis=1) == 0]
    without = release.label(rows.drop(columns=["y"]), seed=5)
    with_label = release.label(rows, seed=5)
    assert list(without.columns) == ["colour", "age", "y"] and without.index.equals(rows.index)
    assert without["y"].dtype == rows["y"].dtype  # typed as sample() types it
    assert without["y"].equals(with_label["y"])  # the label is not an input: its value is ignored
    assert schema.validate(without).ok  # every drawn label is a value of the column
    assert without["y"].nunique() > 1  # drawn by the student, not the placeholder


def test_label_without_the_column_ignores_rules_on_the_label(tmp_path):
    """A placeholder label must not break a rule that names the label (here: y false when age >= 60)."""
    release = labelled_release(tmp_path, LABEL_KINDS["boolean"])
    rule = {"name": "old are y", "if": {"age": {"min": 60}}, "then": {"y": {"in": [True]}}}
    data = {**release.schema.to_dict(), "rules": [*release.schema.to_dict()["rules"], rule]}
    release._cache["schema"] = load_schema_text(tmp_path, data)
    frame = pd.DataFrame({"colour": ["blue", "red"], "age": [70, 5]})
    assert len(release.label(frame)) == 2


def test_conditional_sampling_keeps_the_rules_gives_only_the_condition_and_changes_no_file(release, tmp_path):
    before = fingerprint(release.path)
    loaded = Release.load(release.path)
    frame = loaded.sample(3_000, seed=6, where={"relationship": "Wife", "age": 37, "Y": ">50K"})
    assert len(frame) == 3_000 and SCHEMA.rule_violations(frame).to_numpy().sum() == 0
    assert (frame["relationship"] == "Wife").all() and (frame["age"] == 37).all() and (frame[SCHEMA.label] == ">50K").all()
    assert frame["marital-status"].isin(["Married-civ-spouse", "Married-AF-spouse"]).all()  # the rule holds
    assert frame["education"].nunique() > 3  # the other columns still vary
    masters = loaded.sample(500, seed=6, where={"education": "Masters"})
    assert (masters["education-num"] == 14).all()  # the hierarchy follows the condition
    out = tmp_path / "wives.csv"
    args = ["sample", str(release.path), "--rows", "800", "--out", str(out), "--where", "sex=Female", "--where", "age=37"]
    assert main(args) == 0
    written = SCHEMA.read_csv(out)
    assert len(written) == 800 and SCHEMA.validate(written).ok
    assert (written["sex"] == "Female").all() and (written["age"] == "37").all()
    assert fingerprint(release.path) == before  # the ledger and every other file untouched: no budget


def test_conditional_sampling_is_the_model_conditioned_not_a_filter_of_its_rows(release):
    """Rows given relationship=Husband have the marital-status shares of the unconditioned rows
    that are husbands (the schema's rule ties them, so every model links the two columns)."""
    loaded = Release.load(release.path)
    everyone = loaded.sample(30_000, seed=7)
    husbands = everyone[everyone["relationship"] == "Husband"]["marital-status"].value_counts(normalize=True)
    given = loaded.sample(10_000, seed=8, where={"relationship": "Husband"})["marital-status"]
    shares = given.value_counts(normalize=True)
    assert np.abs(husbands - shares.reindex(husbands.index, fill_value=0.0)).max() < 0.03
    overall = everyone["marital-status"].value_counts(normalize=True)
    married = ["Married-civ-spouse", "Married-AF-spouse"]  # the rule's married values
    assert shares.reindex(married, fill_value=0.0).sum() - overall.reindex(married, fill_value=0.0).sum() > 0.2


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (["height=3"], "where height=3: the release has no column 'height'"),
        (["sex=Mle"], "where sex=Mle: 'Mle' is not a value of column 'sex', which takes one of Female, Male"),
        (["age=7"], "where age=7: '7' is not a value of column 'age', which takes a whole number from 16 to 100"),
        (["age=abc"], "'abc' is not a value of column 'age'"),
        (["sex"], "--where sex: write COLUMN=VALUE"),
        (["sex=Male", "sex=Female"], "column 'sex' is given twice"),
    ],
)
def test_a_bad_condition_exits_2_naming_it_and_writes_nothing(release, tmp_path, capsys, where, message):
    out = tmp_path / "x.csv"
    args = ["sample", str(release.path), "--rows", "10", "--out", str(out)]
    assert main(args + [a for w in where for a in ("--where", w)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsynth sample: ") and message in err and "Traceback" not in err
    assert not out.exists()
