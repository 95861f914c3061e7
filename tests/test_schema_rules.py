"""Structural rules and code lists: load-time errors, JSON round trips, per-row violations,
rule-abiding sampling, code-list and hierarchy-consistent decoding, and the real ACS files."""

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.common.schema import Hierarchy, Implication, Schema, SchemaError, load_schema, run_validate

ACS_SCHEMA = Path(__file__).parent / "data" / "acs_ma2019.schema.yaml"
ACS = Path(__file__).resolve().parents[2] / "shared" / "data" / "acs"  # shared/ sits beside the clone

PEOPLE = {
    "name": "people",
    "label": None,
    "na_values": ["N"],
    "columns": [
        {"name": "age", "kind": "integer", "lower": 0, "upper": 99, "bins": [0, 10, 20, 99]},
        {"name": "married", "kind": "categorical", "categories": ["yes", "no"], "missing": True},
        {"name": "kids", "kind": "integer", "lower": 0, "upper": 9, "bins": [0, 1, 9], "missing": True},
        {"name": "family", "kind": "integer", "lower": 1, "upper": 10, "bins": [1, 2, 10],
         "missing": True},
        {"name": "sector", "kind": "categorical", "categories": ["A", "B"], "missing": True},
        {"name": "job", "kind": "integer", "lower": 100, "upper": 499, "bins": [100, 300, 499],
         "codes": [100, 110, 280, 290, 300, 310, 480], "missing": True},
    ],
    "rules": [
        {"name": "young-not-married", "if": {"age": {"max": 14}}, "then": {"married": "missing"}},
        {"name": "adult-marital-status", "if": {"age": {"min": 15}}, "then": {"married": "present"}},
        {"name": "kids-in-family", "if": {"kids": "present", "family": "present"},
         "then": {"kids": {"less_than": "family"}}},
        {"name": "job-in-sector", "parent": "sector", "child": "job",
         "map": {"A": {"min": 100, "max": 290}, "B": {"min": 300, "max": 499}}},
        {"name": "job-iff-sector", "if": {"job": "missing"}, "then": {"sector": "missing"}},
    ],
}


def people(change=None) -> dict:
    data = copy.deepcopy(PEOPLE)
    if change:
        change(data)
    return data


def load_error(data: dict) -> str:
    with pytest.raises(SchemaError) as info:
        Schema.from_dict(data)
    return str(info.value)


def with_rule(rule: dict):
    return lambda d: d["rules"].append(rule)


def typed(schema: Schema, rows: list[dict]) -> pd.DataFrame:
    """A typed frame (as Schema.decode returns) from hand-written rows; "N" = missing.

    Conformed by the same columns without the rules, so that rows may break them.
    """
    text = pd.DataFrame([{c: str(row.get(c, "N")) for c in schema.column_names} for row in rows])
    return Schema(schema.name, schema.columns, na_values=schema.na_values).conform(text)


# ---------------------------------------------------------------- load-time errors

