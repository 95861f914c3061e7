"""Schema model and file IO: round trips, domain, and every load-time error message."""

import copy
import json
from pathlib import Path

import pytest

import fedsynth
from fedsynth.common.schema import Column, Schema, SchemaError, load_schema

ADULT_SCHEMA = Path(fedsynth.__file__).parent / "data" / "adult.schema.yaml"

VALID = {
    "name": "people",
    "label": "sex",
    "na_values": ["?"],
    "columns": [
        {"name": "age", "kind": "integer", "lower": 16, "upper": 100, "bins": [16, 30, 65, 100]},
        {"name": "sex", "kind": "categorical", "categories": ["Female", "Male"]},
        {"name": "grade", "kind": "ordinal", "categories": ["low", "high"], "missing": True},
        {"name": "smoker", "kind": "boolean"},
        {"name": "income", "kind": "numeric", "lower": -1.5, "upper": 1e6, "bins": 4,
         "missing": True, "out_of_range": "clip", "decode": "midpoint"},
    ],
}


def with_changes(change) -> dict:
    data = copy.deepcopy(VALID)
    change(data)
    return data


def load_error(data: dict) -> str:
    with pytest.raises(SchemaError) as info:
        Schema.from_dict(data)
    return str(info.value)


# ---------------------------------------------------------------- round trips


def test_bundled_adult_schema_loads():
    schema = load_schema(ADULT_SCHEMA)
    assert schema.name == "adult" and schema.label == "Y" and schema.na_values == ("?",)
    assert len(schema.columns) == 15
    assert schema["age"].edges[0] == 16 and schema["age"].edges[-1] == 100
    assert schema["workclass"].missing and not schema["sex"].missing


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_then_load_gives_the_same_schema(tmp_path, suffix):
    for schema in (Schema.from_dict(VALID), load_schema(ADULT_SCHEMA)):
        path = tmp_path / f"{schema.name}{suffix}"
        schema.save(path)
        assert load_schema(path) == schema
        assert Schema.from_dict(schema.to_dict()) == schema


def test_to_dict_keeps_the_bins_spelling_and_omits_defaults():
    out = Schema.from_dict(VALID).to_dict()
    assert out["columns"][0] == VALID["columns"][0]
    assert out["columns"][4]["bins"] == 4
    assert out["columns"][3] == {"name": "smoker", "kind": "boolean"}
    assert "draft" not in out


def test_numeric_looking_categories_survive_a_yaml_round_trip(tmp_path):
    schema = Schema("codes", (Column("c", "categorical", categories=("01", "1", "yes", "null")),))
    schema.save(tmp_path / "codes.yaml")
    assert load_schema(tmp_path / "codes.yaml")["c"].categories == ("01", "1", "yes", "null")


def test_toml_is_read(tmp_path):
    (tmp_path / "s.toml").write_text(
        'name = "people"\nna_values = ["?"]\n'
        '[[columns]]\nname = "age"\nkind = "integer"\nlower = 16\nupper = 100\nbins = [16, 30, 65, 100]\n'
        '[[columns]]\nname = "sex"\nkind = "categorical"\ncategories = ["Female", "Male"]\n')
    schema = load_schema(tmp_path / "s.toml")
    assert schema.label is None
    assert schema.column_names == ["age", "sex"]
    assert schema["age"] == Schema.from_dict(VALID)["age"]


def test_toml_cannot_be_written(tmp_path):
    with pytest.raises(SchemaError, match="can only write .yaml, .yml or .json"):
        Schema.from_dict(VALID).save(tmp_path / "s.toml")


def test_domain_counts_codes_with_one_extra_for_missing():
    assert Schema.from_dict(VALID).domain() == {"age": 3, "sex": 2, "grade": 3, "smoker": 2,
                                                "income": 5}
    adult = load_schema(ADULT_SCHEMA).domain()
    assert adult["age"] == 13 and adult["education-num"] == 16
    assert adult["workclass"] == 9 and adult["native-country"] == 42


def test_equal_width_bins_span_the_bounds():
    edges = Schema.from_dict(VALID)["income"].edges
    assert list(edges) == [-1.5, 249998.875, 499999.25, 749999.625, 1e6]


def test_columns_built_in_python_are_checked_too():
    with pytest.raises(SchemaError, match="lower .* must be smaller than upper"):
        Column("x", "numeric", lower=2, upper=1, bins=2)
    assert Column("c", "categorical", categories=["a", "b"]).categories == ("a", "b")


# ---------------------------------------------------------------- load-time errors

