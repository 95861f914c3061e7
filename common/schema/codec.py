"""Codes and typed values: the encoder's and decoder's arithmetic, fixed by the schema alone.

A cell's code is its category index, its bool as 0/1, or its bin index; the missing code is
the last one. Decoding turns a bin back into a value by the column's ``decode`` rule: uniform
inside the bin (among the listed ``codes`` when the column has them) or its midpoint. When a
hierarchy rule makes a code column the child of a category column, a bin decodes only to codes
its row's parent allows, if the bin holds any; so the child agrees with the parent by
construction. A column with a public fine grid (``fine``) also has fine codes, its fine cell
(missing: the last code); given them, a value decodes uniformly inside its fine cell when that cell
lies in the row's coarse bin (the model's hierarchy makes it so), else inside the coarse bin: the
value always stays in its bin. None of this reads data: it is post-processing of codes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .columns import CATEGORY_KINDS, NUMBER_KINDS, Column, bin_of
from .datetimes import units_to_datetimes
from .rules import Hierarchy, Rule


def typed_values(column: Column, values: np.ndarray, missing: np.ndarray | None,
                 nullable: bool | None = None) -> Any:
    """Values of one column in the dtype the schema fixes (see ``Schema.conform``).

    ``nullable`` (default: the column allows missing values) picks the NA-capable dtype and
    applies ``missing``.
    """
    has_missing = missing is not None and (column.missing if nullable is None else nullable)
    if column.kind in CATEGORY_KINDS:
        codes = np.where(missing, -1, values) if has_missing else values
        return pd.Categorical.from_codes(codes, categories=list(column.categories),
                                         ordered=column.kind == "ordinal")
    if column.kind == "boolean":
        values = values.astype(bool)
        return pd.arrays.BooleanArray(values, missing.copy()) if has_missing else values
    if column.kind == "numeric":
        values = values.astype(np.float64)
        return np.where(missing, np.nan, values) if has_missing else values
    if column.kind == "datetime":
        return units_to_datetimes(values, column.unit, missing if has_missing else None)
    if has_missing:
        return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing.copy())
    return values.astype(np.int64)


def codes_of(column: Column, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Codes of parsed values: category index, bool 0/1, bin index; missing -> last code."""
    if column.kind in NUMBER_KINDS or column.kind == "datetime":
        codes = bin_of(column.edges, values)
    else:
        codes = values.astype(np.int64)
    return np.where(missing, column.n_values, codes)


