"""The privacy event of one secure round, read from the round's public request alone.

Coordinator and organisations must agree on what a round costs: the coordinator records it
in the federation's ledger (with the noise of the survivors it saw), every organisation's
privacy guard records it in its own ledger (with the planned noise, which holds even if up to
``n - t`` organisations collude with the coordinator when ``2t > n``, or with its own share
only) before its vector is computed. Both compute it here, from what the request says the
organisation will compute, never from a number the coordinator could misstate:

* ``marginals``: one Skellam mechanism per requested clique with the sensitivity
  ``common.marginals.count_sensitivity`` of the request's ``row_cap``. Without a cap, a record
  adds one count to each marginal (L1 = L2 = 1; the organisation projects its vector onto the
  public box ``max_abs``, which never raises a distance: ``common.secure_sum``). With a cap,
  each organisation first caps its table at ``row_cap`` rows by uniform subsampling
  (``client.organisation.LocalTable.capped``). Under add/remove of one row of the table, the
  two capped tables can be coupled so that they differ in at most one row: one row added or
  removed while the table is below the cap, one row REPLACED by another once it reaches the
  cap (both capped tables then hold exactly ``row_cap`` rows). A replacement moves one cell of
  each marginal down by 1 and another up by 1: L1 = 2, L2 = sqrt(2). Whether the cap binds
  depends on the data, so every capped count round is accounted at the replacement bound.
  The coupling is over the subsample's randomness, a seed the organisation keeps secret and
  draws independently of its data; it is one coupling for all rounds (the same seed caps every
  round), so the composition of all rounds holds for the capped neighbours and hence for the
  original ones. A request that keeps organisations apart (``slots``) has the same
  sensitivity: a record moves only its own organisation's block.
* ``select``: ``k`` exponential mechanisms with the request's ``epsilon``. The organisation
  draws its vote exactly (``common.vote``: integer scores of sensitivity ``VOTE_SENSITIVITY``
  whatever the view, an exact sampler) at that epsilon rounded down, so each draw is at most
  ``epsilon``-DP and bounded-range; the vote itself carries no Skellam noise.
* ``scores``: one Skellam mechanism over the candidates' local errors on the integer score grid,
  with ``common.marginals.grid_score_sensitivity`` of the number of candidates the request
  names (the organisation scores exactly those; an error moves by at most ``SCORE_SENSITIVITY``
  under add/remove, exactly, for any view: ``common.marginals.local_errors``).
* ``gradients``: one (Poisson-subsampled) Skellam DP-SGD step, with the sensitivity of the
  clipped, integer-rounded gradient sum derived from the request's teacher settings and the
  vector's length (the organisation clips and rounds with exactly those settings).
* ``discovery``: one Skellam mechanism over the counts of a schema discovery round
  (``common.discovery.protocol``): a row adds one count to at most one cell of each column
  the request names, so L1 = k and L2 = sqrt(k) for its ``k`` columns. Organisations' guards
  record it under the phase ``schema`` (:func:`ledger_phase`).
* ``scale``: the five tasks above produce integer vectors and are sent at ``scale == 1``;
  a request with another scale multiplies what is sent, so :func:`sensitivity` refuses it
  (``ScaleRefused``) rather than account it at the unscaled sensitivity.
* anything else is a generic sum of a test or benchmark vector, one Skellam mechanism with
  the spec's declared sensitivity. Organisations never compute such vectors
  (``Organisation`` and its guard refuse unknown tasks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from dp_accounting import DpEvent

from .accounting import (
    event_from_dict,
    event_to_dict,
    exponential_event,
    skellam_dpsgd_event,
    skellam_event,
)
from .discovery import PHASE as DISCOVERY_PHASE
from .discovery import TASK as DISCOVERY
from .discovery import round_sensitivity as discovery_sensitivity
from .marginals import cliques_from_json, count_sensitivity, grid_score_sensitivity
from .secure_sum import NoisySumSpec

TASKS = ("marginals", "select", "scores", "gradients", DISCOVERY)
#: Keys of a job's pre-flight ``check`` request that carry its privacy plan.
PLAN_EVENT, PLAN_T, PLAN_NOISE = "plan.event", "plan.min_survivors", "plan.noise_multipliers"


class ScaleRefused(ValueError):
    """A request of a known task asks for a scale other than 1 (it would amplify the vector)."""


def row_cap(request: Mapping[str, Any]) -> int | None:
    """The public per-organisation row cap of a count round (``row_cap``; absent or 0: none)."""
    if request.get("task") != "marginals":
        return None
    return int(request.get("row_cap", 0)) or None


def sensitivity(request: Mapping[str, Any], spec: NoisySumSpec) -> tuple[float, float]:
    """(L1, L2) per-record sensitivity of the vector the request asks for, from its settings."""
    task = request.get("task")
    if task in TASKS and spec.scale != 1.0:
        raise ScaleRefused(f"a {task} round is sent at scale 1; the request asks for scale {spec.scale:g}")
    if task == "marginals":
        return count_sensitivity(row_cap(request))
    if task == "scores":
        return grid_score_sensitivity(len(cliques_from_json(str(request["cliques"]))))
    if task == "gradients":
        from .teacher import TeacherSettings, grid_sensitivity  # torch: only here

        return grid_sensitivity(TeacherSettings.from_config(request), spec.dim)
    if task == DISCOVERY:
        return discovery_sensitivity(request)
    return spec.l1_sensitivity, spec.l2_sensitivity


def ledger_phase(request: Mapping[str, Any]) -> str:
    """The phase under which an organisation's guard records a round: ``schema`` for discovery."""
    return DISCOVERY_PHASE if request.get("task") == DISCOVERY else "contribution"


