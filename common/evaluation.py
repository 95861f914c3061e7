"""Federated evaluation: the release's fidelity over the union of all organisations' rows, from
one paid, noisy round, without moving any row.

**Mechanism.** The job fixes, before any data is touched, a public set of marginals to check
(:func:`evaluation_cliques`: every column's 1-way marginal and ``pairs`` column pairs drawn
with the job's public seed). After the generator's model is fitted, the coordinator asks every
organisation for its counts of exactly those marginals: the ``marginals`` task of
``common.rounds``, summed through SecAgg+ with every organisation's Skellam share, so the
coordinator sees the union's counts plus noise of std ``sigma`` per cell (at ``t`` survivors).

**Sensitivity and privacy.** One record adds one count to one cell of each marginal (L1 = L2
= 1 per marginal; a replaced row's L1 2, L2 sqrt(2) when the job caps rows:
``common.marginals.count_sensitivity``). The phase's event is :func:`evaluation_event`, which
is ``common.rounds.round_event`` of the very request the organisations receive
(:func:`evaluation_request`): the plan every organisation's guard judges at pre-flight, the
round each guard admits and records, and the coordinator's ledger entry are one event. The
phase gets its own declared share of the job's budget (``JobConfig.evaluate``) and appears as
phase ``evaluation`` in the ledger and in ``privacy.json``'s ``per_phase``.

**Figures** (post-processing of the noisy counts and the released rows). Per marginal, the
total variation distance (TVD) between the synthetic rows' marginal and the noisy union
marginal (negative counts clipped to 0, normalised). Its noise band: with true counts ``c``
(``N`` rows) and noise ``z``, ``TVD(p_noisy, p_true) <= ||z||_1 / N`` (clipping only moves a
noisy count towards ``c``; normalising at most doubles the L1 distance), so by the triangle
inequality the published TVD is within that of the true one. The band is ``||z||_1``'s
Gaussian approximation at :data:`BAND_SIGMAS` standard deviations, ``sigma (cells sqrt(2/pi) +
3 sqrt(cells))``, over the noisy row count. The noisy counts are not given to the model, so
the figures are an independent check of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from dp_accounting import DpEvent

from .marginals import Clique, cliques_to_json, marginal
from .metrics import random_cliques, total_variation
from .rounds import round_event
from .secure_sum import NoisySumSpec

PHASE = "evaluation"
#: Standard deviations of ``||z||_1`` (Gaussian approximation) that the noise band covers.
BAND_SIGMAS = 3.0
#: Column pairs checked by default, besides every 1-way marginal.
DEFAULT_PAIRS = 10


def evaluation_cliques(domain: Mapping[str, int], pairs: int, seed: int) -> list[Clique]:
    """The public marginals a federated evaluation checks: every 1-way one, then ``pairs`` pairs
    drawn with the job's public ``seed`` (a function of the schema and public settings only)."""
    return [(c,) for c in domain] + random_cliques(domain, 2, pairs, seed)


def evaluation_request(schema_json: str, cliques: Sequence[Clique], row_cap: int | None) -> dict[str, Any]:
    """The count request every organisation answers (the ``marginals`` task)."""
    request: dict[str, Any] = {"schema": schema_json, "task": "marginals", "cliques": cliques_to_json(cliques)}
    if row_cap is not None:
        request["row_cap"] = row_cap
    return request


def evaluation_event(sigma: float, cliques: Sequence[Clique], row_cap: int | None) -> DpEvent:
    """The evaluation phase's whole cost at noise std ``sigma`` per cell (``t`` survivors):
    ``round_event`` of its request (which reads only the task, cliques, row cap and ``mu``)."""
    request = evaluation_request("", cliques, row_cap)
    return round_event(request, NoisySumSpec(dim=1, mu=sigma**2 / 2.0, min_survivors=1, max_abs=0))


def noisy_total(blocks: Sequence[np.ndarray]) -> float:
    """The union's row count from the noisy marginals (each sums to it), minimum-variance weighted."""
    sums = np.array([b.sum() for b in blocks], dtype=np.float64)
    return max(1.0, float(np.average(sums, weights=[1.0 / b.size for b in blocks])))


def noise_band(sigma: float, size: int, rows: float) -> float:
    """High-probability bound on ``TVD(noisy, true)`` of one marginal of ``size`` cells."""
    l1 = sigma * (size * math.sqrt(2.0 / math.pi) + BAND_SIGMAS * math.sqrt(size))
    return min(1.0, l1 / rows)


def summarise(
    cliques: Sequence[Clique], noisy: Sequence[np.ndarray], synthetic: Sequence[np.ndarray], sigma: float
) -> dict[str, Any]:
    """The published quality summary: per marginal and on average, TVD with its noise band."""
    rows = noisy_total(noisy)
    per = [
        {
            "clique": list(cl),
            "tvd": total_variation(np.clip(n, 0, None), s),
            "noise_band": noise_band(sigma, n.size, rows),
        }
        for cl, n, s in zip(cliques, noisy, synthetic, strict=True)
    ]

    def mean_of(size: int) -> dict[str, float] | None:
        chosen = [p for p in per if len(p["clique"]) == size]
        if not chosen:
            return None
        return {
            "mean_tvd": float(np.mean([p["tvd"] for p in chosen])),
            "noise_band": float(np.mean([p["noise_band"] for p in chosen])),
            "marginals": len(chosen),
        }

    return {
        "what": "total variation distance between the synthetic rows' marginals and the union's noisy "
        "marginals (secure noisy sum, phase 'evaluation'); the true TVD lies within noise_band of it "
        f"(bound on the noise's effect, {BAND_SIGMAS:g} standard deviations)",
        "sigma_per_cell": sigma,
        "noisy_rows": rows,
        "one_way": mean_of(1),
        "two_way": mean_of(2),
        "marginals": per,
    }


def synthetic_marginals(codes: np.ndarray, domain: Mapping[str, int], cliques: Sequence[Clique]) -> list[np.ndarray]:
    """The released rows' marginals of ``cliques`` (integer-coded rows in the schema's columns)."""
    return [marginal(codes, list(domain), domain, cl).astype(np.float64) for cl in cliques]
