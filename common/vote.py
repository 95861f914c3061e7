"""The organisations' selection vote: integer scores and an exponential mechanism sampled exactly.

**Mechanism.** An organisation scores every candidate marginal ``r`` by ``s_r = e_r - a_r``: its
local L1 error against the model's view sent to it (``common.marginals.local_errors``: an exact
integer in units of ``2**-VIEW_BITS`` rows, clipped to the public ``MAX_ERROR_ROWS``) minus its
share of AIM's penalty ``a_r`` (:func:`vote_penalties`), which it computes itself from the
request's public ``penalty_std`` and the candidate's number of cells (the coordinator sends no
penalty). It then draws ``k`` candidates one at a time (:func:`exponential_top_k`), each by the
exponential mechanism over the candidates still allowed (not drawn, not contained in a drawn
one): ``P[r] = exp(eps' s_r / (2 D)) / sum_allowed exp(eps' s_q / (2 D))`` with ``D =``
:data:`VOTE_SENSITIVITY` and ``eps'`` the request's epsilon rounded down to a multiple of
``2**-EPSILON_BITS``. These ``k`` draws have the distribution of the Gumbel top-k that the
vote used before (Durfee & Rogers, NeurIPS 2019), without its floating point.

**Sensitivity.** Adding or removing one of the organisation's records moves every ``e_r`` by at
most ``D = 2**(VIEW_BITS + 1)`` units (two rows), exactly: the view's weights are integers that
sum to ``2**VIEW_BITS`` whatever the coordinator sends (``marginals.view_weights``), every step
on the data is integer arithmetic, and clipping is 1-Lipschitz. ``a_r`` does not depend on the
data. The scores' sensitivity is therefore ``D`` for every view, penalty and epsilon.

**Privacy.** Each draw is then ``eps'``-DP and ``eps'``-bounded-range: between neighbouring
tables the log-probability of a candidate moves by ``eps' (s_r - s'_r) / (2 D)`` (within
``[-eps'/2, eps'/2]``) minus the change of the log-normaliser (the same for every candidate),
an interval of width at most ``eps'``, hence ``eps'**2 / 8``-zCDP; the ``k`` draws compose
(each conditioned on the earlier ones), and ``eps' <= eps``: the round's event
(``common.rounds.round_event``: ``k`` exponential mechanisms at the request's epsilon) covers
the vote. A record is in one organisation's table only, so a round costs one organisation's
``k`` mechanisms (parallel composition). The argument holds for the implementation, not only
on paper, because the draw is exact: no floating point number touches the scores. A candidate
is proposed uniformly among those allowed and accepted with probability ``exp(-x_r)``, ``x_r =
eps' (s_max - s_r) / (2 D)`` a rational number; rejection sampling returns exactly the
mechanism's distribution. Each acceptance is a Bernoulli of ``exp(-x)`` drawn with integers only
(Canonne, Kamath & Steinke, NeurIPS 2020, Algorithm 1: :func:`bernoulli_exp`) from uniform
random integers (:func:`uniform_below`). So no arithmetic a coordinator can provoke sharpens a
vote: huge or tiny penalties and view values change which candidates score well, never how far
one record moves the vote's distribution. What it can send is bounded all the same
(:data:`MAX_VOTE_EPSILON`, :data:`MAX_VOTE_K`, :data:`MAX_PENALTY_STD`,
``marginals.MAX_VIEW_VALUE``); the organisation's guard refuses anything else
(``client.guard``).

**Cost.** One draw proposes, in expectation, the number of allowed candidates over
``sum_r exp(-x_r)`` candidates (at most the number allowed; the best one is always accepted),
each in O(1) expected integer operations. That running time depends on the scores, hence on the
data: a timing channel this module does not close.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .marginals import MAX_ERROR_ROWS, VIEW_BITS, Clique, penalties

#: The vote's epsilon is used rounded down to a multiple of ``2**-EPSILON_BITS`` (never more).
EPSILON_BITS = 32

#: Per-record sensitivity of a score, in its units of ``2**-VIEW_BITS`` rows: two rows, exactly.
VOTE_SENSITIVITY = 2 ** (VIEW_BITS + 1)

#: Largest epsilon of one draw a vote request may ask for (the plan's are far below it).
MAX_VOTE_EPSILON = 1.0

#: Most candidates one vote may draw.
MAX_VOTE_K = 64

#: Largest noise std a vote's penalties may be computed from (``penalty_std``).
MAX_PENALTY_STD = float(2**20)


def vote_penalties(penalty_std: float, candidates: Sequence[Clique], domain: Mapping[str, int]) -> np.ndarray:
    """Each candidate's penalty in score units: AIM's expected noise L1 at ``penalty_std``
    (``marginals.penalties``), clipped to the public error bound. Public: no data involved."""
    units = penalties(penalty_std, candidates, domain) * 2.0**VIEW_BITS
    return np.rint(np.clip(units, 0.0, float(MAX_ERROR_ROWS << VIEW_BITS))).astype(np.int64)


def exponential_top_k(
    rng: np.random.Generator,
    scores: Sequence[int],
    epsilon: float,
    sensitivity: int,
    k: int,
    candidates: Sequence[Clique],
) -> list[int]:
    """Up to ``k`` indices of integer ``scores`` (per-record ``sensitivity`` in score units), drawn
    one at a time by the exponential mechanism at ``epsilon`` (rounded down to a multiple of
    ``2**-EPSILON_BITS``), each among the candidates not drawn and not contained in a drawn one
    (its marginal follows from the drawn one); exact (module docstring)."""
    values = [int(s) for s in scores]
    numerator = math.floor(epsilon * 2**EPSILON_BITS)
    denominator = (2 * int(sensitivity)) << EPSILON_BITS
    allowed = list(range(len(values)))
    picks: list[int] = []
    while allowed and len(picks) < k:
        pick = allowed[exponential_draw(rng, [values[i] for i in allowed], numerator, denominator)]
        picks.append(pick)
        allowed = [i for i in allowed if not set(candidates[i]) <= set(candidates[pick])]
    return picks


def exponential_draw(rng: np.random.Generator, scores: Sequence[int], numerator: int, denominator: int) -> int:
    """An index ``i`` of ``scores`` with probability proportional to ``exp(numerator * scores[i] /
    denominator)``, exactly: a uniform proposal accepted with probability
    ``exp(-numerator * (max - scores[i]) / denominator)``, until one is accepted."""
    best = max(scores)
    while True:
        i = uniform_below(len(scores), rng)
        if bernoulli_exp(numerator * (best - scores[i]), denominator, rng):
            return i


def bernoulli_exp(numerator: int, denominator: int, rng: np.random.Generator) -> bool:
    """True with probability ``exp(-numerator / denominator)``, exactly (integers, ``numerator >=
    0 < denominator``): ``exp(-x) = exp(-1)**floor(x) * exp(-(x - floor(x)))``, one independent
    draw per factor, stopping at the first failure (Canonne, Kamath & Steinke 2020)."""
    whole, part = divmod(numerator, denominator)
    for _ in range(whole):
        if not _bernoulli_exp_at_most_one(1, 1, rng):
            return False
    return _bernoulli_exp_at_most_one(part, denominator, rng)


def _bernoulli_exp_at_most_one(numerator: int, denominator: int, rng: np.random.Generator) -> bool:
    """``exp(-x)`` for ``x = numerator / denominator`` in [0, 1]: the first ``j`` whose
    Bernoulli(x / j) fails is odd with probability ``sum_i (-x)**i / i! = exp(-x)``."""
    j = 1
    while uniform_below(denominator * j, rng) < numerator:
        j += 1
    return j % 2 == 1


def uniform_below(n: int, rng: np.random.Generator) -> int:
    """A uniform integer in ``[0, n)``, exactly, for any positive integer ``n``: random bits of
    ``n - 1``'s length, drawn again until below ``n`` (accepted with probability above 1/2)."""
    bits = (n - 1).bit_length()
    size = (bits + 7) // 8
    while True:
        value = int.from_bytes(rng.bytes(size), "little") >> (8 * size - bits)
        if value < n:
            return value