ERRORS = {
    "unknown column key": (
        lambda d: d["columns"][0].update(lowr=3),
        ["column 'age'", "unknown key 'lowr'", "did you mean 'lower'"]),
    "unknown top-level key": (
        lambda d: d.update(colour="red"),
        ["unknown key 'colour'", "allowed keys are name, label, na_values, draft, columns"]),
    "duplicate column": (
        lambda d: d["columns"].append({"name": "age", "kind": "boolean"}),
        ["column 'age' is defined 2 times (columns #1, #6)", "must be unique"]),
    "duplicate category": (
        lambda d: d["columns"][1]["categories"].append("Male"),
        ["column 'sex'", "category 'Male' is listed more than once"]),
    "lower not below upper": (
        lambda d: d["columns"][0].update(lower=100, upper=16, bins=3),
        ["column 'age'", "lower (100) must be smaller than upper (16)", "fix or swap"]),
    "bins do not cover the bounds": (
        lambda d: d["columns"][0].update(bins=[18, 30, 100]),
        ["column 'age'", "bins must start at lower (16) and end at upper (100)",
         "every allowed value has a bin"]),
    "bins not increasing": (
        lambda d: d["columns"][0].update(bins=[16, 40, 30, 100]),
        ["column 'age'", "strictly increasing; 40 is followed by 30"]),
    "label is not a column": (
        lambda d: d.update(label="income_class"),
        ["label 'income_class' is not a column", "or to null"]),
    "categories missing": (
        lambda d: d["columns"][1].pop("categories"),
        ["column 'sex'", "needs 'categories', the public list of allowed values"]),
    "unknown kind": (
        lambda d: d["columns"][4].update(kind="float"),
        ["column 'income'", "unknown kind 'float'", "did you mean 'numeric'"]),
    "kind missing": (
        lambda d: d["columns"][3].pop("kind"),
        ["column 'smoker'", "'kind' is required"]),
    "key that does not apply to the kind": (
        lambda d: d["columns"][1].update(lower=0),
        ["column 'sex'", "key 'lower' does not apply to a categorical column", "remove it"]),
    "integer bin without an integer": (
        lambda d: d["columns"][0].update(bins=[16, 20.2, 20.8, 100]),
        ["column 'age'", "bin #1 [20.2, 20.8) contains no integer", "merge it"]),
    "fractional bound on an integer column": (
        lambda d: d["columns"][0].update(lower=15.5, bins=3),
        ["column 'age'", "integer bounds; lower is 15.5"]),
    "category that is not text": (
        lambda d: d["columns"][1]["categories"].append(1),
        ["column 'sex'", "category 1 is a int, not text", 'quote it in the schema file ("1")']),
    "category that is also a missing token": (
        lambda d: d["columns"][1]["categories"].append("?"),
        ["column 'sex'", "category '?' is also in na_values", "read as missing"]),
    "bad out_of_range": (
        lambda d: d["columns"][4].update(out_of_range="wrap"),
        ["column 'income'", "out_of_range must be one of error, clip, got 'wrap'"]),
    "bad decode": (
        lambda d: d["columns"][4].update(decode="mean"),
        ["column 'income'", "decode must be one of uniform, midpoint"]),
    "bounds missing": (
        lambda d: d["columns"][4].pop("upper"),
        ["column 'income'", "need 'upper'", "public knowledge"]),
    "bins missing": (
        lambda d: d["columns"][4].pop("bins"),
        ["column 'income'", "need 'bins'"]),
    "bins zero": (
        lambda d: d["columns"][4].update(bins=0),
        ["column 'income'", "bins must be at least 1"]),
    "missing flag not a bool": (
        lambda d: d["columns"][3].update(missing="yes"),
        ["column 'smoker'", "'missing' must be true or false"]),
    "na_values not a list": (
        lambda d: d.update(na_values="?"),
        ["'na_values' must be a list of text tokens"]),
    "no columns": (
        lambda d: d.update(columns=[]),
        ["'columns' must be a non-empty list"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_load_time_error_names_the_column_and_the_fix(case):
    change, expected = ERRORS[case]
    message = load_error(with_changes(change))
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_every_broken_column_is_listed_in_one_error():
    def break_two(d):
        d["columns"][0]["lower"] = 200
        d["columns"][1]["categories"] = []

    with pytest.raises(SchemaError) as info:
        Schema.from_dict(with_changes(break_two))
    assert len(info.value.problems) == 2
    assert "column 'age'" in info.value.problems[0] and "column 'sex'" in info.value.problems[1]


def test_yaml_booleans_as_categories_are_rejected(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ncolumns:\n  - {name: smokes, kind: categorical, categories: [Yes, No]}\n")
    with pytest.raises(SchemaError, match=r"category True is a bool, not text; quote it"):
        load_schema(path)


def test_a_key_written_twice_in_yaml_is_rejected(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ncolumns:\n  - {name: a, kind: integer, lower: 0, upper: 9, lower: 5, bins: 3}\n")
    with pytest.raises(SchemaError, match="key 'lower' appears twice"):
        load_schema(path)


def test_a_key_written_twice_in_json_is_rejected(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(VALID)[:-1] + ', "name": "other"}')
    with pytest.raises(SchemaError, match="key 'name' appears twice"):
        load_schema(path)


def test_unknown_file_type_and_non_mapping_are_rejected(tmp_path):
    with pytest.raises(SchemaError, match="use .yaml, .yml, .json or .toml"):
        load_schema(tmp_path / "s.txt")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SchemaError, match="top level must be a mapping"):
        load_schema(tmp_path / "list.yaml")


def test_a_columns_cached_arrays_are_read_only_for_every_user_of_the_schema():
    """An organisation's warm process keeps its parsed schema for every task: no task may write into it."""
    schema = load_schema(Path(__file__).parent / "data" / "acs_ma2019.schema.yaml")
    codes = Column("code", "integer", lower=0, upper=10, bins=(0, 5, 10), codes=(1, 3, 7))
    arrays = [codes.sorted_codes, codes.code_bins]
    for column in schema.columns:
        if column.kind in ("numeric", "integer"):
            arrays += [column.edges, *column.bin_integers]
            if column.fine is not None:
                arrays += [column.fine_edges, *column.fine_integers]
    assert len(arrays) > 10
    for array in arrays:
        with pytest.raises(ValueError, match="read-only"):
            array[0] = array[0]
