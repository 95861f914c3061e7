"""Validation of a table against the schema: every violation kind, strictness, clipping, conform."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedsynth
from fedsynth.common.schema import Schema, SchemaError, load_schema, run_validate

DATA = Path(fedsynth.__file__).parent / "data"


def small_schema(score_out_of_range: str = "clip") -> Schema:
    return Schema.from_dict({
        "name": "small",
        "label": None,
        "na_values": ["?"],
        "columns": [
            {"name": "age", "kind": "integer", "lower": 0, "upper": 120, "bins": [0, 18, 65, 120]},
            {"name": "sex", "kind": "categorical", "categories": ["F", "M"]},
            {"name": "income", "kind": "numeric", "lower": 0, "upper": 1e6, "bins": 4,
             "missing": True},
            {"name": "smoker", "kind": "boolean"},
            {"name": "score", "kind": "integer", "lower": 0, "upper": 10, "bins": 5,
             "out_of_range": score_out_of_range},
            {"name": "region", "kind": "categorical", "categories": ["N", "S"]},
        ],
    })


def messy_frame() -> pd.DataFrame:
    """As read from a CSV: every cell text, "?" already missing or still a token."""
    return pd.DataFrame({
        "age":    ["30",     "abc", "3.5",  None,    "130"],
        "sex":    ["F",      "X",   "M",    "",      "F"],
        "income": ["1000.5", "?",   "-5",   "2e6",   "nan"],
        "smoker": ["true",   "maybe", "0",    "FALSE", "1"],
        "score":  ["5",      "11",  "-1",   "3",     "2"],
        "zip":    ["01234",  "0",   "0",    "0",     "0"],
    }, dtype="str")


def found(report) -> dict:
    return {(v.column, v.problem): (v.count, v.rows) for v in report.violations}


def test_every_violation_is_found_with_counts_and_rows():
    report = small_schema().validate(messy_frame())
    assert found(report) == {
        ("age", "wrong_type"): (2, (1, 2)),
        ("age", "missing_value"): (1, (3,)),
        ("age", "out_of_range"): (1, (4,)),
        ("sex", "unknown_category"): (1, (1,)),
        ("sex", "missing_value"): (1, (3,)),  # a blank cell is missing, here not allowed
        ("income", "out_of_range"): (2, (2, 3)),
        ("income", "wrong_type"): (1, (4,)),
        ("smoker", "wrong_type"): (1, (1,)),
        ("score", "clipped"): (2, (1, 2)),
        ("region", "missing_column"): (1, ()),
        ("zip", "unknown_column"): (1, ()),
    }
    assert not report.ok
    assert [v.problem for v in report.infos] == ["clipped"]


def test_violations_carry_example_values():
    report = small_schema().validate(messy_frame())
    by_key = {(v.column, v.problem): v for v in report.violations}
    assert by_key["age", "wrong_type"].values == ("'abc'", "'3.5'")
    assert by_key["sex", "unknown_category"].values == ("'X'",)
    assert by_key["age", "missing_value"].values == ()


def test_examples_stop_at_five_but_the_count_does_not():
    df = pd.DataFrame({"sex": ["Q"] * 12 + ["F"]})
    schema = Schema.from_dict({"name": "s", "columns": [
        {"name": "sex", "kind": "categorical", "categories": ["F", "M"]}]})
    (violation,) = schema.validate(df).violations
    assert violation.count == 12 and violation.rows == (0, 1, 2, 3, 4)
    assert "rows 0, 1, 2, 3, 4 ..." in str(violation)


def test_report_text_tells_the_user_what_to_do():
    text = str(small_schema().validate(messy_frame()))
    assert "does NOT conform to schema 'small': 10 problem(s) in 5 rows" in text
    assert "0-based positions in the table" in text
    assert "column 'sex', unknown_category: 1 value(s) not among the schema's categories" in text
    assert "add the category to the schema" in text and "map it" in text
    assert "column 'sex', missing_value: 1 missing value(s)" in text
    assert "set missing: true for this column" in text
    assert "declare out_of_range: clip" in text
    assert "[info] column 'score', clipped" in text
    assert "add the column to the data" in text
    assert "drop the column from the data" in text


def test_a_clean_table_gives_an_ok_report():
    df = messy_frame().drop(columns="zip").iloc[[0]].assign(region="S")
    report = small_schema(score_out_of_range="error").validate(df)
    assert report.ok and report.violations == ()
    assert str(report) == "The data conforms to schema 'small' (1 rows)."


def test_strict_validation_raises_with_the_report():
    with pytest.raises(SchemaError) as info:
        small_schema().validate(messy_frame(), strict=True)
    assert info.value.report is not None and len(info.value.report.errors) == 10
    assert "column 'age', wrong_type" in str(info.value)


def test_clip_is_declared_or_it_is_an_error():
    df = pd.DataFrame({"score": ["11", "-1", "4"]})

    def schema(rule):
        return Schema.from_dict({"name": "s", "columns": [
            {"name": "score", "kind": "integer", "lower": 0, "upper": 10, "bins": 5,
             "out_of_range": rule}]})

    clipped = schema("clip").validate(df)
    assert clipped.ok and found(clipped) == {("score", "clipped"): (2, (0, 1))}
    assert schema("clip").conform(df)["score"].tolist() == [10, 0, 4]
    refused = schema("error").validate(df)
    assert not refused.ok and found(refused) == {("score", "out_of_range"): (2, (0, 1))}
    with pytest.raises(SchemaError, match="out_of_range"):
        schema("error").conform(df)


def test_missing_tokens_count_as_missing_in_a_table_built_by_hand():
    schema = Schema.from_dict({"name": "s", "na_values": ["?", "N"], "columns": [
        {"name": "c", "kind": "categorical", "categories": ["a"], "missing": True},
        {"name": "x", "kind": "numeric", "lower": 0, "upper": 1, "bins": 2, "missing": True}]})
    df = pd.DataFrame({"c": ["a", "?", None], "x": ["N", "0.5", None]}, dtype=object)
    assert schema.validate(df).ok
    typed = schema.conform(df)
    assert typed["c"].isna().tolist() == [False, True, True]
    assert typed["x"].isna().tolist() == [True, False, True]


@pytest.mark.parametrize("cell, expected", [
    ("true", True), ("TRUE", True), ("True", True), ("1", True), (" true", True),
    ("false", False), ("False", False), ("0", False), ("yes", True), ("No", False)])
def test_boolean_tokens(cell, expected):
    schema = Schema.from_dict({"name": "s", "columns": [{"name": "b", "kind": "boolean"}]})
    assert schema.conform(pd.DataFrame({"b": [cell]}))["b"].tolist() == [expected]


@pytest.mark.parametrize("cell", ["y", "n", "2", "t", "1.0"])
def test_other_boolean_tokens_are_wrong_types(cell):
    schema = Schema.from_dict({"name": "s", "columns": [{"name": "b", "kind": "boolean"}]})
    assert found(schema.validate(pd.DataFrame({"b": [cell]}))) == {("b", "wrong_type"): (1, (0,))}


def test_blank_cells_are_missing_where_allowed_and_reported_where_not():
    schema = Schema.from_dict({"name": "s", "columns": [
        {"name": "b", "kind": "boolean", "missing": True},
        {"name": "n", "kind": "numeric", "lower": 0, "upper": 1, "bins": 2},
        {"name": "c", "kind": "categorical", "categories": ["", "x"]}]})
    df = pd.DataFrame({"b": ["", " ", "true"], "n": ["0.5", "", "1"], "c": ["", "x", "x"]})
    assert found(schema.validate(df)) == {("n", "missing_value"): (1, (1,))}
    typed = schema.conform(df.assign(n="0.5"))
    assert typed["b"].isna().tolist() == [True, True, False]
    assert typed["c"].tolist() == ["", "x", "x"]  # a listed "" category stays a category


def test_typed_frames_are_checked_too():
    schema = Schema.from_dict({"name": "s", "columns": [
        {"name": "n", "kind": "integer", "lower": 0, "upper": 9, "bins": 3},
        {"name": "code", "kind": "categorical", "categories": ["1", "2"]},
        {"name": "b", "kind": "boolean"}]})
    df = pd.DataFrame({"n": [1.0, 3.5, 5000.0], "code": [1, 2, 3], "b": [True, False, True]})
    assert found(schema.validate(df)) == {
        ("n", "wrong_type"): (1, (1,)),
        ("n", "out_of_range"): (1, (2,)),
        ("code", "unknown_category"): (1, (2,)),
    }


def test_integral_numbers_written_as_floats_are_integers():
    schema = Schema.from_dict({"name": "s", "columns": [
        {"name": "n", "kind": "integer", "lower": -9000, "upper": 9000, "bins": 3}]})
    typed = schema.conform(pd.DataFrame({"n": ["5000.0", "-12", "1e3"]}))
    assert typed["n"].dtype == np.int64 and typed["n"].tolist() == [5000, -12, 1000]


def test_a_duplicated_column_is_reported():
    df = pd.DataFrame([["F", "M"]], columns=["sex", "sex"])
    schema = Schema.from_dict({"name": "s", "columns": [
        {"name": "sex", "kind": "categorical", "categories": ["F", "M"]}]})
    assert found(schema.validate(df)) == {("sex", "duplicate_column"): (2, ())}


def test_a_misspelt_column_gets_a_suggestion():
    schema = Schema.from_dict({"name": "s", "columns": [
        {"name": "age", "kind": "integer", "lower": 0, "upper": 9, "bins": 3}]})
    text = str(schema.validate(pd.DataFrame({"Age": ["1"]})))
    assert "did you mean 'Age'?" in text


def test_conform_returns_types_fixed_by_the_schema():
    df = messy_frame().drop(columns="zip").iloc[[0, 0]].assign(region=["S", "N"])
    df.loc[:, "income"] = ["?", "10"]
    typed = small_schema().conform(df)
    assert list(typed.columns) == small_schema().column_names
    assert typed["age"].dtype == np.int64
    assert typed["sex"].dtype == pd.CategoricalDtype(["F", "M"])
    assert typed["income"].dtype == np.float64 and np.isnan(typed["income"].iloc[0])
    assert typed["smoker"].dtype == bool
    assert typed["region"].tolist() == ["S", "N"]


def test_bundled_adult_data_validates_with_zero_violations():
    schema = load_schema(DATA / "adult.schema.yaml")
    df = schema.read_csv(DATA / "adult.csv")
    report = schema.validate(df)
    assert len(df) == 5000 and report.violations == ()
    typed = schema.conform(df)
    assert typed["workclass"].isna().sum() == (df["workclass"].isna()).sum() > 0


def test_read_csv_reads_text_and_only_the_declared_missing_tokens(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("c,x\nNA, 1\n?,2\n,3\n")
    schema = Schema.from_dict({"name": "s", "na_values": ["?"], "columns": [
        {"name": "c", "kind": "categorical", "categories": ["NA"], "missing": True},
        {"name": "x", "kind": "categorical", "categories": ["1", "2", "3"]}]})
    df = schema.read_csv(path)
    assert df["c"].tolist()[0] == "NA" and pd.isna(df["c"].iloc[1]) and df["c"].iloc[2] == ""
    assert df["x"].tolist() == ["1", "2", "3"]


def test_run_validate_exit_codes(tmp_path, capsys):
    assert run_validate(DATA / "adult.csv", DATA / "adult.schema.yaml") == 0
    assert "conforms to schema 'adult' (5000 rows)" in capsys.readouterr().out
    broken = tmp_path / "broken.csv"
    broken.write_text((DATA / "adult.csv").read_text().replace("Private", "Privat", 3))
    assert run_validate(broken, DATA / "adult.schema.yaml") == 1
    out = capsys.readouterr().out
    assert "column 'workclass', unknown_category: 3 value(s)" in out and "'Privat'" in out
    assert run_validate(broken, tmp_path / "nowhere.yaml") == 2
    assert "nowhere.yaml" in capsys.readouterr().err


def test_conforming_rows_are_the_rows_no_violation_names():
    schema = small_schema()
    frame = messy_frame().drop(columns=["zip"]).assign(region="N")
    assert schema.conforming_rows(frame).tolist() == [True, False, False, False, False]
    clean = frame.iloc[[0]]
    assert schema.conforming_rows(pd.concat([clean, clean.assign(score="11")])).tolist() == [True, True]  # clipped: kept
    assert schema.conforming_rows(pd.concat([clean, clean.assign(income="?")])).tolist() == [True, True]  # missing allowed
    # A table-level problem (a missing or an unknown column) leaves no row.
    assert not schema.conforming_rows(messy_frame()).any()
    assert not schema.conforming_rows(clean.assign(zip="0")).any()


def test_a_row_that_breaks_a_rule_is_left_out_on_its_own():
    schema = load_schema(DATA / "adult.schema.yaml")
    table = schema.read_csv(DATA / "adult.csv").iloc[:50].reset_index(drop=True)
    assert schema.conforming_rows(table).all()
    broken = table.copy()
    broken.loc[3, "education-num"] = str(int(broken.loc[3, "education-num"]) % 16 + 1)  # breaks education-level
    assert schema.conforming_rows(broken).tolist() == [i != 3 for i in range(50)]
