"""The combined privacy accountant: dp-accounting's RDP and PLD accountants side by side.

Every event is composed into both accountants; epsilon(delta) is the smaller of the
two answers, each a valid bound for the whole composition. The two dp-accounting
accountants are extended (``_maybe_compose``) only for fedsynth's own events, so
composition itself stays dp-accounting's. Neighbouring relation: add or remove one
record.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Sequence

from dp_accounting import dp_event
from dp_accounting.dp_event import DpEvent
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.privacy_accountant import NeighboringRelation, PrivacyAccountant, UnsupportedEventError
from dp_accounting.rdp import rdp_privacy_accountant

from .events import ExponentialMechanismDpEvent, SkellamDpEvent
from .skellam import skellam_pld, skellam_rdp
from .subsampled import poisson_subsampled_rdp

#: Opacus' default RDP orders (``opacus.accountants.RDPAccountant.DEFAULT_ALPHAS``).
OPACUS_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
#: Opacus' orders plus dp-accounting's defaults (more orders only tighten epsilon).
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    sorted(set(OPACUS_ORDERS) | set(rdp_privacy_accountant.DEFAULT_RDP_ORDERS))
)
#: PLD discretisation; 1e-3 gave 2.7993 vs 2.7986 at 1e-4 on the notes' benchmark, 8x faster.
DEFAULT_PLD_INTERVAL = 1e-3
#: Largest Skellam parameter whose exact PLD is built (about 1 s and 120 MB at 1e6; 84 s at 1e8): a
#: larger one, which no job plans for a count (its noise std would exceed 1,400), is accounted by RDP
#: alone, so that a coordinator's oversized ``mu`` costs a guard nothing.
PLD_MAX_SKELLAM_MU = 1e6

_ADD_OR_REMOVE = NeighboringRelation.ADD_OR_REMOVE_ONE
_Details = PrivacyAccountant.CompositionErrorDetails


class _ExplainsUnsupported:
    def unsupported_reason(self, event: DpEvent) -> Optional[str]:
        """None if ``event`` can be composed, else why not."""
        details = self._maybe_compose(event, 1, False)
        return None if details is None else f"{details.error_message} (event {details.invalid_event})"


class RdpAccountant(_ExplainsUnsupported, rdp_privacy_accountant.RdpAccountant):
    """dp-accounting's RDP accountant, plus the exponential and Skellam mechanisms.

    Exponential mechanism: bounded-range, alpha * epsilon^2 / 8 (as dp-accounting's
    ``ZCDpEvent``). Skellam: ``skellam.skellam_rdp``; Poisson-subsampled Skellam (distributed
    DP-SGD): ``subsampled.poisson_subsampled_rdp`` over it.
    """

    def __init__(self, orders: Sequence[float] = DEFAULT_ORDERS):
        super().__init__(orders=orders, neighboring_relation=_ADD_OR_REMOVE)

    def _maybe_compose(self, event: DpEvent, count: int, do_compose: bool) -> Optional[_Details]:
        if isinstance(event, ExponentialMechanismDpEvent):
            return super()._maybe_compose(dp_event.ZCDpEvent(rho=event.epsilon**2 / 8), count, do_compose)
        if isinstance(event, SkellamDpEvent):
            if do_compose:
                self._rdp += count * _skellam_curve(event)(self._orders)
            return None
        if isinstance(event, dp_event.PoissonSampledDpEvent) and isinstance(event.event, SkellamDpEvent):
            if do_compose:
                rdp = poisson_subsampled_rdp(_skellam_curve(event.event), event.sampling_probability, self._orders)
                self._rdp += count * rdp
            return None
        return super()._maybe_compose(event, count, do_compose)


def _skellam_curve(event: SkellamDpEvent):
    return lambda orders: skellam_rdp(event.mu, event.l1_sensitivity, event.l2_sensitivity, orders)


class PldAccountant(_ExplainsUnsupported, pld_privacy_accountant.PLDAccountant):
    """dp-accounting's PLD accountant, plus the exponential and Skellam mechanisms.

    Exponential mechanism: the worst-case PLD of a pure (epsilon, 0)-DP mechanism.
    Skellam: exact PLD (``skellam.skellam_pld``) when l1 = l2 = 1 and mu is at most
    :data:`PLD_MAX_SKELLAM_MU`; other events of it are unsupported (RDP accounts them).
    """

    def __init__(self, value_discretization_interval: float = DEFAULT_PLD_INTERVAL):
        super().__init__(_ADD_OR_REMOVE, value_discretization_interval=value_discretization_interval)

    def _maybe_compose(self, event: DpEvent, count: int, do_compose: bool) -> Optional[_Details]:
        if isinstance(event, ExponentialMechanismDpEvent):
            if do_compose:
                pure = pld_common.DifferentialPrivacyParameters(epsilon=event.epsilon, delta=0.0)
                self._compose_pld(pld_lib.from_privacy_parameters(pure, self._value_discretization_interval), count)
            return None
        if isinstance(event, SkellamDpEvent):
            if (event.l1_sensitivity, event.l2_sensitivity) != (1, 1):
                message = "PLD of the Skellam mechanism is implemented only for l1 = l2 = 1 sensitivity"
                return _Details(invalid_event=event, error_message=message)
            if not event.mu <= PLD_MAX_SKELLAM_MU:
                message = f"PLD of the Skellam mechanism is built only for mu <= {PLD_MAX_SKELLAM_MU:g}"
                return _Details(invalid_event=event, error_message=message)
            if do_compose:
                self._compose_pld(skellam_pld(event.mu, self._value_discretization_interval), count)
            return None
        return super()._maybe_compose(event, count, do_compose)

    def _compose_pld(self, pld: pld_lib.PrivacyLossDistribution, count: int) -> None:
        self._pld = self._pld.compose(pld.self_compose(count))


@dataclass(frozen=True)
class Epsilon:
    """An (epsilon, delta) statement and where it came from.

    ``epsilon`` is the smaller of ``rdp`` and ``pld``, ``method`` says which; either
    may be None when its accountant cannot handle some event, ``reason`` says why.
    """

    epsilon: float
    delta: float
    method: str
    rdp: Optional[float]
    pld: Optional[float]
    reason: Optional[str] = None


class CombinedAccountant:
    """Composes DpEvents with both RDP and PLD and reports the tighter epsilon.

    The PLD accountant composes lazily: its events wait until an epsilon, a delta or a copy is
    asked for, and are dropped unread once an event arrives that PLD cannot handle (a gradient
    round's Skellam sum), since the PLD then answers nothing. Building and convolving the PLDs
    of a ledger's counting rounds took two thirds of a load; the answers are the same, as the
    waiting events are composed in order with their counts. Like dp-accounting's accountants, one
    instance is for one thread.
    """

    def __init__(
        self,
        orders: Sequence[float] = DEFAULT_ORDERS,
        value_discretization_interval: float = DEFAULT_PLD_INTERVAL,
    ):
        self._accountants: dict[str, _ExplainsUnsupported] = {
            "rdp": RdpAccountant(orders),
            "pld": PldAccountant(value_discretization_interval),
        }
        self._reason: Optional[str] = None
        self._pld_pending: list[tuple[DpEvent, int]] = []

    def compose(self, event: DpEvent, count: int = 1) -> CombinedAccountant:
        """Adds ``event`` (``count`` times); an accountant that cannot handle it drops out.

        Raises dp-accounting's UnsupportedEventError, leaving the state unchanged, if
        no remaining accountant can handle it.
        """
        reasons = {name: acc.unsupported_reason(event) for name, acc in self._accountants.items()}
        if all(reasons.values()):
            raise UnsupportedEventError(f"no accountant supports {event}: {reasons}")
        for name, reason in reasons.items():
            if reason:
                del self._accountants[name]
                self._reason = f"{name.upper()} unsupported: {reason}"
                if name == "pld":
                    self._pld_pending = []
            elif name == "pld":
                self._pld_pending.append((copy.deepcopy(event), count))  # the event as composed, whatever its caller does next
            else:
                self._accountants[name].compose(event, count)
        return self

    def _compose_pending(self) -> None:
        """Compose the waiting events into a copy of the PLD accountant, then keep the copy: an
        error part way leaves the accountant as it was, its events still waiting."""
        if not self._pld_pending:
            return
        pld = copy.deepcopy(self._accountants["pld"])
        for event, count in self._pld_pending:
            pld.compose(event, count)
        self._accountants["pld"], self._pld_pending = pld, []

    def epsilon(self, delta: float) -> Epsilon:
        """Epsilon at ``delta`` of everything composed so far."""
        _check_probability("delta", delta)
        self._compose_pending()
        values = {name: float(acc.get_epsilon(delta)) for name, acc in self._accountants.items()}
        method = min(values, key=values.__getitem__)
        return Epsilon(values[method], delta, method, values.get("rdp"), values.get("pld"), self._reason)

    def delta_for(self, epsilon: float) -> float:
        """The smallest delta either accountant proves at ``epsilon``."""
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
        self._compose_pending()
        return min(float(acc.get_delta(epsilon)) for acc in self._accountants.values())

    def copy(self) -> CombinedAccountant:
        """An independent copy (to try an event without composing it here)."""
        self._compose_pending()  # once here, not in every copy
        return copy.deepcopy(self)


def _check_probability(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