def noise_multiplier(request: Mapping[str, Any], spec: NoisySumSpec) -> float:
    """The planned aggregate noise std (``t`` honest shares) over the L2 sensitivity."""
    return math.sqrt(2.0 * spec.mu) / sensitivity(request, spec)[1]


def round_event(request: Mapping[str, Any], spec: NoisySumSpec, mu: float | None = None) -> DpEvent:
    """The event of one round of ``request`` whose sum carries Skellam parameter ``mu``.

    ``mu`` defaults to the spec's planned ``mu`` (exactly ``t`` honest survivors); the
    coordinator passes ``spec.mu_of_survivors(s)`` for the ``s`` survivors it saw.
    """
    task = request.get("task")
    if task == "select":
        return exponential_event(float(request["epsilon"]), count=int(request["k"]))
    mu = spec.mu if mu is None else mu
    l1, l2 = sensitivity(request, spec)
    if task == "marginals":
        return skellam_event(mu, l1, l2, count=len(cliques_from_json(str(request["cliques"]))))
    if task == "gradients":
        from .teacher import TeacherSettings

        return skellam_dpsgd_event(mu, l1, l2, TeacherSettings.from_config(request).sampling_rate, steps=1)
    return skellam_event(mu, l1, l2)


def plan_request(event: DpEvent, min_survivors: int, noise_multipliers: Mapping[str, float]) -> dict[str, Any]:
    """A job's whole plan (its event at ``t`` survivors, ``t``, each phase's noise multiplier)
    as flat config values, so that every organisation's guard can judge the job up front."""
    return {
        PLAN_EVENT: json.dumps(event_to_dict(event)),
        PLAN_T: int(min_survivors),
        PLAN_NOISE: json.dumps({k: float(v) for k, v in noise_multipliers.items()}),
    }


def read_plan(request: Mapping[str, Any]) -> tuple[DpEvent, int, dict[str, float]] | None:
    """The plan ``plan_request`` wrote, or None if the request carries none."""
    if PLAN_EVENT not in request:
        return None
    multipliers = {k: float(v) for k, v in json.loads(str(request[PLAN_NOISE])).items()}
    return event_from_dict(json.loads(str(request[PLAN_EVENT]))), int(request[PLAN_T]), multipliers
