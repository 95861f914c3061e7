"""fedsynth's privacy accounting: the only place that turns noise scales into epsilons.

* ``events``: DpEvent constructors for every mechanism, fedsynth's custom events and
  their JSON form.
* ``accountant``: ``CombinedAccountant`` -- dp-accounting's RDP and PLD accountants
  side by side, reporting the tighter epsilon.
* ``subsampled``: RDP of Poisson-subsampled mechanisms beyond the Gaussian.
* ``planner``: noise multipliers from an (epsilon, delta) target (the inverse).
* ``ledger``: the persistent, hash-chained, capped ledger of a federation's spends.

Unit of privacy: adding or removing one record.
"""

from .accountant import (
    DEFAULT_ORDERS,
    DEFAULT_PLD_INTERVAL,
    OPACUS_ORDERS,
    CombinedAccountant,
    Epsilon,
    PldAccountant,
    RdpAccountant,
)
from .events import (
    ExponentialMechanismDpEvent,
    SkellamDpEvent,
    dpsgd_event,
    event_from_dict,
    event_to_dict,
    exponential_event,
    gaussian_event,
    gaussian_rho,
    laplace_event,
    skellam_dpsgd_event,
    skellam_event,
)
from .ledger import BudgetExceeded, Entry, Ledger, LedgerCorrupt
from .planner import BudgetError, EventFn, Plan, noise_for_epsilon, plan_noise

__all__ = [
    "DEFAULT_ORDERS",
    "DEFAULT_PLD_INTERVAL",
    "OPACUS_ORDERS",
    "BudgetError",
    "BudgetExceeded",
    "CombinedAccountant",
    "Entry",
    "EventFn",
    "Epsilon",
    "ExponentialMechanismDpEvent",
    "Ledger",
    "LedgerCorrupt",
    "PldAccountant",
    "Plan",
    "RdpAccountant",
    "SkellamDpEvent",
    "dpsgd_event",
    "event_from_dict",
    "event_to_dict",
    "exponential_event",
    "gaussian_event",
    "gaussian_rho",
    "laplace_event",
    "noise_for_epsilon",
    "plan_noise",
    "skellam_dpsgd_event",
    "skellam_event",
]
