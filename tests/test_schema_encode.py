"""Encoding to integer codes and decoding back: round trips (hypothesis) and decode rules."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedsynth
from fedsynth.common.schema import Schema, load_schema

DATA = Path(fedsynth.__file__).parent / "data"

MIXED = Schema.from_dict({
    "name": "mixed",
    "label": "flag",
    "na_values": ["?"],
    "columns": [
        {"name": "colour", "kind": "categorical", "categories": ["red", "green", "blue"],
         "missing": True},
        {"name": "grade", "kind": "ordinal", "categories": ["low", "mid", "high"]},
        {"name": "flag", "kind": "boolean", "missing": True},
        {"name": "flag2", "kind": "boolean"},
        {"name": "x", "kind": "numeric", "lower": -1.5, "upper": 2.5, "bins": 7, "missing": True},
        {"name": "y", "kind": "numeric", "lower": 0, "upper": 1, "bins": [0, 0.1, 0.5, 1],
         "decode": "midpoint"},
        {"name": "n", "kind": "integer", "lower": 1, "upper": 16, "bins": 16},
        {"name": "m", "kind": "integer", "lower": 0, "upper": 100, "bins": [0, 1, 10, 50, 100],
         "decode": "midpoint", "missing": True},
        {"name": "k", "kind": "integer", "lower": -3, "upper": 7, "bins": 3,
         "out_of_range": "clip"},
    ],
})


@st.composite
def codes_for(draw, schema: Schema) -> np.ndarray:
    n_rows = draw(st.integers(0, 40))
    sizes = list(schema.domain().values())
    rows = draw(st.lists(st.tuples(*(st.integers(0, size - 1) for size in sizes)),
                         min_size=n_rows, max_size=n_rows))
    return np.array(rows, dtype=np.int64).reshape(n_rows, len(sizes))


@st.composite
def tables_for(draw, schema: Schema) -> pd.DataFrame:
    """Tables of allowed values (text cells, as read from a CSV), missing where allowed."""
    n_rows = draw(st.integers(1, 30))
    data = {}
    for column in schema.columns:
        if column.kind in ("categorical", "ordinal"):
            value = st.sampled_from(column.categories)
        elif column.kind == "boolean":
            value = st.sampled_from(["true", "False", "1", "0"])
        elif column.kind == "integer":
            value = st.integers(int(column.lower), int(column.upper)).map(str)
        else:
            value = st.floats(column.lower, column.upper).map(repr)
        if column.missing:
            value = st.one_of(value, st.just("?"))
        data[column.name] = draw(st.lists(value, min_size=n_rows, max_size=n_rows))
    return pd.DataFrame(data, dtype="str")


@settings(max_examples=100, deadline=None)
@given(codes=codes_for(MIXED), seed=st.integers(0, 2**32 - 1))
def test_encode_of_decode_gives_back_the_codes(codes, seed):
    decoded = MIXED.decode(codes, np.random.default_rng(seed))
    assert MIXED.validate(decoded).violations == ()
    np.testing.assert_array_equal(MIXED.encode(decoded), codes)


@settings(max_examples=100, deadline=None)
@given(table=tables_for(MIXED), seed=st.integers(0, 2**32 - 1))
def test_decode_of_encode_keeps_categories_and_bins(table, seed):
    codes = MIXED.encode(table)
    decoded = MIXED.decode(codes, seed)
    original = MIXED.conform(table)
    for column in MIXED.columns:
        name = column.name
        pd.testing.assert_series_equal(decoded[name].isna(), original[name].isna())
        if column.kind in ("categorical", "ordinal", "boolean"):
            pd.testing.assert_series_equal(decoded[name], original[name])
        else:
            present = original[name].notna().to_numpy()
            edges = column.edges
            bins = codes[present, MIXED.column_names.index(name)]
            values = decoded[name].to_numpy(dtype=float, na_value=np.nan)[present]
            assert np.all(edges[bins] <= values)
            is_last = bins == len(edges) - 2
            assert np.all((values < edges[bins + 1]) | (is_last & (values <= edges[bins + 1])))
    np.testing.assert_array_equal(MIXED.encode(decoded), codes)


def test_codes_are_indices_bins_and_a_last_missing_code():
    table = pd.DataFrame({
        "colour": ["blue", "?"], "grade": ["low", "high"], "flag": ["?", "true"],
        "flag2": ["0", "1"], "x": ["2.5", "-1.5"], "y": ["0.1", "0.09"], "n": ["16", "1"],
        "m": ["?", "10"], "k": ["99", "-99"]})
    np.testing.assert_array_equal(MIXED.encode(table), [
        [2, 0, 2, 0, 6, 1, 15, 4, 2],
        [3, 2, 1, 1, 0, 0, 0, 2, 0]])


def test_midpoint_decoding():
    codes = np.array([[0, 0, 0, 0, 0, 1, 0, 0, 0],
                      [0, 0, 0, 0, 0, 2, 0, 1, 0],
                      [0, 0, 0, 0, 0, 0, 0, 2, 0],
                      [0, 0, 0, 0, 0, 0, 0, 3, 0]])
    decoded = MIXED.decode(codes, 0)
    assert decoded["y"].tolist() == [0.3, 0.75, 0.05, 0.05]
    # bins [0, 1), [1, 10), [10, 50), [50, 100]: the integer nearest the bin's middle
    assert decoded["m"].tolist() == [0, 6, 30, 75]


def test_uniform_integer_decoding_reaches_every_integer_of_the_bin_and_no_other():
    column = MIXED.column_names.index("k")  # bins over [-3, 7]: [-3, 1/3), [1/3, 11/3), [11/3, 7]
    codes = np.zeros((6000, len(MIXED.columns)), dtype=np.int64)
    codes[:, column] = np.repeat([0, 1, 2], 2000)
    values = MIXED.decode(codes, np.random.default_rng(7))["k"].to_numpy()
    assert set(values[:2000]) == {-3, -2, -1, 0}
    assert set(values[2000:4000]) == {1, 2, 3}
    assert set(values[4000:]) == {4, 5, 6, 7}


def test_uniform_numeric_decoding_spreads_over_the_bin():
    column = MIXED.column_names.index("x")
    codes = np.zeros((20000, len(MIXED.columns)), dtype=np.int64)
    codes[:, column] = 3  # [0.7142..., 1.2857...)
    values = MIXED.decode(codes, np.random.default_rng(3))["x"].to_numpy()
    left, right = MIXED["x"].edges[3:5]
    assert left <= values.min() < left + 0.01 and right - 0.01 < values.max() < right
    assert abs(values.mean() - (left + right) / 2) < 0.01


def test_decode_is_reproducible_from_the_seed():
    codes = np.tile(np.arange(2), (50, len(MIXED.columns), 1)).reshape(100, -1)
    pd.testing.assert_frame_equal(MIXED.decode(codes, 11), MIXED.decode(codes, 11))
    assert not MIXED.decode(codes, 11)["x"].equals(MIXED.decode(codes, 12)["x"])


def test_decode_rejects_codes_outside_the_domain():
    codes = np.zeros((3, len(MIXED.columns)), dtype=np.int64)
    codes[2, 1] = 3  # grade has 3 categories and no missing code
    with pytest.raises(ValueError, match=r"column 'grade': code 3 at row 2 is outside 0..2"):
        MIXED.decode(codes, 0)
    with pytest.raises(ValueError, match="one column per schema column"):
        MIXED.decode(codes[:, :4], 0)


def test_bundled_adult_data_encodes_within_the_domain_and_decodes_back():
    schema = load_schema(DATA / "adult.schema.yaml")
    df = schema.read_csv(DATA / "adult.csv")
    codes = schema.encode(df)
    assert codes.shape == (5000, 15) and codes.dtype == np.int64
    sizes = np.array(list(schema.domain().values()))
    assert np.all(codes >= 0) and np.all(codes < sizes)
    assert codes[:, schema.column_names.index("workclass")].max() == sizes[1] - 1  # missing code
    decoded = schema.decode(codes, np.random.default_rng(0))
    assert schema.validate(decoded).violations == ()
    np.testing.assert_array_equal(schema.encode(decoded), codes)
    typed = schema.conform(df)
    for name in ("education", "sex", "workclass", "Y"):
        pd.testing.assert_series_equal(decoded[name], typed[name])
