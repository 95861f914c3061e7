"""Budget planning: noise multipliers from a target (epsilon, delta), the accountant's inverse.

A phase is a function ``noise_multiplier -> DpEvent`` giving the phase's whole
composed event at that noise; its cost must not grow as the noise grows.

Planning accountant (``method``): "rdp" (default) plans with the RDP accountant
alone, which is fast; the combined accountant reports min(RDP, PLD) <= RDP, so a
plan that meets the target under RDP meets it under the combined accountant too.
"combined" plans with min(RDP, PLD) itself: less noise for the same target, slower.

Searches run in log-space: Illinois regula falsi on log(epsilon / target), which
needs a few evaluations where bisection needs a dozen; each search keeps a bracket
and returns its feasible end, so results are never over budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional

from dp_accounting.dp_event import ComposedDpEvent, DpEvent

from .accountant import CombinedAccountant, Epsilon, RdpAccountant

EventFn = Callable[[float], DpEvent]
Point = tuple[float, float]  # (x > 0, log(epsilon(x) / target)); feasible iff the second is <= 0

DEFAULT_RTOL = 1e-3
DEFAULT_MAX_NOISE = 1e4
_MIN_NOISE = 1e-4
_CLOSENESS = 5e-3


class BudgetError(ValueError):
    """The privacy target is invalid or cannot be reached."""


@dataclass(frozen=True)
class Plan:
    """Noise multiplier of each phase, its stand-alone epsilon (planning accountant)
    and the composed epsilon of all phases (combined accountant)."""

    noise_multipliers: Mapping[str, float]
    phase_epsilons: Mapping[str, float]
    epsilon: Epsilon


def noise_for_epsilon(
    event_fn: EventFn,
    epsilon: float,
    delta: float,
    *,
    method: str = "rdp",
    rtol: float = DEFAULT_RTOL,
    max_noise: float = DEFAULT_MAX_NOISE,
) -> float:
    """Smallest noise multiplier whose event costs at most ``epsilon`` at ``delta``.

    Opacus ``make_private_with_epsilon`` semantics, rounded up: the result's epsilon
    is <= the target and the result is at most (1 + rtol) times the exact smallest
    noise. Raises BudgetError for an invalid target or one needing noise > max_noise.
    """
    _check_target(epsilon, delta)
    return _NoiseSearch("the event", event_fn, delta, method, max_noise).smallest(epsilon, rtol)


def plan_noise(
    phases: Mapping[str, EventFn],
    split: Mapping[str, float],
    epsilon: float,
    delta: float,
    *,
    method: str = "rdp",
    rtol: float = DEFAULT_RTOL,
    max_noise: float = DEFAULT_MAX_NOISE,
) -> Plan:
    """Noise multipliers for ``phases`` so that their composition costs at most ``epsilon``.

    Phase i gets a stand-alone budget E * share_i (shares from ``split``, normalised)
    and the smallest noise meeting it (as ``noise_for_epsilon``). E is the largest
    scale whose composed epsilon is <= ``epsilon``; the search stops once the composed
    epsilon is within 0.5 % below the target or E is bracketed within a factor
    1 + rtol. The plan never overshoots. Raises BudgetError when the target is
    invalid or needs noise above ``max_noise``.
    """
    _check_target(epsilon, delta)
    shares = _normalised_shares(phases, split)
    searches = {name: _NoiseSearch(f"phase {name!r}", fn, delta, method, max_noise) for name, fn in phases.items()}
    noises: dict[float, dict[str, float]] = {}

    def gap(scale: float) -> float:
        noises[scale] = {name: searches[name].smallest(scale * shares[name], rtol) for name in phases}
        return _log_ratio(_epsilon(_compose(phases, noises[scale]), delta, method), epsilon)

    feasible, infeasible = _bracket_scale(gap, noises, epsilon)
    if infeasible is not None:
        close = math.log1p(-_CLOSENESS)
        feasible = _regula_falsi(gap, feasible, infeasible, rtol, done=lambda g: g >= close)
    noise = noises[feasible[0]]
    composed = CombinedAccountant().compose(_compose(phases, noise)).epsilon(delta)
    return Plan(noise, {name: searches[name].epsilon(z) for name, z in noise.items()}, composed)


def _bracket_scale(
    gap: Callable[[float], float], noises: Mapping[float, Mapping[str, float]], epsilon: float
) -> tuple[Point, Optional[Point]]:
    """A feasible and an infeasible scale E, doubling or halving from ``epsilon``; no
    infeasible one (None) when doubling E no longer lowers any noise."""
    feasible: Optional[Point] = None
    infeasible: Optional[Point] = None
    scale = epsilon
    while feasible is None or infeasible is None:
        g = gap(scale)
        if g > 0:
            infeasible, scale = (scale, g), scale / 2
        elif feasible is not None and noises[scale] == noises[feasible[0]]:
            return feasible, None
        else:
            feasible, scale = (scale, g), scale * 2
    return feasible, infeasible


def _regula_falsi(
    gap: Callable[[float], float],
    feasible: Point,
    infeasible: Point,
    rtol: float,
    done: Callable[[float], bool] = lambda g: False,
) -> Point:
    """Shrinks the bracket of a monotone ``gap`` until its ends are within a factor
    1 + rtol, or ``done`` holds at the feasible end; returns the feasible end.

    Illinois regula falsi in log x: try the secant root, kept at least half the
    tolerance inside the bracket; an end kept twice running has its gap halved for
    the secant, which stops one end from getting stuck.
    """
    (a, ga), (b, gb) = feasible, infeasible
    secant_a, secant_b, kept = ga, gb, None
    while max(a, b) > min(a, b) * (1 + rtol) and not done(ga):
        x = _secant_in_log(a, secant_a, b, secant_b, math.log1p(rtol) / 2)
        gx = gap(x)
        if gx <= 0:
            a, ga, secant_a = x, gx, gx
            secant_b = secant_b / 2 if kept == "b" else secant_b
            kept = "b"
        else:
            b, secant_b = x, gx
            secant_a = secant_a / 2 if kept == "a" else secant_a
            kept = "a"
    return a, ga


def _secant_in_log(a: float, ga: float, b: float, gb: float, margin: float) -> float:
    la, lb = math.log(a), math.log(b)
    root = la - ga * (lb - la) / (gb - ga) if math.isfinite(ga) and math.isfinite(gb) else (la + lb) / 2
    return math.exp(min(max(root, min(la, lb) + margin), max(la, lb) - margin))


class _NoiseSearch:
    """Stand-alone epsilon of one phase as a function of its noise (cached), and its inverse."""

    def __init__(self, name: str, event_fn: EventFn, delta: float, method: str, max_noise: float):
        if method not in ("rdp", "combined"):
            raise ValueError(f"method must be 'rdp' or 'combined', got {method!r}")
        self._name, self._event_fn, self._delta = name, event_fn, delta
        self._method, self._max_noise = method, max_noise
        self._cache: dict[float, float] = {}

    def epsilon(self, noise: float) -> float:
        if noise not in self._cache:
            self._cache[noise] = _epsilon(self._event_fn(noise), self._delta, self._method)
        return self._cache[noise]

    def smallest(self, target: float, rtol: float) -> float:
        """Smallest noise with epsilon <= target, rounded up to within a factor 1 + rtol."""
        gap = lambda noise: _log_ratio(self.epsilon(noise), target)  # noqa: E731
        high = self._feasible(target, gap)
        low = self._infeasible_below(high, gap)
        if low is None:
            return self._feasible(target, gap)
        return _regula_falsi(gap, (high, gap(high)), (low, gap(low)), rtol)[0]

    def _feasible(self, target: float, gap: Callable[[float], float]) -> float:
        """Smallest known feasible noise, else the first feasible one doubling up to max_noise."""
        known = [noise for noise in self._cache if gap(noise) <= 0]
        if known:
            return min(known)
        noise = max(self._cache, default=1.0)
        while gap(noise) > 0:
            if noise >= self._max_noise:
                raise BudgetError(
                    f"{self._name} needs a noise multiplier above {self._max_noise:g} "
                    f"to reach epsilon {target:.4g} at delta {self._delta:g}"
                )
            noise = min(2 * noise, self._max_noise)
        return noise

    def _infeasible_below(self, high: float, gap: Callable[[float], float]) -> Optional[float]:
        """Largest known infeasible noise below ``high``, else one found halving (None below the floor)."""
        known = [noise for noise in self._cache if noise < high and gap(noise) > 0]
        if known:
            return max(known)
        noise = high / 2
        while noise >= _MIN_NOISE:
            if gap(noise) > 0:
                return noise
            noise /= 2
        return None


def _compose(phases: Mapping[str, EventFn], noise: Mapping[str, float]) -> DpEvent:
    return ComposedDpEvent([phases[name](z) for name, z in noise.items()])


def _epsilon(event: DpEvent, delta: float, method: str) -> float:
    if method == "rdp":
        return float(RdpAccountant().compose(event).get_epsilon(delta))
    return CombinedAccountant().compose(event).epsilon(delta).epsilon


def _log_ratio(value: float, target: float) -> float:
    return math.log(value / target) if value > 0 else -math.inf


def _check_target(epsilon: float, delta: float) -> None:
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise BudgetError(f"target epsilon must be positive and finite, got {epsilon!r}")
    if not 0 < delta < 1:
        raise BudgetError(f"target delta must be in (0, 1), got {delta!r}")


def _normalised_shares(phases: Mapping[str, EventFn], split: Mapping[str, float]) -> dict[str, float]:
    if not phases or set(split) != set(phases):
        raise BudgetError(f"split {sorted(split)} must name exactly the phases {sorted(phases)}")
    if not all(math.isfinite(share) and share > 0 for share in split.values()):
        raise BudgetError(f"shares must be positive and finite, got {dict(split)}")
    total = sum(split.values())
    return {name: split[name] / total for name in phases}
