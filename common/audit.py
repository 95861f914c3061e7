"""Empirical privacy auditing: a lower bound on epsilon from a membership attack's errors.

An (epsilon, delta)-DP mechanism limits every test of "is the canary in the data?" by
``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta`` (Kairouz, Oh &
Viswanath 2015). Running the mechanism ``n`` times without the canary and ``m`` times with
it, an attack's false positives and false negatives give Clopper-Pearson upper bounds on its
rates; plugging those in,

    eps_lb = max(log((1 - delta - FNR_ub) / FPR_ub), log((1 - delta - FPR_ub) / FNR_ub))

holds with the bounds' confidence: the mechanism is not (eps, delta)-DP for any eps below
``eps_lb`` (Jagielski, Ullman & Oprea, NeurIPS 2020; Nasr et al., USENIX Security 2023). The
attack thresholds a score; :func:`audit` tries a fixed, public grid of thresholds and keeps
the best, paying for the choice with a Bonferroni correction (each of the ``2 T`` rate bounds
of ``T`` thresholds at level ``alpha / (2 T)``), so the maximum is itself a valid bound.

Nothing here looks at private data: it is the auditor's statistics over the mechanism's
outputs. :func:`sample_ceiling` says how high any attack's bound could go with the same
number of runs against a mechanism that exactly meets a claim: with a few hundred runs and a
small delta, no audit reaches the claim, and the ceiling shows how much of the gap is the
sample size rather than the attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from dp_accounting import dp_event
from scipy.stats import beta

from .accounting import ExponentialMechanismDpEvent, SkellamDpEvent

#: Confidence of every reported bound or interval (two-sided 95%).
CONFIDENCE = 0.95


def clopper_pearson_upper(successes: float, trials: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson upper bound on a binomial proportion."""
    _check_counts(successes, trials)
    if successes >= trials:
        return 1.0
    return float(beta.ppf(1.0 - alpha, successes + 1, trials - successes))


