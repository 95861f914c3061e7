"""An organisation's own privacy guard, independent of the coordinator.

The coordinator keeps the federation's ledger, but an organisation need not trust it to stop:
its daemon keeps a ledger of its own (the same hash-chained, fsynced file and the same
combined accountant, ``common.accounting.Ledger``) of every noisy contribution its data has
made, over all jobs and coordinators, and refuses, before anything is computed or sent:

* ``min-survivors``: a round whose SecAgg+ threshold ``t`` is below the policy. ``t`` is what
  sets each organisation's noise share (``mu / t``); a lower ``t`` means fewer honest shares
  protect the sum should the others collude with the coordinator.
* ``min-noise-multiplier``: a Skellam round whose planned aggregate noise std over its L2
  sensitivity is below the policy, and any round of counts or gradients without noise.
* ``epsilon-cap``: a round whose event (``common.rounds.round_event`` at the planned noise,
  i.e. exactly ``t`` honest shares: the worst case the organisation can rely on) would take
  its ledger past the cap at the policy's delta.
* a request of a task it does not know.

Each refusal names the organisation and the rule and reaches the coordinator as the round's
error; nothing is sent. An admitted round is written to the ledger (fsynced) before the
organisation's share leaves, so a crash can over-count a spend, never lose one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dp_accounting import DpEvent

from fedsynth.client.organisation import RequestRefused
from fedsynth.common.accounting import BudgetExceeded, Ledger
from fedsynth.common.rounds import TASKS, noise_multiplier, read_plan, round_event
from fedsynth.common.secure_sum import NoisySumSpec


class GuardRefused(RequestRefused):
    """The organisation's own guard refuses the request (the message names the rule)."""


@dataclass(frozen=True)
class GuardPolicy:
    """What an organisation lets its data take part in (the ``[guard]`` of its config)."""

    ledger: Path
    epsilon_cap: float
    delta: float
    min_noise_multiplier: float
    min_survivors: int

    def __post_init__(self) -> None:
        if self.min_survivors < 2:
            raise ValueError(f"guard min-survivors must be at least 2, got {self.min_survivors}")
        if self.min_noise_multiplier < 0:
            raise ValueError(f"guard min-noise-multiplier must be >= 0, got {self.min_noise_multiplier}")


class Guard:
    """Enforces one organisation's :class:`GuardPolicy` over its own ledger."""

    def __init__(self, org: str, policy: GuardPolicy) -> None:
        self.org = org
        self.policy = policy
        policy.ledger.parent.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(policy.ledger, cap_epsilon=policy.epsilon_cap, delta=policy.delta)

    def admit_job(self, request: Mapping[str, Any]) -> None:
        """Pre-flight: refuse a job whose plan breaks the policy (nothing is spent here).

        The per-round checks in :meth:`admit` are what protect the data; this one only lets
        a job that would be refused later fail before its first round.
        """
        plan = read_plan(request)
        if plan is None:
            raise self._refused("plan", "the job's check carries no privacy plan to judge")
        event, t, multipliers = plan
        self._check_threshold(t)
        for phase, z in multipliers.items():
            self._check_multiplier(z, f"the job's {phase} phase")
        self._check_cap(event, "this job")

    def admit(self, request: Mapping[str, Any], spec: NoisySumSpec) -> DpEvent:
        """The round's event if the policy admits it; raise :class:`GuardRefused` otherwise."""
        task = request.get("task")
        if task not in TASKS:
            raise self._refused("task", f"unknown task {task!r}")
        self._check_threshold(spec.min_survivors)
        if task != "select":  # a vote is private by its exponential mechanism; it has no Skellam noise
            self._check_multiplier(noise_multiplier(request, spec) if spec.mu > 0 else 0.0, f"this {task} round")
        event = round_event(request, spec)
        self._check_cap(event, f"this {task} round")
        return event

    def record(self, event: DpEvent, request: Mapping[str, Any], spec: NoisySumSpec) -> None:
        """Write the admitted round to the guard's ledger (fsynced) before the share leaves."""
        try:
            self.ledger.append(
                "contribution",
                str(request.get("task")),
                event,
                metadata={"round": int(request.get("round", 0)), "t": spec.min_survivors, "mu": spec.mu, "dim": spec.dim},
            )
        except BudgetExceeded as exc:
            raise self._refused("epsilon-cap", str(exc)) from None

    def _check_threshold(self, t: int) -> None:
        if t < self.policy.min_survivors:
            raise self._refused(
                "min-survivors", f"the round's threshold t={t} is below the policy's {self.policy.min_survivors}"
            )

    def _check_multiplier(self, z: float, what: str) -> None:
        if z <= 0 or z < self.policy.min_noise_multiplier:
            raise self._refused(
                "min-noise-multiplier",
                f"{what} has noise multiplier {z:.4g}, the policy requires at least {self.policy.min_noise_multiplier:g}",
            )

    def _check_cap(self, event: DpEvent, what: str) -> None:
        try:
            self.ledger.check(event, phase=what)
        except BudgetExceeded as exc:
            spent = self.ledger.epsilon().epsilon if len(self.ledger) else 0.0
            raise self._refused(
                "epsilon-cap", f"{exc} (already spent {spent:.4g} over {len(self.ledger)} contributions)"
            ) from None

    def _refused(self, rule: str, why: str) -> GuardRefused:
        return GuardRefused(f"{self.org}'s privacy guard refuses (rule '{rule}'): {why}; nothing was sent")
