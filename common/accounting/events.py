"""DpEvents of fedsynth's mechanisms and their JSON form.

Every privacy cost in fedsynth is described by a dp-accounting ``DpEvent``; the
constructors below turn a mechanism's parameters (noise scale, sensitivity, count)
into one. Neighbouring datasets differ by adding or removing one record.

dp-accounting 0.6 has no event for two of our mechanisms, so this module adds them:

* ``ExponentialMechanismDpEvent`` -- its ``ZCDpEvent`` would lose the pure-DP
  parameter that the PLD accountant needs.
* ``SkellamDpEvent`` -- integer Skellam noise for distributed DP under SecAgg+.

Events serialise to JSON through dp-accounting's own named-tuple form
(``DpEvent.to_named_tuple`` / ``DpEvent.from_named_tuple``); deserialising only
accepts event classes of dp-accounting's ``dp_event`` module and of this module.
"""

from __future__ import annotations

import collections
import math
import sys
from collections.abc import Mapping
from typing import Any

import attr
from dp_accounting import dp_event
from dp_accounting.dp_event import DpEvent


def _positive(instance: Any, attribute: attr.Attribute, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive finite number, got {value!r}")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ExponentialMechanismDpEvent(DpEvent):
    """One run of the exponential mechanism with privacy parameter ``epsilon``.

    Mechanism: output candidate r with probability proportional to
    exp(epsilon * u(D, r) / (2 * du)), where du is the sensitivity of the score u
    (McSherry & Talwar 2007). It is epsilon-DP and epsilon-bounded-range, hence
    (epsilon**2 / 8)-zCDP (Cesar & Rogers 2021, "Bounding, Concentrating, and
    Truncating: Unifying Privacy Loss Composition for Data Analytics").

    Accounting: RDP(alpha) = alpha * epsilon**2 / 8; PLD: the worst case of a pure
    (epsilon, 0)-DP mechanism.
    """

    epsilon: float = attr.ib(validator=_positive)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class SkellamDpEvent(DpEvent):
    """The multi-dimensional Skellam mechanism (Agarwal, Kairouz & Liu, NeurIPS 2021).

    Mechanism: an integer vector f(D) with L1 sensitivity ``l1_sensitivity`` and L2
    sensitivity ``l2_sensitivity`` is released as f(D) + Z, each coordinate of Z
    independently Sk(mu, mu) = Poisson(mu) - Poisson(mu) (variance 2 * mu). Skellam
    noise is closed under summation, so n clients adding Sk(mu_i) each give
    Sk(sum mu_i) in the SecAgg+ sum: ``mu`` is the total of the survivors' shares.

    Note the paper's own parameter is the variance, mu_paper = 2 * mu.
    """

    mu: float = attr.ib(validator=_positive)
    l1_sensitivity: float = attr.ib(validator=_positive)
    l2_sensitivity: float = attr.ib(validator=_positive)


def gaussian_event(sigma: float, l2_sensitivity: float = 1.0, count: int = 1) -> DpEvent:
    """Gaussian mechanism, ``count`` times: N(0, sigma^2 I) added to a vector of L2 sensitivity d2.

    Noise multiplier sigma / d2; each release is (d2^2 / (2 sigma^2))-zCDP.
    """
    _check_positive(sigma=sigma, l2_sensitivity=l2_sensitivity)
    return _repeat(dp_event.GaussianDpEvent(sigma / l2_sensitivity), count)


def gaussian_rho(sigma: float, l2_sensitivity: float = 1.0) -> float:
    """zCDP parameter rho = d2^2 / (2 sigma^2) of one Gaussian release (Bun & Steinke 2016)."""
    _check_positive(sigma=sigma, l2_sensitivity=l2_sensitivity)
    return l2_sensitivity**2 / (2.0 * sigma**2)


def dpsgd_event(noise_multiplier: float, sampling_rate: float, steps: int) -> DpEvent:
    """DP-SGD: ``steps`` Poisson-subsampled Gaussian steps.

    Each step samples every record with probability ``sampling_rate``, clips each
    per-example gradient to L2 norm C (the sensitivity of the sum under add/remove)
    and adds N(0, (noise_multiplier * C)^2 I) to the sum.
    """
    _check_positive(noise_multiplier=noise_multiplier)
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    _check_count(steps)
    step = dp_event.PoissonSampledDpEvent(sampling_rate, dp_event.GaussianDpEvent(noise_multiplier))
    return dp_event.SelfComposedDpEvent(step, steps)


def skellam_dpsgd_event(
    mu: float, l1_sensitivity: float, l2_sensitivity: float, sampling_rate: float, steps: int
) -> DpEvent:
    """Distributed DP-SGD on the integer grid: ``steps`` Poisson-subsampled Skellam releases.

    Each step samples every record with probability ``sampling_rate``; the sum of the
    batch's clipped, integer-rounded per-example gradients (sensitivities ``l1`` and ``l2``
    on the grid) is released with Sk(mu) noise per coordinate. Accounted in RDP with Zhu &
    Wang's general Poisson-subsampling bound (``subsampled``); PLD does not support it.
    With ``sampling_rate == 1`` (full batches) a step is the plain Skellam mechanism.
    """
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    if sampling_rate == 1:
        return skellam_event(mu, l1_sensitivity, l2_sensitivity, count=steps)
    _check_count(steps)
    step = dp_event.PoissonSampledDpEvent(sampling_rate, SkellamDpEvent(mu, l1_sensitivity, l2_sensitivity))
    return _repeat(step, steps)


def laplace_event(scale: float, l1_sensitivity: float = 1.0, count: int = 1) -> DpEvent:
    """Laplace mechanism, ``count`` times: Lap(scale) per coordinate, L1 sensitivity d1.

    Each release is (d1 / scale, 0)-DP.
    """
    _check_positive(scale=scale, l1_sensitivity=l1_sensitivity)
    return _repeat(dp_event.LaplaceDpEvent(scale / l1_sensitivity), count)


def exponential_event(epsilon: float, count: int = 1) -> DpEvent:
    """Exponential mechanism with pure ``epsilon``, ``count`` times (see ``ExponentialMechanismDpEvent``)."""
    return _repeat(ExponentialMechanismDpEvent(epsilon), count)


def skellam_event(mu: float, l1_sensitivity: float, l2_sensitivity: float, count: int = 1) -> DpEvent:
    """Skellam mechanism, ``count`` times: Sk(mu, mu) per coordinate (see ``SkellamDpEvent``)."""
    return _repeat(SkellamDpEvent(mu, l1_sensitivity, l2_sensitivity), count)


def event_to_dict(event: DpEvent) -> dict[str, Any]:
    """The JSON-ready form of ``event`` (nested events included)."""
    return _plain(event.to_named_tuple())


def event_from_dict(data: Mapping[str, Any]) -> DpEvent:
    """Inverse of ``event_to_dict``; raises ValueError on unknown or malformed events."""
    try:
        return DpEvent.from_named_tuple(_named(data))
    except (TypeError, ValueError) as err:
        raise ValueError(f"malformed DpEvent {dict(data)!r}: {err}") from err


def _plain(value: Any) -> Any:
    if isinstance(value, dp_event.DpEventNamedTuple):
        return {name: _plain(getattr(value, name)) for name in value._fields}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _named(value: Any) -> Any:
    if isinstance(value, Mapping):
        _check_known_event(value)
        fields = list(value)
        record = collections.namedtuple("DpEventRecord", fields)
        return record(*(_named(value[name]) for name in fields))
    if isinstance(value, list):
        return [_named(item) for item in value]
    return value


_EVENT_MODULES = (dp_event.__name__, __name__)


def _check_known_event(data: Mapping[str, Any]) -> None:
    module, name = data.get("module_name"), data.get("class_name")
    cls = vars(sys.modules[module]).get(name) if module in _EVENT_MODULES else None
    if not (isinstance(cls, type) and issubclass(cls, DpEvent)):
        raise ValueError(f"unknown DpEvent class {module!r}.{name!r}")


def _repeat(event: DpEvent, count: int) -> DpEvent:
    _check_count(count)
    return event if count == 1 else dp_event.SelfComposedDpEvent(event, count)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _check_count(count: int) -> None:
    if not (isinstance(count, int) and count >= 1):
        raise ValueError(f"count must be a positive integer, got {count!r}")