RULE_ERRORS = {
    "unknown column": (with_rule({"name": "r", "if": {"agee": {"max": 3}}, "then": {"married": "missing"}}),
                       ["rule 'r': unknown column 'agee'", "did you mean 'age'?"]),
    "unknown category": (with_rule({"name": "r", "if": {"age": {"max": 3}},
                                    "then": {"married": {"in": ["widowed"]}}}),
                         ["rule 'r': column 'married': category 'widowed' is not among",
                          "['yes', 'no']"]),
    "bound outside range": (with_rule({"name": "r", "if": {"age": {"max": 140}},
                                       "then": {"married": "missing"}}),
                            ["rule 'r': column 'age': max 140 lies outside the column's range [0, 99]"]),
    "unknown rule key": (with_rule({"name": "r", "iff": {"age": {"max": 3}}, "then": {"married": "missing"}}),
                         ["rule 'r': unknown key 'iff' (did you mean 'if'?)", "needs 'if'"]),
    "unknown condition key": (with_rule({"name": "r", "if": {"age": {"mx": 3}}, "then": {"married": "missing"}}),
                              ["rule 'r', 'if', column 'age': unknown key 'mx' (did you mean 'max'?)"]),
    "bad condition": (with_rule({"name": "r", "if": {"age": {"max": 3}}, "then": {"married": "absent"}}),
                      ["rule 'r', 'then', column 'married': a condition is missing, present, or a "
                       "mapping", "got 'absent'"]),
    "missing on a column without missing values": (
        with_rule({"name": "r", "if": {"age": "missing"}, "then": {"married": "missing"}}),
        ["rule 'r': column 'age' never has missing values (missing: false)"]),
    "min on a category column": (with_rule({"name": "r", "if": {"married": {"min": 1}}, "then": {"age": {"max": 3}}}),
                                 ["rule 'r': column 'married': min/max/less_than apply to numeric"]),
    "unquoted category": (with_rule({"name": "r", "if": {"married": {"in": [1]}}, "then": {"age": {"max": 3}}}),
                          ["rule 'r': column 'married': category 1 is a int, not text"]),
    "value not in codes": (with_rule({"name": "r", "if": {"job": {"in": [120]}}, "then": {"age": {"min": 16}}}),
                           ["rule 'r': column 'job': value 120 is not in the column's list of codes"]),
    "min above max": (with_rule({"name": "r", "if": {"age": {"min": 50, "max": 40}}, "then": {"married": "present"}}),
                      ["rule 'r': column 'age': min 50 is above max 40; swap them"]),
    "duplicate name": (with_rule({"name": "young-not-married", "if": {"age": {"max": 3}},
                                  "then": {"married": "missing"}}),
                       ["rule 'young-not-married' is defined 2 times"]),
    "overlapping hierarchy": (lambda d: d["rules"][3]["map"].update({"B": {"min": 290, "max": 499}}),
                              ["rule 'job-in-sector': the 'job' values of sector 'A'", "and 'B'",
                               "overlap"]),
    "hierarchy key not a category": (lambda d: d["rules"][3]["map"].update({"C": {"min": 300, "max": 310}}),
                                     ["rule 'job-in-sector': map entry 'C' is not a category of 'sector'"]),
    "hierarchy with missing": (lambda d: d["rules"][3]["map"].update({"B": "missing"}),
                               ["rule 'job-in-sector', map entry 'B': use in/min/max"]),
    "less_than a category": (with_rule({"name": "r", "if": {"age": {"less_than": "married"}},
                                        "then": {"married": "missing"}}),
                             ["rule 'r': column 'age': less_than needs another numeric or integer column"]),
    "rules not a list": (lambda d: d.update(rules={"name": "r"}), ["'rules' must be a list of rule mappings"]),
    "code outside bounds": (lambda d: d["columns"][5].update(codes=[100, 300, 500]),
                            ["column 'job': codes [500] lie outside [100, 499]"]),
    "bin without a code": (lambda d: d["columns"][5].update(codes=[100, 110]),
                           ["column 'job': bin #1 [300, 499] contains none of the listed codes"]),
    "duplicate code": (lambda d: d["columns"][5].update(codes=[100, 100, 300]),
                       ["column 'job': code 100 is listed more than once"]),
    "codes on a categorical column": (lambda d: d["columns"][1].update(codes=[1]),
                                      ["column 'married': key 'codes' does not apply to a categorical"]),
}


@pytest.mark.parametrize("case", sorted(RULE_ERRORS))
def test_rule_errors_name_the_rule_the_column_and_the_fix(case):
    change, expected = RULE_ERRORS[case]
    message = load_error(people(change))
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_syntax_and_column_errors_of_several_rules_come_in_one_error():
    def break_rules(d):
        d["rules"][0]["then"] = {"married": "absent"}
        d["rules"][1]["if"] = {"agee": {"min": 15}}

    with pytest.raises(SchemaError) as info:
        Schema.from_dict(people(break_rules))
    assert len(info.value.problems) == 2
    assert "got 'absent'" in info.value.problems[0] and "'agee'" in info.value.problems[1]


