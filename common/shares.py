"""Groups whose share in a release differs a lot from what was measured: small groups vanishing.

A release's rows come from a model fitted to noisy marginals; a small group (a category held by
0.3% of the rows) can get almost no mass in the model and vanish from the release, which no
average fidelity figure shows. Each column's one-way counts over the union of organisations are
in the release's ``measurements.json`` (its 1-way marginal); a group is flagged when

* its measured count is more than :data:`SIGMAS` noise standard deviations (a group the
  measurement shows, not noise), and
* its share of the released rows is under ``1 / RATIO`` or over ``RATIO`` times its measured
  share, and further from what the measured share predicts than :data:`SIGMAS` sampling standard
  deviations of the released count (Poisson), so sampling alone does not explain it.

Everything here reads already-private measurements and released rows: post-processing, no
privacy cost (``fedsynth report``; ``fedsynth evaluate`` runs it on the organisation's machine).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .marginals import marginal

SIGMAS = 3.0
RATIO = 2.0


@dataclass(frozen=True)
class ShareGap:
    """One group (a code of a column) whose released share is far from its measured share."""

    column: str
    code: int
    measured: float  # share of the noisy measured rows
    released: float  # share of the released rows

    def describe(self, value: str) -> str:
        """A warning in plain words; ``value`` names the code (its category, bin or 'missing')."""
        how = "nearly vanished from" if self.released < self.measured / RATIO else "is over-represented in"
        return (f"{self.column} = {value}: {self.measured:.2%} of the measured rows but {self.released:.2%} of "
                f"the released rows; this group {how} the release")


def one_way(
    measurements: Iterable[tuple[Sequence[str], np.ndarray, float]], domain: Mapping[str, int]
) -> dict[str, tuple[np.ndarray, float]]:
    """Each measured column's counts and their noise std per cell (the least noisy measurement)."""
    out: dict[str, tuple[np.ndarray, float]] = {}
    for clique, counts, sigma in measurements:
        column = tuple(clique)[0] if len(tuple(clique)) == 1 else None
        if column in domain and (column not in out or sigma < out[column][1]):
            out[column] = (np.asarray(counts, dtype=np.float64), sigma)
    return out


def share_gaps(column: str, noisy: np.ndarray, sigma: float, released: np.ndarray) -> list[ShareGap]:
    """The codes of one column whose released counts are far from the measured shares (see the module)."""
    measured = np.clip(noisy, 0.0, None)
    total, rows = float(measured.sum()), float(released.sum())
    if total <= 0 or rows <= 0:
        return []
    p, q = measured / total, released / rows
    expected = rows * p
    shown = noisy > SIGMAS * sigma
    far = (q < p / RATIO) | (q > p * RATIO)
    beyond_sampling = np.abs(released - expected) > SIGMAS * np.sqrt(np.maximum(expected, 1.0))
    return [ShareGap(column, int(k), float(p[k]), float(q[k])) for k in np.flatnonzero(shown & far & beyond_sampling)]


def vanishing_groups(
    measurements: Iterable[tuple[Sequence[str], np.ndarray, float]], codes: np.ndarray, domain: Mapping[str, int]
) -> list[ShareGap]:
    """Every flagged group of every measured column, released rows ``codes`` (rows x ``domain``'s columns)."""
    columns = list(domain)
    gaps = []
    for column, (noisy, sigma) in one_way(measurements, domain).items():
        gaps += share_gaps(column, noisy, sigma, marginal(codes, columns, domain, (column,)))
    return gaps
