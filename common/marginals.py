"""Marginals of integer-coded tables: counting, candidate sets, and scoring against a model.

A *clique* is a tuple of column names; its marginal is the vector of counts over the
cartesian product of those columns' codes (C order, as ``mbi`` lays it out). Adding or
removing one record changes exactly one cell of a marginal by 1: L1 = L2 sensitivity 1.

An organisation scores a candidate by the L1 distance between its own marginal and the model's
(:func:`local_errors`), for the selection vote (``common.vote``) and the summed scores
(``common.rounds``). The model's view comes from the coordinator, so the distance is computed
in integers on a public grid (the view's weights: :func:`view_weights`), clipped to a public
bound: whatever view a coordinator sends, one record moves an error by at most
:data:`SCORE_SENSITIVITY` rows, exactly, and no rounding depends on the data.
"""

from __future__ import annotations

import itertools
import math
import json
from collections.abc import Mapping, Sequence

import numpy as np

Clique = tuple[str, ...]


#: Rows counted at a time by :func:`marginal`: its temporary index arrays stay under ~10 MB
#: however many rows a table has.
CHUNK_ROWS = 1 << 18


#: Largest marginal an organisation counts (128 MiB of int64): far above any the generator asks for.
MAX_MARGINAL_CELLS = 2**24


def marginal(codes: np.ndarray, columns: Sequence[str], domain: Mapping[str, int], clique: Clique) -> np.ndarray:
    """Count vector of ``clique`` over the rows of ``codes`` (rows x columns, int codes), counted
    ``CHUNK_ROWS`` rows at a time. A clique of no column or of more than
    :data:`MAX_MARGINAL_CELLS` cells (the coordinator chooses cliques) fails before any row is
    read, so the failure is the same for every table and says nothing about the rows. So does a
    shape that numpy cannot index (too many columns): the index is tried on no row first."""
    idx = [list(columns).index(c) for c in clique]
    shape = tuple(domain[c] for c in clique)
    if not clique:
        raise ValueError("a marginal needs at least one column")
    if cells(domain, clique) > MAX_MARGINAL_CELLS:
        raise ValueError(f"a marginal of {len(clique)} columns has more than {MAX_MARGINAL_CELLS} cells")
    np.ravel_multi_index(tuple(np.zeros(0, dtype=np.int64) for _ in shape), shape)
    counts = np.zeros(cells(domain, clique), dtype=np.int64)
    for start in range(0, len(codes), CHUNK_ROWS):
        part = codes[start : start + CHUNK_ROWS]
        counts += np.bincount(np.ravel_multi_index(tuple(part[:, i] for i in idx), shape), minlength=counts.size)
    return counts


def count_sensitivity(row_cap: int | None) -> tuple[float, float]:
    """(L1, L2) per-record sensitivity of one marginal: 1 without a row cap; with one, a row of
    the capped table may be replaced rather than added or removed (``common.rounds``)."""
    return (1.0, 1.0) if row_cap is None else (2.0, math.sqrt(2.0))


def marginals(
    codes: np.ndarray, columns: Sequence[str], domain: Mapping[str, int], cliques: Sequence[Clique]
) -> np.ndarray:
    """Concatenated count vectors of ``cliques`` (one block per clique)."""
    if not cliques:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([marginal(codes, columns, domain, cl) for cl in cliques])


def cells(domain: Mapping[str, int], clique: Clique) -> int:
    """Cells of ``clique``'s marginal, exactly (Python integers: no int64 wrap-around)."""
    return math.prod(int(domain[c]) for c in clique)


def total_cells(domain: Mapping[str, int], cliques: Sequence[Clique]) -> int:
    """Length of the concatenated marginals of ``cliques``."""
    return sum(cells(domain, cl) for cl in cliques)


def in_slot(vector: np.ndarray, slots: Sequence[str], name: str) -> np.ndarray:
    """``vector`` in block ``slots.index(name)`` of ``len(slots)`` blocks, zeros elsewhere.

    One organisation's contribution to a sum that keeps organisations apart: a record moves
    only its own organisation's block, so the sensitivity is that of ``vector`` itself.
    """
    out = np.zeros((len(slots), vector.size), dtype=vector.dtype)
    out[list(slots).index(name)] = vector
    return out.ravel()