# ---------------------------------------------------------------- round trips


def test_rules_round_trip_through_json_and_yaml(tmp_path):
    schema = Schema.from_dict(PEOPLE)
    assert [type(rule) for rule in schema.rules] == [Implication] * 3 + [Hierarchy, Implication]
    assert [rule.name for rule in schema.rules] == [rule["name"] for rule in PEOPLE["rules"]]
    assert Schema.from_dict(json.loads(schema.dumps("json"))) == schema
    assert schema.to_dict()["rules"] == PEOPLE["rules"]
    assert schema.to_dict()["columns"][5]["codes"] == PEOPLE["columns"][5]["codes"]
    schema.save(tmp_path / "people.yaml")
    assert load_schema(tmp_path / "people.yaml") == schema


def test_rules_are_immutable():
    rule = Schema.from_dict(PEOPLE).rules[0]
    with pytest.raises(AttributeError):
        rule.name = "other"


def test_the_acs_schema_round_trips_through_json():
    schema = load_schema(ACS_SCHEMA)
    assert len(schema.rules) >= 25
    assert Schema.from_dict(json.loads(schema.dumps("json"))) == schema


# ---------------------------------------------------------------- rule_violations


def test_rule_violations_flags_exactly_the_breaking_rows():
    schema = Schema.from_dict(PEOPLE)
    typed_rows = typed(schema, [
        {"age": 10, "kids": 0, "family": 3},                                   # fine
        {"age": 12, "married": "yes"},                                         # young married
        {"age": 30},                                                           # adult, no status
        {"age": 40, "married": "no", "kids": 3, "family": 3},                  # kids == family
        {"age": 40, "married": "no", "sector": "A", "job": 300},               # job not in A
        {"age": 40, "married": "no", "sector": "B", "job": 310},               # fine
        {"age": 40, "married": "no", "sector": "B"},                           # sector without job
        {"age": 14, "kids": 2},                                                # family missing: fine
    ])
    broken = schema.rule_violations(typed_rows)
    assert list(broken.columns) == [rule.name for rule in schema.rules]
    assert broken.dtypes.eq(bool).all() and list(broken.index) == list(typed_rows.index)
    expected = {(1, "young-not-married"), (2, "adult-marital-status"), (3, "kids-in-family"),
                (4, "job-in-sector"), (6, "job-iff-sector")}
    assert {(row, rule) for row, rule in zip(*np.nonzero(broken.to_numpy()))} == {
        (row, list(broken.columns).index(rule)) for row, rule in expected}


def test_in_conditions_on_numbers_and_booleans():
    schema = Schema.from_dict({
        "name": "t",
        "columns": [{"name": "n", "kind": "integer", "lower": 0, "upper": 9, "bins": 9},
                    {"name": "b", "kind": "boolean"}],
        "rules": [{"name": "odd-is-true", "if": {"n": {"in": [1, 3, 5, 7, 9]}}, "then": {"b": {"in": [True]}}}],
    })
    rows = typed(schema, [{"n": 1, "b": "false"}, {"n": 2, "b": "false"}, {"n": 3, "b": "true"}])
    assert schema.rule_violations(rows)["odd-is-true"].tolist() == [True, False, False]


def test_rule_violations_needs_the_rules_columns():
    schema = Schema.from_dict(PEOPLE)
    with pytest.raises(SchemaError, match=r"lacks column\(s\) \['married'\]"):
        schema.rule_violations(pd.DataFrame({"age": [1], "kids": [0], "family": [2], "sector": ["A"],
                                             "job": [100]}))


# ---------------------------------------------------------------- validation of data


