"""Drafts: a starting-point schema inferred FROM PRIVATE DATA, loudly marked as such.

A draft's bounds and category lists are read from the rows, so they are private: a maximum
can be one person's age or salary. Drafts are marked ``draft: true`` and carry
:func:`draft_warning`; a data steward must replace every bound, bin and category list with
public knowledge (and write any rules from public documentation) before a job uses it.

How a column's kind is guessed from its present cells (read as text):

* boolean: the cells are one pair of ``true``/``false``, ``1``/``0`` or ``yes``/``no`` (any case);
* ordinal: text from one well-known ordered scale (:data:`SCALES`: low < medium < high, never <
  ... < always, ...) or whole numbers forming a run of at most 10 values from 1 (a rating 1-5);
* integer: whole numbers with more than 10 distinct values, or counts (whole numbers from 0 with
  at least 3 values), with the rows' bounds and up to 10 bins: a count can take values the rows
  do not show, so its categories are not the observed ones;
* categorical: other whole numbers with at most 10 distinct values (codes) and other text;
* numeric and datetime: other numbers, and ISO dates or datetimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .columns import Column
from .datetimes import is_date_text, parse_iso
from .model import Schema
from .validate import as_text, missing_mask

_DRAFT_MAX_CODES = 10  # integer columns with at most this many distinct values draft as codes
_DRAFT_BINS = 10

#: Boolean spellings a draft recognises (each a pair the schema's boolean parser reads).
BOOLEAN_PAIRS = ({"true", "false"}, {"1", "0"}, {"yes", "no"})

#: Well-known ordered scales: text columns whose values all come from one draft as ordinal.
SCALES = (
    ("low", "medium", "high"),
    ("small", "medium", "large"),
    ("never", "rarely", "sometimes", "often", "always"),
    ("poor", "fair", "good", "very good", "excellent"),
    ("none", "mild", "moderate", "severe"),
    ("strongly disagree", "disagree", "neutral", "agree", "strongly agree"),
)


def draft_warning() -> str:
    """The banner shown whenever a schema is drafted from data."""
    line = "!" * 78
    return "\n".join([
        line,
        "!!  WARNING: THIS SCHEMA IS A DRAFT READ FROM PRIVATE DATA. DO NOT USE IT AS IS.",
        line,
        "!!  Its bounds and category lists were read from the rows themselves, so they",
        "!!  are private: a maximum can be the oldest patient's age or the largest salary,",
        "!!  and a rare category can be held by one single person. Publishing or using",
        "!!  them in a job leaks that information outside any privacy guarantee.",
        "!!",
        "!!  Before ANY job: review every column with the data steward, replace each bound,",
        "!!  bin and category list with public knowledge (a code book, a standard, a legal",
        "!!  range), then delete the line `draft: true` from the file.",
        line,
    ])


def draft_schema(df: pd.DataFrame, name: str, na_values: Sequence[str] = ()) -> Schema:
    """Infer a starting-point schema (kinds, categories, bounds) FROM THE DATA.

    The result is private and marked ``draft``; see :func:`draft_warning`. Cells are read
    as text; the kinds are guessed as the module docstring says.
    """
    na_values = tuple(na_values)
    columns = tuple(_draft_column(str(column), df[column], na_values) for column in df.columns)
    return Schema(name=name, columns=columns, label=None, na_values=na_values, draft=True)


def _draft_column(name: str, series: pd.Series, na_values: tuple[str, ...]) -> Column:
    text = as_text(series)
    missing = missing_mask(text, na_values)
    present = text[~missing]
    has_missing = bool(missing.any())
    if present.empty:
        return Column(name, "categorical", categories=("REPLACE-ME",), missing=has_missing)
    tokens = set(present.str.strip().str.lower().unique())
    if any(tokens <= pair and len(tokens) == 2 for pair in BOOLEAN_PAIRS) or tokens <= {"true", "false"}:
        return Column(name, "boolean", missing=has_missing)
    numbers = pd.to_numeric(present, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(numbers).all():
        stamps = [parse_iso(text) for text in present.unique()]
        if all(stamps):
            return _draft_datetime(name, present, stamps, has_missing)
        scale = _scale_of(present.unique())
        kind = "categorical" if scale is None else "ordinal"
        return Column(name, kind, categories=scale or tuple(sorted(present.unique())), missing=has_missing)
    if (numbers == np.floor(numbers)).all():
        return _draft_whole_numbers(name, present, numbers, has_missing)
    lower, upper = float(numbers.min()), max(float(numbers.max()), float(numbers.min()) + 1)
    return Column(name, "numeric", lower=lower, upper=upper,
                  bins=_DRAFT_BINS, missing=has_missing)


def _draft_whole_numbers(name: str, present: pd.Series, numbers: np.ndarray, has_missing: bool) -> Column:
    """An ordinal rating, an integer count or range, or categorical codes (see the module)."""
    values = np.unique(numbers)
    lower, upper = int(values[0]), int(values[-1])
    few = values.size <= _DRAFT_MAX_CODES
    texts = sorted(present.unique(), key=float)
    if few and len(texts) == values.size >= 3 and lower == 1 and upper - lower + 1 == values.size:
        return Column(name, "ordinal", categories=tuple(texts), missing=has_missing)
    if few and not (lower == 0 and values.size >= 3):
        return Column(name, "categorical", categories=tuple(texts), missing=has_missing)
    upper = max(upper, lower + 1)
    return Column(name, "integer", lower=lower, upper=upper, bins=min(_DRAFT_BINS, upper - lower + 1),
                  missing=has_missing)


def _scale_of(values: Sequence[str]) -> tuple[str, ...] | None:
    """The values in the order of the well-known scale they all come from (as written), or None."""
    written = {str(v).strip().lower(): str(v) for v in values}
    for scale in SCALES:
        if len(written) == len(values) >= 2 and set(written) <= set(scale):
            return tuple(written[step] for step in scale if step in written)
    return None


def _draft_datetime(name: str, present: pd.Series, stamps: list, has_missing: bool) -> Column:
    """Dates (or datetimes) between the rows' first and last, in 10 bins: private bounds."""
    dates = all(is_date_text(text) for text in present.unique())
    lower, upper = min(stamps), max(stamps)
    if dates:
        upper = max(upper, lower + dt.timedelta(days=_DRAFT_BINS))
        return Column(name, "datetime", lower=lower.date().isoformat(), upper=upper.date().isoformat(),
                      bins=_DRAFT_BINS, missing=has_missing)
    upper = max(upper, lower + dt.timedelta(seconds=_DRAFT_BINS))
    return Column(name, "datetime", lower=lower.isoformat(), upper=upper.isoformat(),
                  bins=_DRAFT_BINS, missing=has_missing)