def candidate_cliques(
    domain: Mapping[str, int], max_size: int = 3, max_cells: int = 10_000
) -> list[Clique]:
    """All 2- and (up to ``max_size``)-way cliques whose marginal has at most ``max_cells``."""
    columns = list(domain)
    out: list[Clique] = []
    for k in range(2, max_size + 1):
        out += [cl for cl in itertools.combinations(columns, k) if cells(domain, cl) <= max_cells]
    return out


def split_blocks(vector: np.ndarray, domain: Mapping[str, int], cliques: Sequence[Clique]) -> list[np.ndarray]:
    """Inverse of :func:`marginals`: cut a concatenated vector into per-clique blocks."""
    sizes = [cells(domain, cl) for cl in cliques]
    return np.split(np.asarray(vector), np.cumsum(sizes)[:-1])


#: Bits of the public grid the model's view is put on: each candidate's normalised marginal
#: becomes integer weights summing to exactly ``2**VIEW_BITS`` (:func:`view_weights`).
VIEW_BITS = 24

#: Largest entry a model view may hold: counts of sampled rows, exact in float64.
MAX_VIEW_VALUE = float(2**53)

#: Public bound on a local error, in rows: errors are clipped to it (:func:`local_errors`).
MAX_ERROR_ROWS = 2**32

#: Per-record sensitivity of a local error, in rows (:func:`local_errors`).
SCORE_SENSITIVITY = 2.0

#: Scores are summed on an integer grid of ``1 / SCORE_GRID`` (deterministic rounding).
SCORE_GRID = 4


def view_weights(block: np.ndarray) -> np.ndarray:
    """One candidate's model marginal as non-negative integers summing to exactly ``2**VIEW_BITS``.

    Cumulative rounding: ``floor(2**VIEW_BITS * cumsum / total)`` is non-decreasing (floating
    point addition of non-negative numbers, division by a positive number and multiplication by
    one are monotone), it is clipped to ``[0, 2**VIEW_BITS]`` and its last value set to
    ``2**VIEW_BITS``, and the weights are its differences. A deterministic function of the public view only, so
    its floating point needs no precision argument; what matters is that the weights are
    non-negative and sum to ``2**VIEW_BITS`` whatever the view holds. ``block`` must be finite,
    non-negative and of positive sum (the guard refuses any other view).
    """
    values = np.asarray(block, dtype=np.float64)
    cumulative = np.floor(np.cumsum(values) / values.sum() * 2.0**VIEW_BITS)
    cumulative = np.clip(cumulative, 0, 2**VIEW_BITS).astype(np.int64)
    cumulative[-1] = 2**VIEW_BITS
    return np.diff(cumulative, prepend=0)


def local_errors(
    local: Sequence[np.ndarray], model: Sequence[np.ndarray], layouts: Sequence[Layout] | None = None
) -> np.ndarray:
    """Each candidate's L1 error against the model, computed by one organisation on its own rows,
    exactly, in units of ``2**-VIEW_BITS`` rows, clipped to the public :data:`MAX_ERROR_ROWS`.

    ``error_r = || M_r(D_i) - n_i * w_r / 2**VIEW_BITS ||_1`` where ``w_r`` is the model's marginal
    on the public grid (:func:`view_weights`) and ``n_i`` the local row count (used here, never
    sent): in integers, ``sum_x |2**VIEW_BITS m_x - n_i w_x|``. With a layout that names given
    axes (:func:`layout`), the model's marginal is taken given those columns and weighted by the
    organisation's own counts of them: ``sum_x |2**VIEW_BITS m_x - n_g(x) w_{x|g}|``, where
    ``w_{.|g}`` are the view's weights within slice ``g`` of the given columns and ``n_g`` the
    local rows in that slice (the error of the rest of the candidate given them; no error of the
    model on the given columns themselves counts). Adding or removing one local record moves one
    ``m_x`` by 1 and one ``n_g`` by 1 (``n_i`` without given axes), so the error moves by at most
    ``2**VIEW_BITS + sum_{x in g} w_{x|g} = 2**(VIEW_BITS + 1)`` units (:data:`SCORE_SENSITIVITY`
    rows), whatever the view and the layout; clipping is 1-Lipschitz and keeps that bound. Every
    step is integer arithmetic: each term and the sum are at most ``2**(VIEW_BITS + 1) n_i``, exact
    in int64 below ``2**38`` rows (a table's codes alone would then take terabytes). No floating
    point touches the data.
    """
    if not len(local):
        return np.zeros(0, dtype=np.int64)
    layouts = layouts if layouts is not None else [((m.size,), ()) for m in local]
    errors = [_conditional_error(np.asarray(m, dtype=np.int64), p, lay) for m, p, lay in zip(local, model, layouts, strict=True)]
    return np.minimum(np.array(errors, dtype=np.int64), MAX_ERROR_ROWS << VIEW_BITS)


