"""Federated heavy hitters of a text column: a length round, then prefix-tree rounds over bytes.

Mechanism
---------
A text value is its UTF-8 bytes. Round 0 (``common.discovery.protocol``) counts each column's
values by length (:func:`length_counts`: ``0 .. max_bytes`` and one cell for longer values); the
longest length whose noisy count clears a strict floor (:func:`longest_heavy_length`) is the
column's public, DP-derived depth ``D``: a value held by more rows than the floor makes its
length's cell clear it too, so rounds deeper than ``D`` could release nothing and are not run.
Text round ``L`` (``L = 0 .. D``) asks every organisation, for each candidate prefix ``p`` of
length ``L`` that the coordinator has already found, how many of its rows hold a value that
starts with ``p``, split by the value's next symbol: one of the 256 bytes, or ``END`` when the
value is exactly ``p``. The counts of all organisations are summed through the secure noisy sum
(SecAgg+ with Skellam shares, ``common.secure_sum``). The coordinator keeps every extension
``p + byte`` whose noisy count clears the extension threshold (:func:`release_threshold`: noise
alone lifts some empty cell of the round over it with probability at most ``false_positive``,
a utility choice: a spurious prefix is pruned in the next round) as a candidate of the next
round, at most ``max_candidates`` of them; an ``END`` cell releases the value ``p`` when it also
clears the value threshold (:func:`value_threshold`). The first round's candidates are the empty
prefix alone; a value longer than ``D`` bytes is never released. Everything the rounds do not
release falls into the schema's ``other`` category.

Sensitivity
-----------
In one round a row adds 1 to at most one cell of its column's block: its missing cell or its
length's cell in round 0; in a text round, the cell of its value's prefix of length ``L`` and
next symbol, if that prefix is a candidate (prefixes of one length are disjoint events; a
request mixing lengths counts only those of the first one's). Adding or removing one row
moves the column's block by L1 = L2 = 1 per round; over ``k`` columns counted in the same round,
L1 = k and L2 = sqrt(k) (``common.discovery.protocol``). Candidates, depths and each round's
noise depend only on earlier noisy sums, so the rounds are an adaptive composition of Skellam
mechanisms, each accounted as such, under a total fixed before round 0 (``server.discovery``).

Privacy argument
----------------
Every count the coordinator sees carries the Skellam noise of its round; choosing depths and
candidates, thresholding and decoding are post-processing, so the values released are as private
as the noisy counts. On top of DP, the value threshold is ``RARE_ROWS`` (3) plus the point of the exact
Skellam tail at the job's delta: a value held by at most 3 rows (of one organisation
or several) is released with probability at most delta, even when its prefix is shared with
common values and only its own ``END`` cell tells it apart (the canary test checks three such
canaries over many seeds). Thresholds are set from the noise (itself set from epsilon and delta)
and public constants, never from data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

from ..noise import skellam_upper_bound

#: The symbol that ends a value; bytes are 0..255.
END = 256
SYMBOLS = 257
#: Default public length limit of a discoverable value, in UTF-8 bytes.
MAX_BYTES = 32
#: The largest length limit a round-0 request may name (its length histogram's size).
MAX_LENGTH_LIMIT = 256
#: Default public cap on the prefixes one column carries into a round (the noisiest are dropped).
MAX_CANDIDATES = 64
#: Default bound on the probability that noise alone lifts some empty cell of a round over the
#: extension threshold (a utility choice: a spurious prefix is pruned in the next round).
FALSE_POSITIVE = 0.05
#: Bound on the probability that noise alone lifts some empty cell over a strict floor: round 0's
#: lengths (a spurious heavy length costs its column text rounds) and the grids' blocks (a
#: spurious far block would move a bound).
STRICT_FALSE_POSITIVE = 1e-3
#: A value held by this many rows is released with probability at most delta (:func:`value_threshold`).
RARE_ROWS = 3


def as_bytes(values: Iterable[str | None]) -> list[bytes | None]:
    """Each present value's UTF-8 bytes (None stays None: a missing cell)."""
    return [None if v is None else str(v).encode("utf-8") for v in values]


def prefix_counts(values: Sequence[bytes | None], prefixes: Sequence[bytes]) -> np.ndarray:
    """Counts of the local rows per (candidate prefix, next symbol), ``len(prefixes) * SYMBOLS``.

    All prefixes of one round have the same length; a row counts at most once (sensitivity 1).
    """
    counts = np.zeros(len(prefixes) * SYMBOLS, dtype=np.int64)
    if not prefixes:
        return counts
    length = len(prefixes[0])
    index = {p: i for i, p in enumerate(prefixes)}
    for value in values:
        if value is None or len(value) < length:
            continue
        i = index.get(value[:length])
        if i is not None:
            counts[i * SYMBOLS + (value[length] if len(value) > length else END)] += 1
    return counts


