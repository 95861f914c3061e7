"""The hand-written ACS Massachusetts 2019 schema: agrees with the public data dictionary and
validates the real excerpt. The data lives outside the repository; tests skip without it."""

import json
from pathlib import Path

import numpy as np
import pytest

from fedsynth.common.schema import load_schema

SCHEMA = Path(__file__).parent / "data" / "acs_ma2019.schema.yaml"
ACS = Path(__file__).resolve().parents[2] / "shared" / "data" / "acs"  # shared/ sits beside the clone
needs_acs = pytest.mark.skipif(not (ACS / "ma2019.csv").exists(),
                               reason=f"ACS excerpt not found under {ACS}")
# INDP has no value set in the dictionary (only a link); its N code follows from INDP_CAT's.
NOT_IN_DICTIONARY = {"INDP"}


def dictionary() -> dict:
    return json.loads((ACS / "data_dictionary.json").read_text())


@needs_acs
def test_the_real_excerpt_validates_with_zero_violations():
    schema = load_schema(SCHEMA)
    df = schema.read_csv(ACS / "ma2019.csv")
    report = schema.validate(df)
    assert len(df) == 7634 and list(df.columns) == schema.column_names
    assert report.violations == (), str(report)
    codes = schema.encode(df)
    assert np.all(codes < np.array(list(schema.domain().values())))


@needs_acs
def test_a_corrupted_excerpt_is_reported_exactly():
    schema = load_schema(SCHEMA)
    df = schema.read_csv(ACS / "ma2019.csv")
    df.loc[3, "AGEP"] = "120"
    df.loc[5, "SEX"] = "3"
    df.loc[7, "DEYE"] = np.nan  # read from "N": vision difficulty has no N/A code
    found = {(v.column, v.problem): (v.count, v.rows) for v in schema.validate(df).violations}
    assert found == {("AGEP", "out_of_range"): (1, (3,)),
                     ("SEX", "unknown_category"): (1, (5,)),
                     ("DEYE", "missing_value"): (1, (7,))}


@needs_acs
def test_the_schema_follows_the_public_data_dictionary():
    schema = load_schema(SCHEMA)
    entries = dictionary()
    assert set(schema.column_names) == set(entries)
    for column in schema.columns:
        if column.name in NOT_IN_DICTIONARY:
            continue
        values = entries[column.name]["values"]
        codes = [key for key in values if key not in ("N", "min", "max")]
        assert column.missing == ("N" in values), column.name
        if column.kind in ("categorical", "ordinal"):
            assert set(column.categories) <= set(codes), column.name
            if column.name != "PUMA":  # the MA excerpt holds the dictionary's five 25-xxxxx PUMAs
                assert set(column.categories) == set(codes), column.name
        else:
            numbers = [float(code) for code in codes]
            numbers += [values[key] for key in ("min", "max") if key in values]
            assert (column.lower, column.upper) == (min(numbers), max(numbers)), column.name
    assert schema["PUMA"].categories == tuple(
        code for code in entries["PUMA"]["values"] if code.startswith("25-"))
