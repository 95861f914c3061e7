"""Drafting a schema from data: inference, the privacy banner, and the CLI entry point."""

import json
from pathlib import Path

import pandas as pd

import fedsynth
from fedsynth.common.schema import draft_schema, draft_warning, load_schema, run_draft

DATA = Path(fedsynth.__file__).parent / "data"


def adult_text() -> pd.DataFrame:
    return pd.read_csv(DATA / "adult.csv", dtype=str, na_values=["?"], keep_default_na=False)


def test_draft_of_the_bundled_data_validates_that_data():
    df = adult_text()
    draft = draft_schema(df, "adult", na_values=["?"])
    assert draft.draft and draft.label is None and draft.na_values == ("?",)
    assert draft.validate(df).violations == ()
    assert draft["age"].kind == "integer"
    assert (draft["age"].lower, draft["age"].upper) == (df["age"].astype(int).min(),
                                                        df["age"].astype(int).max())
    assert draft["workclass"].missing and not draft["sex"].missing
    assert set(draft["workclass"].categories) == set(df["workclass"].dropna())


def test_draft_infers_kinds_from_the_cells():
    df = pd.DataFrame({
        "flag": ["true", "False", "TRUE", "?"],
        "code": ["3", "1", "10", "1"],
        "count": [str(v) for v in (0, 5, 17, 250)],
        "score": ["0.5", "1e2", "-3", "7"],
        "city": ["b", "a", "c", "a"],
        "empty": ["?", "?", "?", "?"],
        "constant": ["1.5", "1.5", "1.5", "1.5"],
    }, dtype=str)
    draft = draft_schema(df, "t", na_values=["?"])
    assert [c.kind for c in draft.columns] == [
        "boolean", "categorical", "integer", "numeric", "categorical", "categorical", "numeric"]
    assert draft["flag"].missing and not draft["code"].missing
    assert draft["code"].categories == ("1", "3", "10")  # integer codes, in numeric order
    assert (draft["count"].lower, draft["count"].upper, draft["count"].bins) == (0, 250, 10)  # a count, not 4 codes
    assert draft["score"].lower == -3.0 and draft["score"].upper == 100.0
    assert draft["city"].categories == ("a", "b", "c")
    assert draft["constant"].upper > draft["constant"].lower
    assert draft.validate(df).ok


def test_integers_with_many_values_draft_as_binned_integers():
    df = pd.DataFrame({"n": [str(v) for v in range(100, 150)]})
    column = draft_schema(df, "t")["n"]
    assert (column.kind, column.lower, column.upper, column.bins) == ("integer", 100, 149, 10)


def test_the_banner_says_why_a_draft_is_private():
    banner = draft_warning()
    assert len(banner.splitlines()) >= 8
    for fragment in ("DRAFT", "PRIVATE DATA", "oldest", "rare category", "one single person",
                     "public knowledge", "draft: true"):
        assert fragment in banner


def test_run_draft_writes_yaml_with_the_banner_and_prints_it(tmp_path, capsys):
    out = tmp_path / "adult.draft.yaml"
    assert run_draft(DATA / "adult.csv", out, ["?"]) == 0
    printed = capsys.readouterr()
    assert draft_warning() in printed.err
    assert "Drafted schema 'adult' from 5000 rows: 15 columns (" in printed.out
    assert str(out) in printed.out
    text = out.read_text()
    assert text.startswith("# " + draft_warning().splitlines()[0])
    schema = load_schema(out)
    assert schema.draft and schema.validate(schema.read_csv(DATA / "adult.csv")).ok


def test_run_draft_writes_json(tmp_path, capsys):
    out = tmp_path / "adult.draft.json"
    assert run_draft(DATA / "adult.csv", out, ["?"]) == 0
    assert json.loads(out.read_text())["draft"] is True
    assert draft_warning() in capsys.readouterr().err


def test_run_draft_without_output_prints_the_schema_to_stdout(capsys):
    assert run_draft(DATA / "adult.csv", None, ["?"]) == 0
    printed = capsys.readouterr()
    assert "name: adult" in printed.out and "draft: true" in printed.out
    assert draft_warning() in printed.err and "Drafted schema" in printed.err


def test_run_draft_never_overwrites_a_file(tmp_path, capsys):
    out = tmp_path / "reviewed.yaml"
    out.write_text("reviewed\n")
    assert run_draft(DATA / "adult.csv", out, ["?"]) == 2
    assert out.read_text() == "reviewed\n"
    assert "not overwritten" in capsys.readouterr().err


def test_run_draft_reports_unreadable_input(tmp_path, capsys):
    assert run_draft(tmp_path / "missing.csv", tmp_path / "out.yaml", None) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert not (tmp_path / "out.yaml").exists()


def test_draft_guesses_booleans_in_each_spelling():
    df = pd.DataFrame({
        "zero_one": ["0", "1", "1", "0"], "yes_no": ["Yes", "no", "YES", "No"], "true_false": ["true", "False", "true", "true"],
        "one_value": ["1", "1", "1", "1"], "mixed": ["yes", "0", "no", "1"],
    }, dtype=str)
    draft = draft_schema(df, "t")
    assert [c.kind for c in draft.columns] == ["boolean", "boolean", "boolean", "categorical", "categorical"]
    assert draft.validate(df).ok
    assert draft.conform(df)["yes_no"].tolist() == [True, False, True, False]


def test_draft_gives_counts_integer_bounds_and_bins_not_the_observed_values():
    children = draft_schema(pd.DataFrame({"children": ["0", "2", "1", "0", "5", "3", "0", "7"]}), "t")
    visits = draft_schema(pd.DataFrame({"visits": [str(v) for v in range(1, 40, 3)]}), "t")  # 13 values
    column = children["children"]
    assert (column.kind, column.lower, column.upper, column.bins) == ("integer", 0, 7, 8)  # 6 values from 0: a count
    assert (visits["visits"].kind, visits["visits"].lower, visits["visits"].upper) == ("integer", 1, 37)
    assert visits["visits"].bins == 10
    assert children.validate(pd.DataFrame({"children": ["4", "6"]})).ok  # values the rows did not show fit


def test_draft_guesses_ordinal_scales_where_evident():
    df = pd.DataFrame({
        "rating": ["3", "1", "5", "2", "4", "5"],  # a run 1..5: a rating
        "risk": ["High", "low", "Medium", "low", "High", "low"],  # a well-known scale, as written
        "region": ["3", "1", "10", "1", "3", "10"],  # codes with gaps: categorical
        "pain": ["mild", "severe", "none", "mild", "moderate", "none"],
    }, dtype=str)
    draft = draft_schema(df, "t")
    assert draft["rating"].kind == "ordinal" and draft["rating"].categories == ("1", "2", "3", "4", "5")
    assert draft["risk"].kind == "ordinal" and draft["risk"].categories == ("low", "Medium", "High")
    assert draft["region"].kind == "categorical" and draft["region"].categories == ("1", "3", "10")
    assert draft["pain"].categories == ("none", "mild", "moderate", "severe")
    assert draft.validate(df).ok