def test_validate_reports_each_broken_rule_with_count_and_five_examples(tmp_path, capsys):
    schema = Schema.from_dict(PEOPLE)
    rows = [{"age": "12", "married": "yes"}] * 7 + [{"age": "40", "married": "no", "sector": "A", "job": "480"}]
    text = pd.DataFrame([{c: row.get(c, "N") for c in schema.column_names} for row in rows])
    report = schema.validate(text)
    found = {v.rule: (v.count, v.rows, v.problem, v.severity) for v in report.violations}
    assert found == {"young-not-married": (7, (0, 1, 2, 3, 4), "broken_rule", "error"),
                     "job-in-sector": (1, (7,), "broken_rule", "error")}
    assert not report.ok and "{sector: 'A', job: '480'}" in str(report)
    path = tmp_path / "people.csv"
    text.to_csv(path, index=False)
    schema.save(tmp_path / "people.yaml")
    assert run_validate(path, tmp_path / "people.yaml") == 1
    assert "rule 'young-not-married'" in capsys.readouterr().out


def test_unlisted_codes_are_flagged_like_out_of_range_values():
    schema = Schema.from_dict(people(lambda d: d.update(rules=[])))
    text = pd.DataFrame({"age": ["40"] * 3, "married": ["no"] * 3, "kids": ["N"] * 3,
                         "family": ["N"] * 3, "sector": ["A"] * 3, "job": ["110", "120", "600"]})
    found = {(v.column, v.problem): (v.count, v.rows, v.values) for v in schema.validate(text).violations}
    assert found == {("job", "unknown_code"): (1, (1,), ("'120'",)),
                     ("job", "out_of_range"): (1, (2,), ("'600'",))}


# ---------------------------------------------------------------- decoding code columns


def test_a_code_column_decodes_only_to_listed_codes_uniformly():
    schema = Schema.from_dict(people(lambda d: d.update(rules=[])))
    rng = np.random.default_rng(0)
    codes = np.zeros((6000, len(schema.columns)), np.int64)
    codes[:, 5] = rng.integers(0, 3, 6000)  # two bins and the missing code
    values = schema.decode(codes, rng)["job"]
    present = values.dropna().astype(int)
    assert set(present) == {100, 110, 280, 290, 300, 310, 480}
    first_bin = present[present < 300].value_counts()
    assert first_bin.min() > 0.8 * first_bin.max()  # ~500 each of four codes
    assert values.isna().sum() == (codes[:, 5] == 2).sum()


def test_midpoint_decoding_of_a_code_column_picks_the_nearest_listed_code():
    schema = Schema.from_dict(people(lambda d: (d.update(rules=[]), d["columns"][5].update(decode="midpoint"))))
    codes = np.zeros((2, len(schema.columns)), np.int64)
    codes[:, 5] = [0, 1]
    assert schema.decode(codes, 0)["job"].tolist() == [280, 480]  # midpoints 200 and 399.5


def test_a_hierarchy_child_decodes_consistently_with_its_parent():
    def one_job_bin_and_the_hierarchy(d):
        d["columns"][5]["bins"] = [100, 499]
        d["rules"] = [PEOPLE["rules"][3]]

    schema = Schema.from_dict(people(one_job_bin_and_the_hierarchy))
    rng = np.random.default_rng(1)
    codes = np.zeros((3000, len(schema.columns)), np.int64)
    codes[:, 4] = rng.integers(0, 3, 3000)  # sector A, B or missing; one job bin for all
    decoded = schema.decode(codes, rng)
    job, sector = decoded["job"].astype(int), decoded["sector"]
    assert set(job[sector == "A"]) == {100, 110, 280, 290}
    assert set(job[sector == "B"]) == {300, 310, 480}
    assert set(job[sector.isna()]) == {100, 110, 280, 290, 300, 310, 480}
    assert not schema.rule_violations(decoded).to_numpy().any()


# ---------------------------------------------------------------- sample_valid