def length_counts(values: Sequence[bytes | None], max_bytes: int) -> np.ndarray:
    """Counts of the local rows by value length in bytes: ``0 .. max_bytes``, then one cell for
    every longer value (``max_bytes + 2`` cells); a row counts once, a missing cell not here."""
    lengths = np.array([min(len(v), max_bytes + 1) for v in values if v is not None], dtype=np.int64)
    return np.bincount(lengths, minlength=max_bytes + 2).astype(np.int64)


def longest_heavy_length(noisy: np.ndarray, threshold: float) -> int:
    """The longest length (up to the public limit) whose noisy count clears ``threshold``; 0:
    none. A value held by more rows than the threshold makes its length's cell clear it too,
    so no rounds past this length can release anything (post-processing of round 0)."""
    heavy = np.nonzero(np.asarray(noisy, dtype=np.float64)[1:-1] > threshold)[0]
    return int(heavy[-1]) + 1 if len(heavy) else 0


def skellam_tail_point(mu: float, probability: float) -> int:
    """The least integer ``b`` with ``P(Sk(mu) >= b) <= probability``, from the exact Skellam
    tail (scipy), searched below the Chernoff bound ``common.noise.skellam_upper_bound`` (which
    already satisfies it): about 4.75 noise stds at 1e-6 where the Chernoff bound says 5.26."""
    tail = stats.skellam(mu, mu).sf if mu > 0 else None
    low, high = 1, skellam_upper_bound(mu, probability)
    while tail is not None and low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if tail(mid - 1) <= probability else (mid + 1, high)
    return high


def value_threshold(mu: float, delta: float, rare_rows: int = RARE_ROWS) -> float:
    """The noisy count an ``END`` cell must exceed to release a value: a value held by at most
    ``rare_rows`` rows clears it in one round with probability at most ``delta`` (the exact
    Skellam(``mu``) tail: :func:`skellam_tail_point`)."""
    return float(rare_rows + skellam_tail_point(mu, delta) - 1)


def release_threshold(mu: float, cells: int, false_positive: float = FALSE_POSITIVE) -> float:
    """The noisy count a cell must exceed: the Skellam(``mu``) noise alone exceeds it in any of
    ``cells`` empty cells with probability at most ``false_positive`` (union bound over the cells,
    exact Skellam tail: :func:`skellam_tail_point`)."""
    return float(skellam_tail_point(mu, false_positive / max(cells, 1)) - 1)


def release_probability(count: int, mu: float, threshold: float) -> float:
    """Probability that a cell holding ``count`` rows clears ``threshold`` under Skellam(``mu``)."""
    return float(stats.skellam(mu, mu).sf(threshold - count))


def extend(
    prefixes: Sequence[bytes], noisy: np.ndarray, threshold: float, max_bytes: int, max_candidates: int,
    end_threshold: float | None = None,
) -> tuple[list[bytes], dict[str, float]]:
    """The next round's candidate prefixes and the values released by this round's noisy sum.

    Post-processing: keeps the extensions whose noisy count exceeds ``threshold``; at most
    ``max_candidates`` candidates (the largest noisy counts), none longer than ``max_bytes``.
    An ``END`` cell releases its value when it exceeds ``end_threshold`` as well (default: the
    same). Released values are decoded as UTF-8 (an invalid byte sequence is dropped).
    """
    cells = np.asarray(noisy, dtype=np.float64).reshape(len(prefixes), SYMBOLS)
    end_threshold = threshold if end_threshold is None else max(threshold, end_threshold)
    released: dict[str, float] = {}
    grown: list[tuple[float, bytes]] = []
    for i, j in zip(*np.nonzero(cells > threshold), strict=True):
        if j == END:
            if cells[i, j] <= end_threshold:
                continue
            try:
                released[prefixes[i].decode("utf-8")] = float(cells[i, j])
            except UnicodeDecodeError:
                continue
        elif len(prefixes[i]) < max_bytes:
            grown.append((float(cells[i, j]), prefixes[i] + bytes([int(j)])))
    grown.sort(key=lambda item: (-item[0], item[1]))
    return [p for _, p in grown[:max_candidates]], released