#: A candidate's shape (its columns' sizes) and the axes its error is taken given (:func:`layout`).
Layout = tuple[tuple[int, ...], tuple[int, ...]]


def layout(clique: Clique, domain: Mapping[str, int], given: Sequence[str]) -> Layout:
    """``clique``'s shape and the position of the first column of ``given`` (in ``given``'s order)
    that it holds: its error is taken given that one column (none when it holds none of them)."""
    first = next((clique.index(c) for c in given if c in clique), None)
    return tuple(int(domain[c]) for c in clique), () if first is None else (first,)


def _conditional_error(counts: np.ndarray, view: np.ndarray, lay: Layout) -> int:
    """``sum_x |2**VIEW_BITS m_x - n_g(x) w_{x|g}|`` of :func:`local_errors` for one candidate:
    its cells as rows of the given axes' slices ``g`` (one row of every cell without given axes);
    a slice to which the view gives no mass is weighted uniformly (public: the view alone)."""
    shape, given = lay
    rest = tuple(i for i in range(len(shape)) if i not in given)
    slices = math.prod(shape[i] for i in given)
    m = np.transpose(counts.reshape(shape), given + rest).reshape(slices, -1)
    p = np.transpose(np.asarray(view, dtype=np.float64).reshape(shape), given + rest).reshape(slices, -1)
    weights = np.stack([view_weights(row if row.sum() > 0 else np.ones_like(row)) for row in p])
    return int(np.abs((m << VIEW_BITS) - m.sum(axis=1, keepdims=True) * weights).sum())


def scores_on_grid(errors: np.ndarray) -> np.ndarray:
    """Local errors (:func:`local_errors`) on the integer grid of :data:`SCORE_GRID` steps per
    row, rounded half up in integer arithmetic."""
    return (SCORE_GRID * np.asarray(errors, dtype=np.int64) + (1 << (VIEW_BITS - 1))) >> VIEW_BITS


def grid_score_sensitivity(candidates: int) -> tuple[float, float]:
    """(L1, L2) per-record sensitivity of ``candidates`` scores on the grid.

    Each score moves by at most ``SCORE_SENSITIVITY`` (``SCORE_GRID * SCORE_SENSITIVITY`` grid
    steps), and rounding two values adds at most one step between them.
    """
    per_score = SCORE_GRID * SCORE_SENSITIVITY + 1.0
    return per_score * candidates, per_score * float(np.sqrt(candidates))


def expected_noise_l1(sigma: float, clique: Clique, domain: Mapping[str, int]) -> float:
    """AIM's penalty: expected L1 norm of Gaussian noise of std ``sigma`` on a marginal."""
    return float(np.sqrt(2.0 / np.pi) * sigma * cells(domain, clique))


def penalties(sigma: float, candidates: Sequence[Clique], domain: Mapping[str, int]) -> np.ndarray:
    """AIM's penalty of each candidate at noise std ``sigma``."""
    return np.array([expected_noise_l1(sigma, cl, domain) for cl in candidates])


def expected_sampling_l1(rows: float, distribution: np.ndarray) -> float:
    """Expected L1 distance between ``rows`` draws from ``distribution`` and their mean.

    The normal approximation ``sum_x sqrt(2 rows p_x (1 - p_x) / pi)``: how far even a
    perfect model is from an organisation's counts, by sampling alone.
    """
    p = np.asarray(distribution, dtype=np.float64)
    p = p / max(p.sum(), 1e-12)
    return float(np.sqrt(2.0 * max(rows, 0.0) / np.pi) * np.sqrt(p * (1.0 - p)).sum())


def first_k_not_contained(order: Sequence[int], candidates: Sequence[Clique], k: int) -> list[int]:
    """The first ``k`` indices of ``order`` whose clique is not inside an earlier pick."""
    picks: list[int] = []
    for i in order:
        if not any(set(candidates[i]) <= set(candidates[j]) for j in picks):
            picks.append(int(i))
            if len(picks) == k:
                break
    return picks


def cliques_to_json(cliques: Sequence[Clique]) -> str:
    return json.dumps([list(cl) for cl in cliques])


def cliques_from_json(text: str) -> list[Clique]:
    return [tuple(cl) for cl in json.loads(text)]