def test_sample_valid_returns_exactly_the_rows_and_breaks_no_rule():
    schema = Schema.from_dict(PEOPLE)
    n_codes = np.array(list(schema.domain().values()))

    def draw(n, rng):  # 90% of rows: young and married, the rule's forbidden cell
        codes = rng.integers(0, n_codes, size=(n, len(n_codes)))
        bad = rng.random(n) < 0.9
        codes[bad, 0], codes[bad, 1] = 0, 0
        return codes

    out = schema.sample_valid(draw, 500, np.random.default_rng(2))
    assert len(out) == 500 and list(out.index) == list(range(500))
    assert not schema.rule_violations(out).to_numpy().any()
    assert (out.dtypes == schema.decode(draw(3, np.random.default_rng(0)), 0).dtypes).all()


def test_sample_valid_re_decodes_a_bin_before_discarding_its_row():
    schema = Schema.from_dict(PEOPLE)

    def draw(n, rng):  # every row: age bin [10, 20) and married; valid only when age decodes >= 15
        codes = np.zeros((n, len(schema.columns)), np.int64)
        codes[:, 0], codes[:, 1] = 1, 0
        codes[:, 2:] = [2, 2, 2, 2]  # the rest missing
        return codes

    out = schema.sample_valid(draw, 1000, np.random.default_rng(3), max_tries=1)
    assert len(out) == 1000 and out["age"].between(15, 19).all()  # one draw of 1100 rows sufficed


def test_sample_valid_names_the_rule_that_rejects_every_row():
    schema = Schema.from_dict(PEOPLE)

    def draw(n, rng):  # young (bin [0, 10)) and married: no decoding can fix it
        codes = np.zeros((n, len(schema.columns)), np.int64)
        codes[:, 2:] = [2, 2, 2, 2]
        return codes

    with pytest.raises(SchemaError, match=r"only 0 of 10 rows .* 'young-not-married' \(100% of drawn rows"):
        schema.sample_valid(draw, 10, np.random.default_rng(4), max_tries=3)


# ---------------------------------------------------------------- the real ACS excerpts

needs_acs = pytest.mark.skipif(not (ACS / "ma2019.csv").exists(),
                               reason=f"ACS excerpt not found under {ACS}")


@needs_acs
@pytest.mark.parametrize("year", [2018, 2019])
def test_the_real_acs_files_break_no_public_rule(year):
    schema = load_schema(ACS_SCHEMA)
    df = schema.read_csv(ACS / f"ma{year}.csv")
    report = schema.validate(df)
    assert report.violations == (), str(report)
    assert not schema.rule_violations(schema.conform(df)).to_numpy().any()


@needs_acs
def test_the_acs_rules_catch_sdnist_style_inconsistencies():
    schema = load_schema(ACS_SCHEMA)
    df = schema.read_csv(ACS / "ma2019.csv")
    child = int(np.flatnonzero(df["AGEP"].astype(int) < 10)[0])
    group_quarters = int(np.flatnonzero(df["HOUSING_TYPE"] != "1")[0])
    manufacturing = int(np.flatnonzero(df["INDP_CAT"] == "4")[0])
    df.loc[child, "MSP"] = "1"
    df.loc[group_quarters, "NPF"] = "3"
    df.loc[manufacturing, "INDP"] = "170"
    broken = {v.rule: v.rows for v in schema.validate(df).violations}
    assert broken == {"child_MSP": (child,), "gq_h_family_NPF": (group_quarters,),
                      "gq_ro_family": (group_quarters,), "invalid_INDP_CAT": (manufacturing,)}


@needs_acs
def test_sampling_the_acs_schema_gives_consistent_rows():
    schema = load_schema(ACS_SCHEMA)
    codes = schema.encode(schema.read_csv(ACS / "ma2019.csv"))

    def draw(n, rng):  # independent marginals: breaks the rules often
        return np.column_stack([rng.choice(codes[:, j], size=n) for j in range(codes.shape[1])])

    out = schema.sample_valid(draw, 1000, np.random.default_rng(5))
    assert len(out) == 1000 and not schema.rule_violations(out).to_numpy().any()
    both = out["INDP"].notna()
    assert both.sum() > 100 and out.loc[both, "INDP_CAT"].notna().all()
