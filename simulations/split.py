"""Split one table into N organisations' tables: IID, Dirichlet label skew, or by a column.

The split is the simulation's own public choice, so refusing one that leaves an organisation
without rows (or asks for more organisations than rows) reveals nothing: a deployment never
splits, each organisation holds its own table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


class SplitError(ValueError):
    """The split description cannot be applied to this table."""


def split_table(
    table: pd.DataFrame, parties: int, how: str, label: str | None, seed: int
) -> list[pd.DataFrame]:
    """Partition the rows of ``table`` into ``parties`` tables.

    ``how`` is ``iid``, ``dirichlet:ALPHA`` (each label value's rows are spread over the
    parties with proportions drawn from Dirichlet(ALPHA); small ALPHA = strong skew, the
    usual label-skew benchmark) or ``by-column:COL`` (every value of COL goes whole to one
    party, greedily balancing sizes: e.g. one hospital per region; with ``parties`` a multiple
    of COL's values, each value's rows are shared evenly, at random, among ``parties / values``
    parties: several hospitals per region, each still in one region).
    """
    if parties < 1:
        raise SplitError(f"need at least one party, got {parties}")
    if len(table) == 0:
        raise SplitError("the table has no rows (only a header); give a table with rows")
    if parties > len(table):
        raise SplitError(f"--parties {parties} exceeds the table's {len(table):,} rows; every organisation "
                         f"needs rows: use at most {len(table):,} parties")
    rng = np.random.default_rng(seed)
    kind, _, arg = how.partition(":")
    if kind == "iid" and arg:
        raise SplitError(f"split {how!r}: iid takes no argument; use --split iid")
    if kind == "iid":
        groups = np.array_split(rng.permutation(len(table)), parties)
    elif kind == "dirichlet":
        groups = _dirichlet_groups(table, parties, _alpha(arg), _column(table, label, "dirichlet"), rng)
    elif kind == "by-column":
        groups = _by_column_groups(table, parties, _column(table, arg, "by-column"), rng)
    else:
        raise SplitError(f"unknown split {how!r}; use iid, dirichlet:ALPHA or by-column:COL")
    empty = [i for i, g in enumerate(groups) if len(g) == 0]
    if empty:
        sizes = sorted((len(g) for g in groups), reverse=True)
        raise SplitError(f"split {how!r} leaves {len(empty)} of {parties} organisations with no rows "
                         f"(e.g. organisation {empty[0]}); use fewer parties (here at most "
                         f"{sum(1 for n in sizes if n)}), a larger dirichlet alpha, or --split iid")
    return [table.iloc[np.sort(g)].reset_index(drop=True) for g in groups]


def _alpha(text: str) -> float:
    try:
        alpha = float(text)
    except ValueError:
        raise SplitError(f"dirichlet needs a number, e.g. dirichlet:0.5, got {text!r}") from None
    if not (math.isfinite(alpha) and alpha > 0):
        raise SplitError(f"dirichlet alpha must be a finite number > 0 (e.g. dirichlet:0.5), got {text!r}")
    return alpha


def _column(table: pd.DataFrame, name: str | None, kind: str) -> pd.Series:
    if not name:
        raise SplitError(f"{kind} split needs a column (the schema's label, or by-column:COL)")
    if name not in table.columns:
        raise SplitError(f"{kind} split: no column {name!r} in the table")
    column = table[name]
    return column.astype("string").fillna("").astype(str)  # missing values form a group of their own


def _dirichlet_groups(
    table: pd.DataFrame, parties: int, alpha: float, labels: pd.Series, rng: np.random.Generator
) -> list[np.ndarray]:
    groups: list[list[int]] = [[] for _ in range(parties)]
    for value in sorted(labels.unique()):
        rows = rng.permutation(np.flatnonzero((labels == value).to_numpy()))
        shares = rng.dirichlet(np.full(parties, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for party, part in enumerate(np.split(rows, cuts)):
            groups[party].extend(part.tolist())
    return [np.array(g, dtype=int) for g in groups]


def _by_column_groups(
    table: pd.DataFrame, parties: int, column: pd.Series, rng: np.random.Generator
) -> list[np.ndarray]:
    sizes = column.value_counts()
    values = len(sizes)
    if parties > values and parties % values:
        raise SplitError(f"by-column:{column.name}: column {column.name!r} has {values} values, and {parties} "
                         f"parties is neither at most {values} nor a multiple of it; use at most {values} "
                         f"parties (whole values per organisation) or {values * 2}, {values * 3}, ... "
                         f"(each value's rows shared by that many organisations / {values})")
    if parties > values:
        return _shared_value_groups(column, sizes.index, parties // values, rng)
    load = np.zeros(parties, dtype=int)
    groups: list[list[int]] = [[] for _ in range(parties)]
    for value, size in sizes.items():  # largest first, each to the lightest party
        party = int(np.argmin(load))
        groups[party].extend(np.flatnonzero((column == value).to_numpy()).tolist())
        load[party] += size
    return [np.array(g, dtype=int) for g in groups]


def _shared_value_groups(
    column: pd.Series, values: pd.Index, share: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Each value's rows in a random order, cut into ``share`` parts of equal size (within one row):
    parties ``i * share`` to ``(i + 1) * share - 1`` hold the ``i``-th value (largest first)."""
    groups = []
    for value in values:
        rows = rng.permutation(np.flatnonzero((column == value).to_numpy()))
        groups.extend(np.array_split(rows, share))
    return groups
