"""The coordinator's side of schema discovery: rounds through the secure noisy sum, a DP schema out.

Every round is ``Federation.noisy_sum`` of a ``discovery`` request (``common.discovery``):
SecAgg+ with Skellam shares, checked against the federation's cap before it runs and recorded in
the federation's ledger (phase ``schema``) with the survivors' noise before its sum is used,
while every organisation's guard judges and records it in its own ledger. The coordinator
first asks every organisation for its local column configuration (names and kinds: a
``columns`` query, no data) and refuses, before any round, when they disagree. The schema is
post-processing of the noisy sums; its ``provenance`` says what was spent and how.

Privacy argument: the plan (:func:`plan_sigma`, ``common.discovery.discovery_event``) fixes
round 0's noise and the discovery's epsilon before anything runs; before each text round
:func:`text_sigma` chooses its noise, from earlier noisy sums only, so that the rounds run and
those the remaining columns may still need cost at most that epsilon (a privacy filter; adaptive
RDP composition allows it). The filter composes each round at the noise every organisation's guard
records (what survives ``n - t`` colluders among ``t`` survivors, ``common.secure_sum``), never at
the larger noise the survivors carried: composed at the latter, the filter would let the last rounds
take every guard past its cap. The federation's ledger records the survivors' noise
(``epsilon_spent`` in the provenance), the guards the planned one (``epsilon_guards``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dp_accounting import ComposedDpEvent, DpEvent

from ..common.accounting import CombinedAccountant, noise_for_epsilon
from ..common.discovery import PHASE, ColumnFindings, DiscoveryError, DiscoverySettings, discovery_event
from ..common.discovery import heavy_hitters as hh
from ..common.discovery import protocol
from ..common.rounds import round_event
from ..common.schema import Schema
from ..common.secure_sum import NoisySumSpec
from .secure_sum import Federation

#: Public bound on one organisation's count in one cell (vectors are projected onto it).
MAX_COUNT = 1_000_000
#: Largest noise std a discovery plan may ask for.
MAX_SIGMA = 1e8
#: A text length whose round-0 count lies this many noise stds below the value threshold is not
#: explored (:func:`reachable_lengths`).
REACH_Z = 1.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DiscoveryPlan:
    """Public parameters of one discovery."""

    epsilon: float
    delta: float
    min_survivors: int
    name: str = "discovered"
    na_values: tuple[str, ...] = ()
    settings: DiscoverySettings = field(default_factory=DiscoverySettings)
    max_abs: int = MAX_COUNT


def plan_sigma(plan: DiscoveryPlan, kinds: Mapping[str, str]) -> float:
    """The smallest noise std whose whole discovery over ``kinds`` costs ``plan.epsilon``."""
    return noise_for_epsilon(
        lambda sigma: discovery_event(sigma, kinds, plan.settings), plan.epsilon, plan.delta, max_noise=MAX_SIGMA
    )


def column_configs(fed: Federation) -> dict[str, dict[str, str]]:
    """Every organisation's local column configuration (names and kinds), by organisation."""
    configs = {}
    for nid, reply in fed.query("columns").items():
        answer = dict(reply.content["config"]) if not reply.has_error() else {}
        if not answer.get("columns"):
            raise DiscoveryError(f"{fed.name(nid)} has no column configuration for discovery")
        configs[fed.name(nid)] = json.loads(str(answer["columns"]))
    return configs


#: ``noisy_sum(spec, request, what) -> (total, mu)``: one secure round and the noise it carried.
NoisySum = Callable[[NoisySumSpec, dict[str, Any], str], tuple[np.ndarray, float]]


@dataclass(frozen=True)
class Discovered:
    """A discovery's schema mapping (with its provenance) and its rounds composed as every
    organisation's guard recorded them (at the planned noise: ``run_rounds``)."""

    schema: dict[str, Any]
    guarded: DpEvent


