"""Datetime columns as integers: whole days (date bounds) or whole seconds since 1970-01-01.

A ``datetime`` column's public bounds are ISO 8601 texts (``2020-01-01`` or
``2020-01-01T08:30:00``). When both are dates, the column holds dates and counts days; otherwise
it holds datetimes and counts seconds (time zones are converted to UTC). Its bins are a number
of equal-width bins or a public width such as ``30D``, ``7D``, ``12h`` (a pandas Timedelta);
with a width, the last bin ends at the upper bound and may be shorter. Everything after the
conversion is the integer column's arithmetic: a bin decodes to a whole day or second inside it.
Nothing here reads data to choose anything.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

EPOCH = dt.datetime(1970, 1, 1)
UNIT_SECONDS = {"D": 86_400, "s": 1}
MAX_BINS = 10_000


def iso_text(value: Any) -> Any:
    """A YAML date/datetime (parsed by the loader) as its ISO text; anything else unchanged."""
    return value.isoformat() if isinstance(value, dt.date) else value  # datetime is a date too


def parse_iso(text: Any) -> dt.datetime | None:
    """An ISO 8601 date or datetime as a naive UTC datetime, or None when it is not one (also
    when its UTC time falls outside the years 1-9999: ``0001-01-01T00:00+01:00``)."""
    if not isinstance(text, str):
        return None
    try:
        value = dt.datetime.fromisoformat(text.strip())
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo is not None else value
    except (ValueError, OverflowError):
        return None


def is_date_text(text: str) -> bool:
    """``YYYY-MM-DD`` without a time of day."""
    try:
        dt.date.fromisoformat(text.strip())
    except ValueError:
        return False
    return len(text.strip()) == 10


def unit_of(lower: str, upper: str) -> str:
    """``D`` (days) when both bounds are dates, else ``s`` (seconds)."""
    return "D" if is_date_text(lower) and is_date_text(upper) else "s"


def to_units(value: dt.datetime, unit: str) -> float:
    """Whole days or seconds since the epoch; NaN for a date column's value with a time of day."""
    seconds = (value - EPOCH) // dt.timedelta(seconds=1)
    whole, rest = divmod(seconds, UNIT_SECONDS[unit])
    return float(whole) if rest == 0 else np.nan


def width_units(width: str, unit: str) -> float | None:
    """A bin width such as ``30D`` in units (days or seconds); None when it is not a width."""
    try:
        seconds = pd.Timedelta(width).total_seconds()
    except (ValueError, TypeError):
        return None
    return seconds / UNIT_SECONDS[unit]


def texts_to_units(texts: pd.Index, unit: str) -> np.ndarray:
    """Units for each text; NaN where it is not an ISO date/datetime (or, in a date column,
    a datetime with a time of day)."""
    values = [parse_iso(text) for text in texts]
    return np.array([np.nan if v is None else to_units(v, unit) for v in values], dtype=np.float64)


def units_to_datetimes(values: np.ndarray, unit: str, missing: np.ndarray | None) -> np.ndarray:
    """Integer units as ``datetime64[s]`` (NaT where missing)."""
    values = np.asarray(values, dtype=np.float64)
    seconds = np.where(np.isfinite(values), values, 0).astype(np.int64) * UNIT_SECONDS[unit]
    stamps = seconds.astype("datetime64[s]")
    return np.where(missing, np.datetime64("NaT", "s"), stamps) if missing is not None else stamps
