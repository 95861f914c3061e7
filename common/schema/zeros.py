"""Structural zeros: the code cells that a schema's public rules make impossible.

A rule over columns ``C`` forbids a cell of the codes of ``C`` when every value that the cell can
decode to breaks the rule (``AGEP`` bin 10-14 with ``MSP`` "married": every child in that bin
breaks "under 15 is not married"). A cell that some of its values satisfy (``AGEP`` bin 10-19)
is not forbidden: decoding and repair handle it (``sampling``). The generator's model puts no
mass on forbidden cells (``mbi.Constraint``), so rows drawn from it rarely need repair and the
release keeps the model's distribution.

Which values a cell can decode to: its category, or NA for the missing code; for a bin, its
ends and every rule threshold inside it (listed codes, where the column has them and the bin
holds few). Rule conditions are intervals, sets and comparisons, whose truth can only change at
those points, so testing them decides the whole bin.

A column's fine grid (``fine``) is tied to its coarse bins the same way (:func:`fine_zeros`): a
(bin, fine cell) pair is impossible unless the cell lies inside the bin, and missing goes with
missing. Everything here reads the schema alone: public, no privacy cost.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .codec import typed_values
from .columns import CATEGORY_KINDS, Column
from .rules import Condition, Implication, Rule

if TYPE_CHECKING:
    from .model import Schema

MAX_LISTED = 64  # a bin with at most this many listed codes is tested on each of them


def structural_zeros(schema: Schema, max_cells: int = 5000) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """Per rule over at most ``max_cells`` code cells: its columns and the cells it forbids (rows
    of codes), when it forbids any. Wider rules are left to decoding and repair."""
    columns = {c.name: c for c in schema.columns}
    thresholds = _thresholds(schema.rules)
    out = []
    for rule in schema.rules:
        names = rule.columns
        if np.prod([columns[n].n_codes for n in names]) > max_cells:
            continue
        points = {n: [_test_points(columns[n], code, thresholds.get(n, set())) for code in range(columns[n].n_codes)]
                  for n in names}
        cells = list(itertools.product(*(range(columns[n].n_codes) for n in names)))
        owner, values = [], {n: [] for n in names}
        for k, cell in enumerate(cells):
            for combo in itertools.product(*(points[n][code] for n, code in zip(names, cell, strict=True))):
                owner.append(k)
                for n, v in zip(names, combo, strict=True):
                    values[n].append(v)
        frame = pd.DataFrame({n: _typed(columns[n], values[n]) for n in names})
        broken = rule.violations(frame)
        always = np.ones(len(cells), dtype=bool)
        np.logical_and.at(always, np.asarray(owner), broken)
        if always.any():
            out.append((names, np.asarray([cells[k] for k in np.flatnonzero(always)], dtype=np.int64)))
    return out


def fine_zeros(schema: Schema) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """Per column with a fine grid: ``(column, column:fine)`` and the (bin, fine cell) code pairs
    that cannot occur together (the cell lies in another bin; missing with present)."""
    out = []
    for column in schema.fine_columns:
        parent = np.append(column.fine_bins, column.n_values)[: column.n_fine_codes]  # missing -> missing
        bins, cells = np.meshgrid(np.arange(column.n_codes), np.arange(column.n_fine_codes), indexing="ij")
        forbidden = bins != parent[cells]
        out.append(((column.name, column.fine_name), np.column_stack([bins[forbidden], cells[forbidden]])))
    return out


def _test_points(column: Column, code: int, thresholds: set[float]) -> list:
    """Values a code can decode to, enough to decide interval and comparison conditions (None: NA)."""
    if code == column.n_values:  # the missing code
        return [None]
    if column.kind in CATEGORY_KINDS or column.kind == "boolean":
        return [code]
    low, high = column.edges[code], column.edges[code + 1]
    last = code == column.n_values - 1
    if column.kind == "integer":
        first, final = (int(v[code]) for v in column.bin_integers)
        if column.codes is not None:
            listed = column.sorted_codes[(column.sorted_codes >= first) & (column.sorted_codes <= final)]
            if 0 < listed.size <= MAX_LISTED:
                return [int(v) for v in listed]
        inside = {int(np.floor(t)) for t in thresholds} | {int(np.ceil(t)) for t in thresholds}
        return sorted({first, final} | {v for t in inside for v in (t - 1, t, t + 1) if first <= v <= final})
    top = high if last else float(np.nextafter(high, low))
    return sorted({float(low), float(top)} | {float(t) for t in thresholds if low <= t <= top})


def _typed(column: Column, values: list) -> object:
    missing = np.array([v is None for v in values])
    raw = np.array([0 if v is None else v for v in values])
    return typed_values(column, raw, missing, nullable=bool(missing.any()) or column.missing)


def _thresholds(rules: tuple[Rule, ...]) -> dict[str, set[float]]:
    """Every numeric bound a rule states, by column."""
    out: dict[str, set[float]] = {}
    for rule in rules:
        for condition in _conditions(rule):
            for bound in (condition.min, condition.max):
                if isinstance(bound, (int, float)) and not isinstance(bound, bool):
                    out.setdefault(condition.column, set()).add(float(bound))
    return out


def _conditions(rule: Rule) -> list[Condition]:
    if isinstance(rule, Implication):
        return [*rule.when, *rule.then]
    return [condition for _value, condition in rule.map]