def discover(fed: Federation, plan: DiscoveryPlan, progress: Progress = lambda _m: None,
             given: Mapping[str, Mapping[str, Any]] | None = None) -> Discovered:
    """Run the discovery rounds on the federation; ``given``: a job's public columns
    (``common.discovery.protocol.schema_dict``)."""
    kinds = protocol.agreed_columns(column_configs(fed))

    def noisy_sum(spec: NoisySumSpec, request: dict[str, Any], what: str) -> tuple[np.ndarray, float]:
        result = fed.noisy_sum(spec, request, phase=PHASE, mechanism=what)
        return result.total, result.mu

    found = run_rounds(kinds, plan, noisy_sum, progress, given)
    spent = fed.ledger.epsilon().epsilon if fed.ledger is not None else None
    found.schema["provenance"].update(organisations=list(fed.organisations), ledger_epsilon=spent)
    return found


def discover_for(fed: Federation, base: Schema, plan: DiscoveryPlan, progress: Progress) -> tuple[Schema, DpEvent]:
    """A job's discovery phase: the schema ``base`` names the columns, their kinds and the label;
    the discovered schema has its categories, bounds, bins and missing flags from the noisy
    rounds (``base``'s rules are dropped: they name values the discovery may not list). Returns
    it with the rounds' event as every guard recorded it."""
    found = discover(fed, plan, progress, given={c.name: c.to_dict() for c in base.columns})
    label = base.label if base.label is not None and base.label in found_text_columns(found.schema) else None
    schema = Schema.from_dict({**found.schema, "name": f"{base.name}-discovered", "label": label,
                               "na_values": list(base.na_values)}, source="the discovered schema")
    return schema, found.guarded


def found_text_columns(found: Mapping[str, Any]) -> list[str]:
    return [c["name"] for c in found["columns"] if c["kind"] == "categorical"]


def run_rounds(kinds: Mapping[str, str], plan: DiscoveryPlan, noisy_sum: NoisySum,
               progress: Progress = lambda _m: None, given: Mapping[str, Mapping[str, Any]] | None = None) -> Discovered:
    """The discovery rounds over the agreed columns ``kinds``, each one ``noisy_sum``.

    Round 0 (every column at ``FIRST_ROUND_NOISE`` of the planned ``sigma``) gives the missing
    counts, the grids and each text column's longest heavy length. Before each text round, its
    noise is set so that the rounds run so far (at the noise the guards record) and the rounds the
    remaining columns may still need (up to their lengths) spend the plan's epsilon: a column that
    runs out of candidates leaves its share to the others.
    """
    if not kinds:
        raise DiscoveryError("the organisations configured no column")
    settings = plan.settings
    sigma0 = protocol.round_sigma(plan_sigma(plan, kinds), 0)
    findings = {name: ColumnFindings(kind) for name, kind in kinds.items()}
    request = protocol.first_request(list(kinds.items()), plan.na_values, settings.max_bytes)
    spec0 = _spec(request, sigma0, plan)
    total, mu0 = noisy_sum(spec0, request, "schema discovery round 0: missing cells, grids and lengths")
    events, guarded = [round_event(request, spec0, mu0)], [round_event(request, spec0)]
    thresholds = {}
    length_blocks = {}
    for name, block in protocol.split(total, request).items():
        findings[name].missing, block = float(block[0]), np.asarray(block[1:], dtype=np.float64)
        thresholds[name] = hh.release_threshold(mu0, len(block), hh.STRICT_FALSE_POSITIVE)
        if findings[name].kind in protocol.GRID_KINDS:
            findings[name].grid, findings[name].mu = block, mu0
        elif findings[name].kind == "categorical":
            findings[name].categories = {}
            length_blocks[name] = block
    lengths = reachable_lengths(plan, ComposedDpEvent(guarded), length_blocks, thresholds, mu0)
    progress(f"schema discovery: {len(kinds)} columns, noise std {sigma0:.1f} counts in round 0; text rounds "
             + (f"up to {max(lengths.values())} bytes" if lengths else "none (no length clears the noise)"))
    prefixes = {name: [b""] for name in lengths}
    sigmas = []
    for level in range(max(lengths.values(), default=-1) + 1):
        columns = [(n, "categorical") for n in lengths if level <= lengths[n] and prefixes[n]]
        if not columns:
            break
        sigma = text_sigma(plan, ComposedDpEvent(guarded), {n: lengths[n] - level for n, _ in columns})
        sigmas.append(sigma)
        request = protocol.request(columns, {n: prefixes[n] for n, _ in columns}, plan.na_values)
        spec = _spec(request, sigma, plan)
        total, mu = noisy_sum(spec, request, f"schema discovery round {level + 1}: byte {level + 1} of {len(columns)} text columns")
        events.append(round_event(request, spec, mu))
        guarded.append(round_event(request, spec))
        for name, block in protocol.split(total, request).items():
            threshold = hh.release_threshold(mu, len(block), settings.false_positive)
            thresholds[name] = max(thresholds[name], threshold)
            prefixes[name], released = hh.extend(prefixes[name], block, threshold, lengths[name], settings.max_candidates,
                                                 end_threshold=hh.value_threshold(mu, plan.delta))
            findings[name].categories.update(released)
    spent = CombinedAccountant().compose(ComposedDpEvent(events)).epsilon(plan.delta)
    guards = CombinedAccountant().compose(ComposedDpEvent(guarded)).epsilon(plan.delta)
    provenance = {
        "phase": PHASE,
        "epsilon_planned": plan.epsilon,
        "epsilon_spent": round(spent.epsilon, 6),
        "epsilon_guards": round(guards.epsilon, 6),
        "delta": plan.delta,
        "noise_std": {"round 0": round(sigma0, 3), "text rounds": [round(x, 1) for x in sigmas]},
        "rounds": len(events),
        "text_lengths": lengths,
        "thresholds": {name: round(t, 1) for name, t in thresholds.items()},
        "missing_threshold": round(sigma0, 1),
        "settings": asdict(settings),
    }
    progress(f"schema discovery: {len(events)} rounds, epsilon {spent.epsilon:.4f}; " + ", ".join(
        f"{name}: {len(f.categories or {})} categories" for name, f in findings.items() if f.kind == "categorical"))
    return Discovered(protocol.schema_dict(plan.name, findings, plan.na_values, sigma0, settings, provenance, given),
                      ComposedDpEvent(guarded))


