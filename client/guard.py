"""An organisation's own privacy guard, independent of the coordinator.

The coordinator keeps the federation's ledger, but an organisation need not trust it: its
daemon keeps a ledger of its own (the same hash-chained, fsynced, file-locked file and the same
combined accountant, ``common.accounting.Ledger``) of every noisy contribution its data has
made, over all jobs and coordinators. The guard judges every round from what the organisation
itself will send, never from a number only the coordinator vouches for, and refuses, before
any data is read or anything is sent:

* ``task``: a task it does not know; ``scale``: a known task at a scale other than 1 (the
  scale multiplies what is sent; ``common.rounds.sensitivity``).
* ``min-survivors``: a SecAgg+ threshold ``t`` below the policy. ``shamir-threshold``: a round
  with ``3t <= 2n`` or ``t > n`` for its ``n`` clients. Shares are revealed only for a survivor
  set that ``t`` organisations signed (``client.secagg``); two different sets each signed by
  ``t`` need ``2t - n`` organisations that sign both, so with ``3t > 2n`` no ``n - t`` colluders
  can make a lying coordinator's survivor sets inconsistent and rebuild a partial sum.
* ``secagg-graph``: a SecAgg+ graph (``secagg.num_shares`` k, ``secagg.threshold`` s) that some
  placement of ``n - t`` dead and ``n - t`` colluding organisations could break
  (``common.secagg_graph.SecAggGraph.safe``): the complete graph at threshold ``min(t, n - 1)``
  or a sparse one with ``s > n - t`` and ``2 (k // 2) > 2 (n - t)``, in any order.
* ``secagg-setup``: SecAgg+ setup parameters that differ from what the round's request implies
  (threshold ``s``, number of shares ``k``, sample size ``n``, clipping, quantization and modulus ranges, weight):
  compared at the masked-vector stage, before the vector is computed (:func:`verify_setup`).
  ``secagg-unmask``: an unmask request whose active and dead node sets overlap or that names
  fewer than ``t`` active nodes (:func:`verify_unmask`): answering it could reveal both a
  node's mask seed and its private key.
* ``model-marginals``: a selection or scores round with other arrays than one model view, a
  candidate that is not a non-empty list of distinct schema columns of at most
  ``MAX_MARGINAL_CELLS`` cells, or a view that does not match
  its candidates, has a value outside ``[0, MAX_VIEW_VALUE]`` or a
  candidate's marginal of total 0, or a ``given`` that is not a list of the schema's columns
  (the columns errors are taken given: any such list keeps the sensitivity). ``vote-range``: a vote whose ``epsilon``, ``k`` or
  ``penalty_std`` is not a number within the public bounds of ``common.vote``. The
  organisation computes its errors in integers on a public grid from any such view and its
  penalties itself, and draws its vote exactly, so a score's sensitivity
  (``common.marginals.SCORE_SENSITIVITY``) and the vote's epsilon hold whatever the
  coordinator sends (``common.vote``); the bounds keep every number the mechanism takes in a
  public range.
* ``teacher-settings``: a gradients round whose teacher settings are not ``common.teacher.TeacherSettings``
  within their public bounds (a NaN clip made the rounding loop forever on rows).
* ``model-weights``: a gradients round whose teacher weights are not finite (a record whose
  gradient still overflows becomes a zero row locally: ``common.teacher.clip_rows``).
* ``min-noise-multiplier``: a Skellam round whose accounted noise std over its L2 sensitivity
  is below the policy, and any round of counts or gradients without noise.
* ``epsilon-cap``: a round whose event would take its ledger past the cap at the policy's delta.

The event is ``common.rounds.round_event`` of the request with the noise the policy's
``noise-accounting`` vouches for: ``planned`` (``(2t - n) mu / t``, the ``2t - n`` honest shares
that remain when a lying coordinator keeps ``t`` survivors of which ``n - t`` collude;
``common.secure_sum``) or ``own-share`` (``mu / t``, only the
organisation's own share: what holds whatever the others and the coordinator do). An admitted
round is written to the ledger (fsynced) before its vector is computed, so a crash can
over-count a spend, never lose one. Refusals name the organisation, the rule and public
parameters only (``client.organisation.refusal``); nothing is sent.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dp_accounting import DpEvent

from .organisation import RequestRefused, refusal
from ..common.accounting import BudgetExceeded, Ledger
from ..common.marginals import MAX_MARGINAL_CELLS, MAX_VIEW_VALUE, cells
from ..common.rounds import TASKS, ScaleRefused, ledger_phase, read_plan, round_event, sensitivity
from ..common.schema import Schema
from ..common.secagg_graph import GraphError, SecAggGraph, complete_graph, graph_from_request
from ..common.secure_sum import MAX_WEIGHT, NoisySumSpec, SecureRanges
from ..common.vote import MAX_PENALTY_STD, MAX_VOTE_EPSILON, MAX_VOTE_K

NOISE_ACCOUNTING = ("planned", "own-share")


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
    noise_accounting: str = "planned"

    def __post_init__(self) -> None:
        if self.min_survivors < 2:
            raise ValueError(f"guard min-survivors must be at least 2, got {self.min_survivors}")
        if self.min_noise_multiplier < 0:
            raise ValueError(f"guard min-noise-multiplier must be >= 0, got {self.min_noise_multiplier}")
        if self.noise_accounting not in NOISE_ACCOUNTING:
            raise ValueError(
                f"guard noise-accounting must be one of {', '.join(NOISE_ACCOUNTING)}, got {self.noise_accounting!r}"
            )


class Guard:
    """Enforces one organisation's :class:`GuardPolicy` over its own ledger."""

    def __init__(self, org: str, policy: GuardPolicy) -> None:
        self.org = org
        self.policy = policy
        policy.ledger.parent.mkdir(parents=True, exist_ok=True)

    @functools.cached_property
    def ledger(self) -> Ledger:
        """The guard's ledger, read and verified when a decision first needs it (a SecAgg+ stage
        that only relays keys or shares does not: loading composes every entry's accounting)."""
        return Ledger(self.policy.ledger, cap_epsilon=self.policy.epsilon_cap, delta=self.policy.delta)

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

    def admit(self, request: Mapping[str, Any], spec: NoisySumSpec, arrays: Sequence[np.ndarray] = ()) -> DpEvent:
        """The round's event, at the noise the policy vouches for, if the policy admits it."""
        task = request.get("task")
        if task not in TASKS:
            raise self._refused("task", f"unknown task {task!r}")
        try:
            _, l2 = sensitivity(request, spec)
        except ScaleRefused as exc:
            raise self._refused("scale", str(exc)) from None
        except ValueError as exc:
            if task != "gradients":
                raise
            raise self._refused("teacher-settings", str(exc)) from None
        self._check_threshold(spec.min_survivors)
        self._check_shamir(spec.min_survivors, int(request["num_clients"]))
        self._check_graph(request, spec)
        mu = self.accounted_mu(spec, int(request["num_clients"]))
        if task in ("select", "scores"):
            self._check_model(request, arrays)
        if task == "gradients" and not all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in arrays):
            raise self._refused("model-weights", "a gradients round's weights must be finite")
        if task != "select":  # a vote is private by its exponential mechanism; it carries no Skellam noise
            self._check_multiplier(math.sqrt(2.0 * mu) / l2, f"this {task} round")
        event = round_event(request, spec, mu)
        self._check_cap(event, f"this {task} round")
        return event

    def accounted_mu(self, spec: NoisySumSpec, organisations: int) -> float:
        """The Skellam parameter this organisation accounts: what ``2t - n`` honest shares carry
        (``planned``: holds against a lying coordinator and ``n - t`` colluders) or its own share."""
        return spec.honest_mu(organisations) if self.policy.noise_accounting == "planned" else spec.mu_share

    def record(self, event: DpEvent, request: Mapping[str, Any], spec: NoisySumSpec) -> None:
        """Write the admitted round to the guard's ledger (fsynced) before anything is computed."""
        try:
            self.ledger.append(
                ledger_phase(request),
                str(request.get("task")),
                event,
                metadata={
                    "round": int(request.get("round", 0)),
                    "t": spec.min_survivors,
                    "n": int(request["num_clients"]),
                    "mu": self.accounted_mu(spec, int(request["num_clients"])),
                    "noise_accounting": self.policy.noise_accounting,
                    "dim": spec.dim,
                },
            )
        except BudgetExceeded as exc:
            raise self._refused("epsilon-cap", str(exc)) from None

    def _check_threshold(self, t: int) -> None:
        if t < self.policy.min_survivors:
            raise self._refused(
                "min-survivors", f"the round's threshold t={t} is below the policy's {self.policy.min_survivors}"
            )

    def _check_shamir(self, t: int, n: int) -> None:
        if not 2 * n < 3 * t <= 3 * n:
            raise self._refused(
                "shamir-threshold",
                f"t={t} of n={n}: need 2n/3 < t <= n, else n - t colluders can get two survivor sets signed",
            )

    def _check_graph(self, request: Mapping[str, Any], spec: NoisySumSpec) -> None:
        n, t = int(request["num_clients"]), spec.min_survivors
        try:
            graph = graph_from_request(request, n, t)
        except GraphError as exc:
            raise self._refused("secagg-graph", str(exc)) from None
        if graph.complete and graph.threshold != min(t, n - 1):
            raise self._refused("secagg-graph", f"a complete graph shares at threshold {min(t, n - 1)}, not {graph.threshold}")
        if not graph.safe():
            raise self._refused(
                "secagg-graph",
                f"neighbourhoods of k={graph.num_shares} at threshold {graph.threshold} among n={n} can be broken by "
                f"{n - t} dead and {n - t} colluding organisations placed by the coordinator (t={t})",
            )

    def _check_multiplier(self, z: float, what: str) -> None:
        if z <= 0 or z < self.policy.min_noise_multiplier:
            raise self._refused(
                "min-noise-multiplier",
                f"{what} has noise multiplier {z:.4g}, the policy requires at least {self.policy.min_noise_multiplier:g}",
            )

    def _check_model(self, request: Mapping[str, Any], arrays: Sequence[np.ndarray]) -> None:
        """A model view within the public bounds (and, for a vote, epsilon, k and penalty std
        within theirs), so that nothing the coordinator sends changes a score's sensitivity or
        the vote's precision (``common.marginals.local_errors``, ``common.vote``)."""
        domain = Schema.from_dict(json.loads(str(request["schema"]))).domain()
        candidates = self._candidates(request, domain)
        if len(arrays) != 1:
            raise self._refused("model-marginals", f"a {request['task']} round carries one array, the model's view")
        view = np.asarray(arrays[0], dtype=np.float64).reshape(-1)
        sizes = [cells(domain, c) for c in candidates]
        if view.size != sum(sizes):
            raise self._refused("model-marginals", "the model marginals do not match the candidates")
        if not (np.all(np.isfinite(view)) and np.all(view >= 0) and np.all(view <= MAX_VIEW_VALUE)):
            raise self._refused("model-marginals", f"model marginals must lie in [0, {MAX_VIEW_VALUE:.0f}]")
        if any(block.sum() <= 0 for block in np.split(view, np.cumsum(sizes)[:-1])):
            raise self._refused("model-marginals", "every candidate's model marginal needs a positive total")
        if not _names_in(_json_or_none(request.get("given", "[]")), domain):
            raise self._refused("model-marginals", "'given' must be a JSON list of the schema's column names")
        if request["task"] == "select":
            self._check_vote_range(request, len(candidates))

    def _candidates(self, request: Mapping[str, Any], domain: Mapping[str, int]) -> list[tuple[str, ...]]:
        """The request's candidates, each a non-empty list of the schema's column names (an empty
        one would be counted only on a table with rows: refused before any row is read)."""
        candidates = _json_or_none(request["cliques"])
        if not (isinstance(candidates, list) and all(_names_in(c, domain) and c for c in candidates)):
            raise self._refused("model-marginals", "candidates must be non-empty JSON lists of the schema's column names")
        if any(len(set(c)) != len(c) or cells(domain, tuple(c)) > MAX_MARGINAL_CELLS for c in candidates):
            raise self._refused("model-marginals", f"a candidate names each column once and has at most "
                                f"{MAX_MARGINAL_CELLS} cells")
        return [tuple(c) for c in candidates]

    def _check_vote_range(self, request: Mapping[str, Any], candidates: int) -> None:
        """A vote's epsilon, k and penalty std: numbers within the public bounds of ``common.vote``."""
        epsilon, k, std = (request.get(key) for key in ("epsilon", "k", "penalty_std"))
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (epsilon, std))
        if not (
            numbers
            and isinstance(k, int)
            and not isinstance(k, bool)
            and 0 < epsilon <= MAX_VOTE_EPSILON
            and 1 <= k <= min(candidates, MAX_VOTE_K)
            and 0 <= std <= MAX_PENALTY_STD
        ):
            raise self._refused(
                "vote-range",
                f"a vote needs 0 < epsilon <= {MAX_VOTE_EPSILON:g}, 1 <= k <= min(candidates, {MAX_VOTE_K}) and "
                f"0 <= penalty_std <= {MAX_PENALTY_STD:g}",
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
        return GuardRefused(refusal(self.org, rule, why))


def verify_setup(
    org: str, setup: Mapping[str, Any], spec: NoisySumSpec, ranges: SecureRanges, n: int, graph: SecAggGraph | None = None
) -> None:
    """Refuse unless the SecAgg+ setup this node joined with is what the round's request implies
    (``graph``: the round's; None: the complete graph at threshold ``min(t, n - 1)``)."""
    graph = graph or complete_graph(n, spec.min_survivors)
    expected = {
        "threshold": graph.threshold,
        "share_num": graph.num_shares,
        "sample_num": n,
        "clipping_range": float(ranges.clipping_range),
        "target_range": ranges.quantization_range,
        "mod_range": ranges.modulus_range,
        "max_weight": float(MAX_WEIGHT),
    }
    differ = sorted(k for k, v in expected.items() if setup.get(k) != v)
    if differ:
        got = ", ".join(f"{k}={setup.get(k)!r} (request implies {expected[k]!r})" for k in differ)
        raise GuardRefused(refusal(org, "secagg-setup", got))


def verify_unmask(org: str, active: Sequence[int], dead: Sequence[int], threshold: int) -> None:
    """Refuse an unmask request with overlapping active/dead sets, repeated nodes, fewer than
    ``threshold`` active nodes, or no setup to unmask (``threshold`` 0)."""
    if threshold < 1 or set(active) & set(dead) or len(set(active)) < threshold or len(set(active)) != len(active):
        raise GuardRefused(
            refusal(org, "secagg-unmask", f"active and dead nodes must be disjoint, at least t={threshold} active")
        )


def _json_or_none(text: Any) -> Any:
    """``text`` parsed as JSON, or None when it is not JSON (or nested too deeply to parse)."""
    try:
        return json.loads(str(text))
    except (ValueError, RecursionError):
        return None


def _names_in(names: Any, domain: Mapping[str, int]) -> bool:
    """Whether ``names`` is a list of the schema's column names."""
    return isinstance(names, list) and all(isinstance(n, str) and n in domain for n in names)
