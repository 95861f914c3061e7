"""The datetime kind: public ISO bounds, bins by count or width, validation, encode/decode."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import yaml

from fedsynth.common.schema import Column, Schema, SchemaError, draft_schema


def schema(text: str) -> Schema:
    return Schema.from_dict(yaml.safe_load(text))


DATES = """
name: visits
columns:
  - {name: day, kind: datetime, lower: 2020-01-01, upper: 2020-12-31, bins: 30D, missing: true}
  - {name: at, kind: datetime, lower: "2020-01-01T00:00:00", upper: "2020-01-02T00:00:00", bins: 24}
"""


def test_bounds_and_bins_come_from_the_schema_alone():
    day, at = schema(DATES).columns
    assert (day.lower, day.upper, day.unit) == ("2020-01-01", "2020-12-31", "D")  # YAML dates kept as ISO text
    assert day.n_values == 13  # 12 bins of 30 days, then the 5 days left up to 2020-12-31
    assert np.diff(day.edges[:-1]).tolist() == [30.0] * 12 and day.edges[-1] - day.edges[-2] == 5
    assert at.unit == "s" and at.n_values == 24 and np.allclose(np.diff(at.edges), 3600)
    assert Schema.from_dict(schema(DATES).to_dict()) == schema(DATES)  # JSON/YAML round trip


def test_encode_decode_round_trip_stays_in_the_bin():
    s = schema(DATES)
    rng = np.random.default_rng(0)
    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 366, 500), unit="D")
    seconds = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 86_401, 500), unit="s")
    frame = pd.DataFrame({"day": days.strftime("%Y-%m-%d"), "at": seconds.strftime("%Y-%m-%dT%H:%M:%S")})
    frame.loc[::7, "day"] = ""  # blank: missing (allowed here)
    codes = s.encode(frame)
    decoded = s.decode(codes, 1)
    assert decoded["day"].dtype == "datetime64[s]" and decoded["day"].isna().sum() == len(frame[::7])
    assert (s.encode(decoded.astype(str).replace("NaT", "")) == codes).all()  # every value back in its bin
    present = decoded["day"].dropna()
    assert (present == present.dt.normalize()).all()  # a date column decodes to whole days
    assert decoded["at"].between("2020-01-01", "2020-01-02").all()


def test_midpoint_decoding_and_clipping():
    s = Schema("m", (Column("d", "datetime", lower="2020-01-01", upper="2020-01-31", bins=3,
                            decode="midpoint", out_of_range="clip"),))
    codes = s.encode(pd.DataFrame({"d": ["2019-06-01", "2020-01-15", "2021-01-01"]}))
    assert codes[:, 0].tolist() == [0, 1, 2]  # clipped to the bounds
    # 3 bins of 10 days from Jan 1: [1, 11), [11, 21), [21, 31]; each decodes to its middle day
    assert s.decode(codes, 0)["d"].dt.strftime("%Y-%m-%d").tolist() == ["2020-01-06", "2020-01-16", "2020-01-26"]


def test_validation_names_the_column_and_the_bad_values():
    s = schema(DATES)
    report = s.validate(pd.DataFrame({"day": ["2020-01-01T10:00", "2021-05-01", "soon", "2020-02-30"],
                                      "at": ["2020-01-01T05:30:00", "2020-01-01 23:00", "2020-01-03T00:00:00",
                                             "2020-01-01T00:30:00+01:00"]}))
    found = {(v.column, v.problem): (v.rows, v.values) for v in report.violations}
    assert found == {
        ("day", "wrong_type"): ((0, 2, 3), ("'2020-01-01T10:00'", "'soon'", "'2020-02-30'")),
        ("day", "out_of_range"): ((1,), ("'2021-05-01'",)),
        ("at", "out_of_range"): ((2, 3), ("'2020-01-03T00:00:00'", "'2020-01-01T00:30:00+01:00'")),  # UTC: 2019-12-31
    }
    assert "no time of day: the bounds are dates" in str(report)


@pytest.mark.parametrize("column, message", [
    ({"lower": "2020-01-01", "bins": 3}, "datetime columns need 'upper'"),
    ({"lower": "January", "upper": "2020-12-31", "bins": 3}, "lower must be an ISO date"),
    ({"lower": "2020-12-31", "upper": "2020-01-01", "bins": 3}, "must be before upper"),
    ({"lower": "2020-01-01", "upper": "2020-12-31", "bins": "12h"}, "not a positive whole number of days"),
    ({"lower": "2020-01-01", "upper": "2020-12-31", "bins": "soon"}, "not a positive whole number of days"),
    ({"lower": "2020-01-01", "upper": "2020-01-05", "bins": 10}, "leave bins without a whole one of their days"),
    ({"lower": "2000-01-01T00:00:00", "upper": "2020-01-01T00:00:00", "bins": "1s"}, "use at most 10000"),
    ({"lower": "2020-01-01", "upper": "2020-12-31", "bins": 3, "codes": [1]}, "key 'codes' does not apply"),
])
def test_a_wrong_datetime_column_says_what_to_fix(column, message):
    with pytest.raises(SchemaError, match=message.replace("(", r"\(")):
        Schema.from_dict({"name": "x", "columns": [{"name": "d", "kind": "datetime", **column}]})


def test_a_draft_proposes_datetime_for_date_like_columns():
    frame = pd.DataFrame({"d": ["2021-03-01", "2021-05-09", None], "t": ["2021-03-01T10:00:00"] * 3,
                          "n": ["1", "2", "3"]})
    columns = {c.name: c for c in draft_schema(frame, "x").columns}
    assert (columns["d"].kind, columns["d"].lower, columns["d"].upper, columns["d"].missing) == (
        "datetime", "2021-03-01", "2021-05-09", True)
    assert columns["t"].kind == "datetime" and columns["t"].unit == "s"
    assert columns["n"].kind == "ordinal"  # a run 1..k of few values reads as a rating


def test_parsed_timestamps_from_parquet_are_datetimes_too():
    s = schema(DATES)
    frame = pd.DataFrame({"day": pd.to_datetime(["2020-03-01", None]),
                          "at": [dt.datetime(2020, 1, 1, 12), dt.datetime(2020, 1, 1, 13)]})
    assert s.validate(frame).ok and s.encode(frame)[:, 0].tolist() == [2, 13]


def test_a_datetime_whose_utc_time_leaves_the_calendar_is_no_datetime_not_an_error():
    from fedsynth.common.schema.datetimes import parse_iso

    assert parse_iso("0001-01-01T00:00:00+01:00") is None  # 31 Dec of year 0 in UTC
    assert parse_iso("9999-12-31T23:30:00-01:00") is None  # year 10000 in UTC
    assert parse_iso("2010-01-01T00:00:00+01:00").isoformat() == "2009-12-31T23:00:00"