def fine_codes_of(column: Column, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Fine codes of parsed values: the fine cell's index; missing -> the last code."""
    return np.where(missing, column.n_fine_values, bin_of(column.fine_edges, values))


def checked_codes(columns: tuple[Column, ...], codes: np.ndarray, sizes: list[int] | None = None) -> np.ndarray:
    """Codes as an int64 array of shape (columns, rows): one contiguous row per column."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != len(columns):
        raise ValueError(f"codes must be a 2-D array with one column per schema column "
                         f"({len(columns)}), got shape {codes.shape}")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    by_column = np.ascontiguousarray(codes.T, dtype=np.int64)
    n_codes = np.array([column.n_codes for column in columns] if sizes is None else sizes, dtype=np.int64)
    bad = (by_column < 0) | (by_column >= n_codes[:, None])
    if bad.any():
        j, row = (int(i[0]) for i in np.nonzero(bad))
        name = columns[j].name if sizes is None else columns[j].fine_name
        raise ValueError(f"column {name!r}: code {by_column[j, row]} at row {row} is "
                         f"outside 0..{n_codes[j] - 1} ({int(bad[j].sum())} such codes); "
                         f"codes must come from Schema.encode or respect Schema.domain()")
    return by_column


def decode_frame(columns: tuple[Column, ...], rules: tuple[Rule, ...], codes: np.ndarray,
                 rng: np.random.Generator, fine: np.ndarray | None = None) -> pd.DataFrame:
    """Typed table for codes (rows x columns): bins become values, the missing code NA.

    ``fine`` (rows x the columns with a fine grid, in schema order), when given: each such
    column's fine codes, which place its values within their bins.
    """
    by_column = checked_codes(columns, codes)
    with_fine = [column for column in columns if column.fine is not None]
    by_fine = {} if fine is None else dict(zip(
        [c.name for c in with_fine], checked_codes(tuple(with_fine), fine, [c.n_fine_codes for c in with_fine])))
    parents = _hierarchy_parents(columns, rules)
    data = {}
    for column, column_codes in zip(columns, by_column):
        missing = column_codes == column.n_values if column.missing else None
        if column.name in by_fine:
            values = _decode_fine(column, column_codes, by_fine[column.name], rng)
        elif column.name in parents:
            rule, parent = parents[column.name]
            parent_codes = by_column[[c.name for c in columns].index(parent.name)]
            values = _decode_listed(column, column_codes, rng, rule, parent, parent_codes)
        else:
            values = _decode_values(column, column_codes, rng)
        data[column.name] = typed_values(column, values, missing)
    return pd.DataFrame(data)


def _hierarchy_parents(columns: tuple[Column, ...],
                       rules: tuple[Rule, ...]) -> dict[str, tuple[Hierarchy, Column]]:
    """Code columns that a hierarchy rule ties to a parent: child name -> (rule, parent)."""
    by_name = {column.name: column for column in columns}
    return {rule.child: (rule, by_name[rule.parent]) for rule in rules
            if isinstance(rule, Hierarchy) and by_name[rule.child].codes is not None}


def _decode_values(column: Column, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values for codes; the missing code decodes to a placeholder that the mask hides."""
    present = np.minimum(codes, column.n_values - 1)
    if column.kind in CATEGORY_KINDS:
        return present
    if column.kind == "boolean":
        return present.astype(bool)
    if column.kind == "integer" and column.codes is not None:
        return _decode_listed(column, codes, rng)
    if column.kind in ("integer", "datetime"):  # datetimes decode to whole days or seconds
        return _decode_integers(column, present, rng)
    return _decode_numbers(column, present, rng)


def _decode_fine(column: Column, codes: np.ndarray, fine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values inside each row's fine cell where it lies in the row's coarse bin, else inside the bin."""
    bins = np.minimum(codes, column.n_values - 1)
    cells = np.minimum(fine, column.n_fine_values - 1)
    inside = (fine < column.n_fine_values) & (column.fine_bins[cells] == bins)
    if column.kind == "numeric":
        left = np.where(inside, column.fine_edges[cells], column.edges[bins])
        right = np.where(inside, column.fine_edges[cells + 1], column.edges[bins + 1])
        return _uniform_numbers(column, left, right, rng)
    fine_first, fine_last = column.fine_integers
    first, last = column.bin_integers
    low, high = np.where(inside, fine_first[cells], first[bins]), np.where(inside, fine_last[cells], last[bins])
    if column.decode == "midpoint":
        return np.floor((low + high) / 2 + 0.5).astype(np.int64)
    return rng.integers(low, high, endpoint=True)


def _decode_numbers(column: Column, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _uniform_numbers(column, column.edges[bins], column.edges[bins + 1], rng)


def _uniform_numbers(column: Column, left: np.ndarray, right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values in [left, right) (closed at the column's upper bound), by the column's decode rule."""
    if column.decode == "midpoint":
        return (left + right) / 2
    values = left + rng.random(len(left)) * (right - left)
    # Rounding may land on the right edge, which belongs to the next bin (except at the upper bound).
    is_open = right < column.edges[-1]
    return np.where(is_open & (values >= right), np.nextafter(right, left), values)


def _decode_integers(column: Column, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    first, last = column.bin_integers
    low, high = first[bins], last[bins]
    if column.decode == "midpoint":
        middle = np.floor((column.edges[bins] + column.edges[bins + 1]) / 2 + 0.5)
        return np.clip(middle, low, high).astype(np.int64)
    return rng.integers(low, high, endpoint=True)


def _decode_listed(column: Column, codes: np.ndarray, rng: np.random.Generator,
                   rule: Hierarchy | None = None, parent: Column | None = None,
                   parent_codes: np.ndarray | None = None) -> np.ndarray:
    """Listed codes for bins: per (bin, parent category), uniform among the bin's codes the
    parent allows (all of the bin's codes when it allows none, or without a parent)."""
    bins = np.minimum(codes, column.n_values - 1)
    groups = np.full(len(codes), -1, dtype=np.int64) if parent_codes is None else parent_codes
    values = np.zeros(len(codes), dtype=np.int64)
    for b, g in np.unique(np.column_stack([bins, groups]), axis=0) if len(codes) else ():
        candidates = column.sorted_codes[column.code_bins == b]
        if rule is not None and g < parent.n_values:
            condition = rule.allowed(parent.categories[g])
            allowed = candidates[condition.accepts(candidates)] if condition else candidates[:0]
            candidates = allowed if allowed.size else candidates
        rows = (bins == b) & (groups == g)
        values[rows] = _pick(column, candidates, b, int(rows.sum()), rng)
    return values


def _pick(column: Column, candidates: np.ndarray, b: int, n: int,
          rng: np.random.Generator) -> np.ndarray:
    if column.decode == "midpoint":
        middle = (column.edges[b] + column.edges[b + 1]) / 2
        return np.full(n, candidates[np.argmin(np.abs(candidates - middle))])
    return rng.choice(candidates, size=n)