def reachable_lengths(plan: DiscoveryPlan, spent: DpEvent, blocks: Mapping[str, np.ndarray],
                      floors: Mapping[str, float], mu0: float) -> dict[str, int]:
    """Each text column's depth ``D``: the longest length whose noisy round-0 count clears both
    its strict floor and the reach bar, for the columns with one (post-processing of round 0).

    The reach bar is the value threshold of the text rounds planned for the depths the strict
    floors give, less :data:`REACH_Z` noise stds of those rounds and of round 0: a length whose
    cell lies below it holds no value with a fair chance of release in those rounds (and the
    rounds that do run are at most as noisy), so its rounds would spend budget for nothing.
    """
    deepest = {n: hh.longest_heavy_length(b, floors[n]) for n, b in blocks.items()}
    planned = {n: d for n, d in deepest.items() if d}
    if not planned:
        return {}
    sigma = text_sigma(plan, spent, planned)
    bar = hh.value_threshold(sigma**2 / 2.0, plan.delta) - REACH_Z * (sigma + np.sqrt(2.0 * mu0))
    lengths = {n: hh.longest_heavy_length(b, max(floors[n], bar)) for n, b in blocks.items()}
    return {n: d for n, d in lengths.items() if d}


def text_sigma(plan: DiscoveryPlan, spent: DpEvent, lengths: Mapping[str, int]) -> float:
    """The next text round's noise std: the smallest at which the rounds still to come (column
    ``c`` in ``lengths[c] + 1`` more rounds) and the ``spent`` events cost at most the plan's
    epsilon. A privacy filter: the total is fixed before any round and each round's noise is
    chosen from earlier noisy outputs only, which adaptive RDP composition allows (Feldman and
    Zrnic 2021; the ledgers compose exactly what ran)."""
    return noise_for_epsilon(
        lambda sigma: ComposedDpEvent([spent, protocol.text_rounds_event(sigma, lengths)]), plan.epsilon, plan.delta,
        max_noise=MAX_SIGMA,
    )


def _spec(request: Mapping[str, Any], sigma: float, plan: DiscoveryPlan) -> NoisySumSpec:
    return NoisySumSpec(dim=protocol.dimension(request), mu=sigma**2 / 2.0, min_survivors=plan.min_survivors,
                        max_abs=plan.max_abs)
