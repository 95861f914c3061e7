"""Marginals of integer-coded tables: counting, candidate sets, and scoring against a model.

A *clique* is a tuple of column names; its marginal is the vector of counts over the
cartesian product of those columns' codes (C order, as ``mbi`` lays it out). Adding or
removing one record changes exactly one cell of a marginal by 1: L1 = L2 sensitivity 1.
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


def marginal(codes: np.ndarray, columns: Sequence[str], domain: Mapping[str, int], clique: Clique) -> np.ndarray:
    """Count vector of ``clique`` over the rows of ``codes`` (rows x columns, int codes), counted
    ``CHUNK_ROWS`` rows at a time."""
    idx = [list(columns).index(c) for c in clique]
    shape = tuple(domain[c] for c in clique)
    counts = np.zeros(int(np.prod(shape)), dtype=np.int64)
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
    return int(np.prod([domain[c] for c in clique]))


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


def local_scores(local: Sequence[np.ndarray], model: Sequence[np.ndarray], penalties: np.ndarray) -> np.ndarray:
    """AIM-style quality of each candidate, computed by one organisation on its own rows.

    ``score_r = || M_r(D_i) - n_i * p_r ||_1 - penalty_r`` where ``p_r`` is the global
    model's normalised marginal and ``n_i`` the local row count (used here, never sent).
    The coordinator passes each organisation its share of AIM's penalty for the noise a
    measurement would add (a public constant). Adding or removing one local record moves
    ``M_r(D_i)`` by 1 in one cell and ``n_i * p_r`` by ``p_r`` (L1 norm 1): the score's
    sensitivity is :data:`SCORE_SENSITIVITY`.
    """
    n_i = float(local[0].sum()) if len(local) else 0.0
    errors = np.array(
        [np.abs(m - n_i * (p / max(p.sum(), 1e-12))).sum() for m, p in zip(local, model, strict=True)]
    )
    return errors - penalties


#: Per-record sensitivity of :func:`local_scores`.
SCORE_SENSITIVITY = 2.0

#: Scores are summed on an integer grid of ``1 / SCORE_GRID`` (deterministic rounding).
SCORE_GRID = 4


def scores_on_grid(scores: np.ndarray) -> np.ndarray:
    """``scores`` rounded to the integer grid of :data:`SCORE_GRID` steps per unit."""
    return np.rint(SCORE_GRID * np.asarray(scores, dtype=np.float64)).astype(np.int64)


def grid_score_sensitivity(candidates: int) -> tuple[float, float]:
    """(L1, L2) per-record sensitivity of ``candidates`` scores on the grid.

    Each score moves by at most ``SCORE_SENSITIVITY`` (``SCORE_GRID * SCORE_SENSITIVITY`` grid
    steps), and rounding two values adds at most one step between them.
    """
    per_score = SCORE_GRID * SCORE_SENSITIVITY + 1.0
    return per_score * candidates, per_score * float(np.sqrt(candidates))


def expected_sampling_l1(rows: float, distribution: np.ndarray) -> float:
    """Expected L1 distance between ``rows`` draws from ``distribution`` and their mean.

    The normal approximation ``sum_x sqrt(2 rows p_x (1 - p_x) / pi)``: how far even a
    perfect model is from an organisation's counts, by sampling alone.
    """
    p = np.asarray(distribution, dtype=np.float64)
    p = p / max(p.sum(), 1e-12)
    return float(np.sqrt(2.0 * max(rows, 0.0) / np.pi) * np.sqrt(p * (1.0 - p)).sum())


def exponential_mechanism_top_k(
    rng: np.random.Generator,
    scores: np.ndarray,
    epsilon: float,
    sensitivity: float,
    k: int,
    candidates: Sequence[Clique],
) -> list[int]:
    """``k`` indices by ``k`` rounds of the exponential mechanism without replacement.

    Each round draws among the candidates still allowed with probability proportional to
    ``exp(epsilon * score / (2 * sensitivity))``; a candidate contained in one already drawn
    is no longer allowed (its marginal follows from the drawn one). Gumbel noise added once,
    then scanned in descending order, samples exactly that peeling process: the Gumbel-max
    argmax is independent of the max, so conditioning on earlier draws leaves the softmax on
    any remaining subset (Durfee & Rogers, NeurIPS 2019). Each round is ``epsilon``-DP and
    bounded-range, i.e. ``epsilon**2 / 8``-zCDP; the ``k`` rounds compose.
    """
    logits = epsilon * np.asarray(scores, dtype=np.float64) / (2.0 * sensitivity)
    noisy = logits + rng.gumbel(size=logits.shape)
    return first_k_not_contained(np.argsort(-noisy, kind="stable"), candidates, k)


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
