"""Bounds and bins of numeric, integer and datetime columns from noisy counts on a public grid.

Mechanism
---------
Every organisation counts its column's present values on a public grid fixed in this module
(:data:`NUMBER_EDGES`: zero and signed log-spaced edges, 16 per decade from 1e-3 to 1e12;
:data:`DAY_EDGES`: one cell per four weeks from 1900 to 2100 for dates, in days since 1970).
Values beyond the grid count in its first or last cell. The counts are summed through the
secure noisy sum. The coordinator reads DP quantiles off the noisy histogram: at each of the
public block sizes :data:`SCALES` it sums adjacent cells into blocks and keeps the blocks whose
noisy count clears a floor (the heavy hitters' release threshold for the block's summed noise,
so that noise alone clears it in any empty block with small public probability; the noise of
hundreds of empty cells then cannot swamp the rows nor a spurious far cell move a bound); it
uses the finest block size that keeps nearly the most mass (:data:`KEEP`), with blocks growing
outward from zero, spreads each kept block's mass over its cells that pass :data:`REFINE_Z` noise
stds (a block is known to hold rows, so a low per-cell bar inside it admits few false cells), and
interpolates the cumulative sum linearly
inside a block. The bounds are the quantiles at ``tail`` and
``1 - tail`` (default 0.5% and 99.5%) and quantile bins between them, so that the model's
cells carry similar mass; a value that two quantiles share (an atom: zero in a zero-inflated
column) gets a bin of its own, and the upper bound leaves a bin after it (the noise may hide a
thin tail above an atom: its values are then clipped into that bin, not into the atom's).

Sensitivity
-----------
A row adds 1 to exactly one cell of its column's histogram (or to the column's missing cell):
L1 = L2 = 1 per column, summed over the columns of the round by ``common.discovery.protocol``.

Privacy argument
----------------
The grid is public and data-independent; the quantiles, the bounds and the bins are
post-processing of the noisy counts, so they cost nothing beyond the round. A value beyond the
bounds is clipped by the schema (``out_of_range: clip``), so no organisation is refused for it.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from .heavy_hitters import release_threshold

#: Cells per decade of the public log grid: coarse enough that a decade's rows are not spread
#: over so many cells that the round's noise hides them (64 per decade lost a column's tails).
PER_DECADE = 16
_DECADES = np.arange(-3 * PER_DECADE, 12 * PER_DECADE + 1) / PER_DECADE
#: Public grid of numeric and integer columns: -1e12 ... -1e-3, 0, 1e-3 ... 1e12.
NUMBER_EDGES = np.concatenate([-(10.0 ** _DECADES[::-1]), [0.0], 10.0**_DECADES])
_EPOCH = dt.date(1970, 1, 1)
#: Public grid of datetime columns: days since 1970, one cell every four weeks from 1900 to 2100.
DAY_EDGES = np.arange((dt.date(1900, 1, 1) - _EPOCH).days, (dt.date(2100, 1, 1) - _EPOCH).days + 28, 28, dtype=np.float64)
#: Block sizes (in grid cells) at which the coordinator looks for the column's mass: up to two
#: decades, so a kept block cannot spread its rows over a far range.
SCALES = (1, 2, 4, 8, 16, 32)
#: The finest block size that keeps this share of the most mass any size keeps is used.
KEEP = 0.9
#: Inside a kept block, cells above this many noise stds carry its mass (post-processing).
REFINE_Z = 2.0
#: Default share of the rows left below the lower bound, and above the upper bound.
TAIL = 0.005
for _edges in (NUMBER_EDGES, DAY_EDGES):
    _edges.flags.writeable = False


def grid_of(kind: str) -> np.ndarray:
    """The public grid of a column kind (``datetime``: days; ``numeric``/``integer``: numbers)."""
    return DAY_EDGES if kind == "datetime" else NUMBER_EDGES


def grid_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the finite ``values`` per grid cell (``len(edges) - 1``; beyond: end cells)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    cells = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(cells, minlength=len(edges) - 1).astype(np.int64)


def noisy_quantiles(noisy: np.ndarray, edges: np.ndarray, qs: np.ndarray) -> np.ndarray | None:
    """The ``qs`` quantiles of a noisy histogram (negative cells as zero; post-processing), or
    None if it holds no mass."""
    mass = np.clip(np.asarray(noisy, dtype=np.float64), 0.0, None)
    total = mass.sum()
    if total <= 0:
        return None
    cdf = np.concatenate([[0.0], np.cumsum(mass) / total])
    qs = np.clip(np.asarray(qs, dtype=np.float64), 1e-12, 1.0)
    cell = np.minimum(np.searchsorted(cdf[1:], qs, side="left"), len(mass) - 1)  # first cell reaching q
    inside = (qs - cdf[cell]) / np.where(mass[cell] > 0, mass[cell] / total, 1.0)
    return edges[cell] + np.clip(inside, 0.0, 1.0) * (edges[cell + 1] - edges[cell])


def supported_blocks(noisy: np.ndarray, edges: np.ndarray, mu: float, false_positive: float) -> tuple[np.ndarray, np.ndarray]:
    """(mass per cell, the grid's edges): the kept blocks of the finest block size of
    :data:`SCALES` that keeps at least :data:`KEEP` of the most noisy mass any size keeps in blocks
    clearing their floor, spread over their cells (:func:`_refined`; post-processing). Blocks grow
    outward from zero, which is always a block edge."""
    noisy = np.asarray(noisy, dtype=np.float64)
    zero = int(np.searchsorted(edges, 0.0)) if edges[0] < 0 < edges[-1] else 0
    candidates = []
    for scale in SCALES:
        below, above = -(-zero // scale), -(-(len(noisy) - zero) // scale)  # blocks on each side of zero
        index = np.arange(len(noisy))
        block_of = np.where(index < zero, below - 1 - (zero - 1 - index) // scale, below + (index - zero) // scale)
        counts = np.bincount(block_of, weights=noisy, minlength=below + above)
        floor = release_threshold(mu * scale, len(counts), false_positive)
        kept = np.where(counts > floor, counts, 0.0)
        candidates.append((kept.sum(), kept, block_of))
    most = max(mass for mass, _, _ in candidates)
    _, kept, block_of = next(c for c in candidates if c[0] >= KEEP * most)
    return _refined(noisy, kept, block_of, mu), edges


def _refined(noisy: np.ndarray, kept: np.ndarray, block_of: np.ndarray, mu: float) -> np.ndarray:
    """Each kept block's mass over its cells, in proportion to the cells whose noisy count passes
    :data:`REFINE_Z` noise stds (evenly when none does); cells of dropped blocks get nothing."""
    mass = np.zeros(len(noisy))
    strong = np.where(noisy > REFINE_Z * np.sqrt(2.0 * mu), noisy, 0.0)
    for block in np.flatnonzero(kept):
        cells = block_of == block
        weights = strong[cells] if strong[cells].sum() > 0 else np.ones(int(cells.sum()))
        mass[cells] = kept[block] * weights / weights.sum()
    return mass


def _blocks(values: np.ndarray, edges: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``scale`` adjacent cells from the first one on, and the blocks' edges."""
    if not len(values):
        return np.zeros(0), edges[:1]
    pad = -len(values) % scale
    sums = np.concatenate([values, np.zeros(pad)]).reshape(-1, scale).sum(axis=1)
    return sums, np.append(edges[::scale][: len(sums)], edges[-1])


def bounds_and_edges(
    noisy: np.ndarray, kind: str, bins: int, mu: float, false_positive: float, tail: float = TAIL
) -> tuple[float, float, list[float]] | None:
    """(lower, upper, bin edges) of a column from its noisy histogram (summed Skellam noise
    ``mu`` per cell), or None when no block clears its floor (:func:`supported_blocks`).

    Integer columns get integer bounds and edges (each bin then holds an integer); numeric
    columns edges rounded to 4 significant digits; datetime columns whole days.
    """
    mass, edges = supported_blocks(noisy, grid_of(kind), mu, false_positive)
    inner = tail + (1 - 2 * tail) * np.arange(1, bins) / bins
    qs = noisy_quantiles(mass, edges, np.concatenate([[tail], inner, [1 - tail]]))
    if qs is None:
        return None
    if kind == "numeric":
        cuts = [_significant(q) for q in qs]
    else:
        cuts = [float(math.floor(qs[0]))] + [float(round(q)) for q in qs[1:-1]] + [float(math.ceil(qs[-1]))]
    ends = _atom_ends(cuts, kind)
    lower = cuts[0]
    upper = max([cuts[-1], cuts[0] + 1] + [_past(end, kind) for end in ends])  # no atom's bin is the last one
    inside = sorted({c for c in cuts[1:-1] + ends if lower < c < upper})
    return lower, upper, [lower, *inside, upper]


def _past(end: float, kind: str) -> float:
    """The least upper bound that leaves a bin after an atom's bin ending at ``end``."""
    if kind == "integer":
        return end + 1
    return float(NUMBER_EDGES[min(np.searchsorted(NUMBER_EDGES, end, side="right"), len(NUMBER_EDGES) - 1)])


def _atom_ends(cuts: list[float], kind: str) -> list[float]:
    """Where the bin of each atom ends: a value that two or more quantiles share holds at least
    a bin's share of the rows (zero in a zero-inflated column, 40 hours a week), so it gets a bin
    of its own, up to the next integer (integers) or the next public grid edge (numbers; dates
    take a count of bins, not edges, so none)."""
    if kind == "datetime":
        return []
    atoms = sorted({c for c in cuts if cuts.count(c) > 1})
    if kind == "integer":
        return [a + 1 for a in atoms]
    return [float(NUMBER_EDGES[np.searchsorted(NUMBER_EDGES, a, side="right")]) for a in atoms if a < NUMBER_EDGES[-1]]


def _significant(x: float, digits: int = 4) -> float:
    return 0.0 if x == 0 else float(f"{x:.{digits}g}")


def day_number(value: dt.datetime) -> float:
    """Whole days since 1970 of a date or datetime (the datetime grid's unit)."""
    return float((value.date() - _EPOCH).days)


def day_text(days: float) -> str:
    """An ISO date from days since 1970."""
    return (_EPOCH + dt.timedelta(days=int(days))).isoformat()