def clopper_pearson_lower(successes: float, trials: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound on a binomial proportion."""
    _check_counts(successes, trials)
    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def epsilon_from_rates(fpr: float, fnr: float, delta: float) -> float:
    """The least epsilon for which (eps, delta)-DP allows a test with these error rates (>= 0;
    ``inf`` when a rate is 0 and the other below ``1 - delta``)."""
    values = [0.0]
    for a, b in ((fnr, fpr), (fpr, fnr)):
        top = 1.0 - delta - a
        if top > 0:
            values.append(math.inf if b <= 0 else math.log(top / b))
    return max(values)


@dataclass(frozen=True)
class AuditResult:
    """The best threshold's errors and the empirical epsilon's two-sided interval."""

    threshold: float
    false_positives: int
    false_negatives: int
    negatives: int  # runs without the canary
    positives: int  # runs with it
    lower: float  # empirical epsilon lower bound (one side of the interval: 97.5% confidence)
    upper: float  # the interval's upper end (may be inf)
    estimate: float  # from the observed rates, no confidence
    thresholds_tried: int

    @property
    def fpr(self) -> float:
        return self.false_positives / self.negatives

    @property
    def fnr(self) -> float:
        return self.false_negatives / self.positives


def epsilon_interval(
    false_positives: int, negatives: int, false_negatives: int, positives: int, delta: float, alpha: float
) -> tuple[float, float]:
    """``1 - 2 alpha`` interval of the empirical epsilon of one test: each of the four
    Clopper-Pearson rate bounds at ``alpha / 2`` (union bound), the lower end from the rates'
    upper bounds, the upper end from their lower bounds (epsilon falls as either rate rises)."""
    a = alpha / 2.0
    lower = epsilon_from_rates(
        clopper_pearson_upper(false_positives, negatives, a), clopper_pearson_upper(false_negatives, positives, a), delta
    )
    upper = epsilon_from_rates(
        clopper_pearson_lower(false_positives, negatives, a), clopper_pearson_lower(false_negatives, positives, a), delta
    )
    return lower, upper


def audit(
    scores_out: Sequence[float],
    scores_in: Sequence[float],
    thresholds: Sequence[float],
    delta: float,
    confidence: float = CONFIDENCE,
) -> AuditResult:
    """Empirical epsilon of the attack "canary in when the score exceeds the threshold".

    ``scores_out``: one score per run without the canary, ``scores_in`` with it (independent
    runs within each). Every threshold is tried; the one with the highest lower bound is
    kept, each threshold's interval at ``confidence`` Bonferroni-corrected for the number
    of thresholds, so the kept interval holds at ``confidence`` as it is (each side at
    ``(1 + confidence) / 2``).
    """
    out, into = np.asarray(scores_out, dtype=np.float64), np.asarray(scores_in, dtype=np.float64)
    if not len(out) or not len(into) or not len(thresholds):
        raise ValueError("an audit needs runs with and without the canary and at least one threshold")
    alpha = (1.0 - confidence) / 2.0 / len(thresholds)
    best: AuditResult | None = None
    for t in thresholds:
        fp, fn = int((out > t).sum()), int((into <= t).sum())
        lower, upper = epsilon_interval(fp, len(out), fn, len(into), delta, alpha)
        estimate = epsilon_from_rates(fp / len(out), fn / len(into), delta)
        if best is None or lower > best.lower:
            best = AuditResult(float(t), fp, fn, len(out), len(into), lower, upper, estimate, len(thresholds))
    assert best is not None
    return best


def sample_ceiling(
    epsilon: float, delta: float, negatives: int, positives: int, thresholds: int = 1, confidence: float = CONFIDENCE
) -> float:
    """The lower bound :func:`audit` would report, at the expected error counts, for the best
    test against a mechanism that exactly meets ``(epsilon, delta)``: the most that this many
    runs can show. (The best test's false negative rate at false positive rate ``a`` is
    ``max(0, 1 - delta - e^eps a, e^-eps (1 - delta - a))``; maximised over ``a``.)"""
    alpha = (1.0 - confidence) / 2.0 / thresholds
    best = 0.0
    for a in np.concatenate([[0.0], np.geomspace(1e-4, 0.5, 400)]):
        b = max(0.0, 1.0 - delta - math.exp(epsilon) * a, math.exp(-epsilon) * (1.0 - delta - a))
        best = max(best, epsilon_interval(a * negatives, negatives, b * positives, positives, delta, alpha)[0])
    return best


def group_event(event: dp_event.DpEvent, size: int) -> dp_event.DpEvent:
    """``event`` for a group of ``size`` identical records instead of one: every sensitivity
    (and an exponential mechanism's epsilon, whose score moves ``size`` times as far) times
    ``size``. The claim an audit with a ``size``-fold canary must be compared with; the
    accountant then gives its epsilon exactly, not by the loose ``size * epsilon`` rule."""
    if size < 1:
        raise ValueError(f"a group has at least one record, got {size}")
    if isinstance(event, dp_event.ComposedDpEvent):
        return dp_event.ComposedDpEvent([group_event(e, size) for e in event.events])
    if isinstance(event, dp_event.SelfComposedDpEvent):
        return dp_event.SelfComposedDpEvent(group_event(event.event, size), event.count)
    if isinstance(event, SkellamDpEvent):
        return SkellamDpEvent(event.mu, event.l1_sensitivity * size, event.l2_sensitivity * size)
    if isinstance(event, ExponentialMechanismDpEvent):
        return ExponentialMechanismDpEvent(event.epsilon * size)
    if isinstance(event, dp_event.GaussianDpEvent):
        return dp_event.GaussianDpEvent(event.noise_multiplier / size)
    if isinstance(event, dp_event.LaplaceDpEvent):
        return dp_event.LaplaceDpEvent(event.noise_multiplier / size)
    raise ValueError(f"no group version of {type(event).__name__} (subsampled events need their own analysis)")


def _check_counts(successes: float, trials: int) -> None:
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
