"""Data files: Parquet by suffix (typed cells read as a CSV's text), and blank cells in drafts."""

from pathlib import Path

import pandas as pd

import fedsynth
from fedsynth.cli import main
from fedsynth.common.schema import load_schema, run_draft

DATA = Path(fedsynth.__file__).parent / "data"


def test_a_good_parquet_file_runs_through_schema_validate(tmp_path, capsys):
    schema = load_schema(DATA / "adult.schema.yaml")
    csv = schema.read_csv(DATA / "adult.csv")
    typed = csv.assign(age=csv["age"].astype("int64"), **{"hours-per-week": csv["hours-per-week"].astype(float)})
    typed.to_parquet(tmp_path / "adult.parquet", index=False)
    schema_path = str(DATA / "adult.schema.yaml")
    assert main(["schema", "validate", str(tmp_path / "adult.parquet"), "--schema", schema_path]) == 0
    assert "conforms to schema 'adult' (5000 rows)" in capsys.readouterr().out
    read = schema.read_csv(tmp_path / "adult.parquet")
    assert read["hours-per-week"].iloc[0] == "40.0"  # a float cell reads as a CSV's "40.0" would
    same = read.drop(columns="hours-per-week").fillna("?")
    pd.testing.assert_frame_equal(same, csv.drop(columns="hours-per-week").fillna("?").astype(object))
    assert (schema.encode(read) == schema.encode(csv)).all()


def test_parquet_nulls_timestamps_and_bad_values_are_reported_like_a_csvs(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(
        "name: s\ncolumns:\n"
        "  - {name: n, kind: integer, lower: 0, upper: 10, bins: 2, missing: true}\n"
        "  - {name: d, kind: datetime, lower: 2020-01-01, upper: 2020-12-31, bins: 30D}\n")
    pd.DataFrame({"n": pd.array([1, None, 12], dtype="Int64"),
                  "d": pd.to_datetime(["2020-01-05", "2020-06-01", "2021-02-01"])}).to_parquet(tmp_path / "t.parquet")
    assert main(["schema", "validate", str(tmp_path / "t.parquet"), "--schema", str(tmp_path / "s.yaml")]) == 1
    out = capsys.readouterr().out
    assert "column 'n', out_of_range: 1 value(s) outside [0, 10]; rows 2; values '12'" in out
    assert "column 'd', out_of_range: 1 value(s) outside [2020-01-01, 2020-12-31]; rows 2" in out


def test_a_draft_says_loudly_that_blank_cells_were_read_as_missing(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("a,b\n1,x\n,y\n3,z\n")
    assert run_draft(tmp_path / "t.csv", tmp_path / "d.yaml") == 0
    assert "NOTE: blank cells found in column(s) a; they were read as MISSING" in capsys.readouterr().err
    assert load_schema(tmp_path / "d.yaml")["a"].missing
