"""The federated marginal generator: 1-way marginals, then rounds of select-and-measure.

Design and privacy argument
---------------------------
* **Measure.** Every marginal is measured by a secure noisy sum over all organisations
  (``fedsynth.common.secure_sum``): the coordinator sees the exact global counts plus Skellam
  noise, so organisations' heterogeneity does not bias any measurement. A round measuring
  ``k`` marginals is ``k`` Skellam mechanisms with sensitivity 1 (a record adds one count to
  each), recorded with the survivors' actual noise.
* **Select.** The coordinator cannot see un-noised marginals, so selection happens where the
  rows are (FLAIM-style, Maddock et al., KDD 2024): each organisation scores every candidate
  by the L1 error between its own marginal and the current global model's (scaled to its own
  size, with AIM's penalty for the noise a measurement would add) and draws ``k`` candidates
  by the exponential mechanism (Gumbel top-k). Organisations hold disjoint rows, so a record
  influences only its own organisation's draw: by parallel composition the round costs one
  organisation's ``k`` exponential mechanisms, recorded once. The draws are sent as k-hot
  votes through SecAgg+ (no noise needed: they are already private), so the coordinator sees
  only the vote histogram, and measures the ``k`` most voted candidates. Heterogeneity can
  make an organisation vote for a marginal where it differs from the others; such marginals
  are exactly those the global model most needs, and the measurement itself is global.
* **Fit and sample.** ``mbi`` fits a graphical model to all noisy measurements (weighted by
  their actual noise); rows are sampled from it. Both are post-processing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedsynth.common.generator import GeneratorSettings, MarginalModel, Measurement, penalties
from fedsynth.common.marginals import (
    Clique,
    candidate_cliques,
    cells,
    cliques_to_json,
    first_k_not_contained,
    marginals,
    split_blocks,
)
from fedsynth.common.schema import Schema
from fedsynth.common.secure_sum import NoisySumSpec
from fedsynth.server.secure_sum import Federation

log = logging.getLogger(__name__)

PHASE = "generator"

#: ``progress(message)``: one line of human-readable progress.
Progress = Callable[[str], None]


@dataclass(frozen=True)
class GeneratorPlan:
    """Public parameters of one generator run."""

    sigma: float  # std of every marginal measurement's aggregate noise (counts), at t survivors
    min_survivors: int
    max_rows: int  # public bound on one organisation's rows
    settings: GeneratorSettings


def _schema_request(schema: Schema) -> dict[str, str]:
    return {"schema": schema.dumps("json")}


def measure(
    fed: Federation, schema: Schema, plan: GeneratorPlan, cliques: list[Clique], what: str
) -> list[Measurement]:
    """Secure noisy sum of the marginals of ``cliques`` over all organisations."""
    domain = schema.domain()
    spec = NoisySumSpec(
        dim=sum(cells(domain, cl) for cl in cliques),
        mu=plan.sigma**2 / 2.0,
        min_survivors=plan.min_survivors,
        max_abs=plan.max_rows,
    )
    request = {**_schema_request(schema), "task": "marginals", "cliques": cliques_to_json(cliques)}
    result = fed.noisy_sum(spec, request, phase=PHASE, mechanism=what)
    sigma = float(np.sqrt(2.0 * result.mu))
    return [
        Measurement(cl, block, sigma)
        for cl, block in zip(cliques, split_blocks(result.total, domain, cliques), strict=True)
    ]


def select(
    fed: Federation,
    schema: Schema,
    plan: GeneratorPlan,
    model: MarginalModel,
    candidates: list[Clique],
    rng: np.random.Generator,
) -> list[Clique]:
    """One selection round: every organisation votes for ``k`` candidates; take the top ``k``."""
    domain = schema.domain()
    settings = plan.settings
    k = min(settings.per_round, len(candidates))
    sample = model.sample(settings.score_sample, seed=int(rng.integers(2**31)))
    model_marginals = marginals(sample, list(domain), domain, candidates).astype(np.float64)
    pens = penalties(plan.sigma, candidates, domain) / fed.num_clients
    epsilon = settings.epsilon_select(plan.sigma)
    request = {
        **_schema_request(schema),
        "task": "select",
        "cliques": cliques_to_json(candidates),
        "epsilon": epsilon,
        "k": k,
    }
    spec = NoisySumSpec(dim=len(candidates), mu=0.0, min_survivors=plan.min_survivors, max_abs=1)
    votes = fed.noisy_sum(
        spec,
        request,
        phase=PHASE,
        mechanism=f"selection of {k} marginals (exponential mechanism, per organisation)",
        parameters=[model_marginals, pens],
    ).total
    tie_break = rng.random(len(candidates))
    order = np.lexsort((tie_break, -votes))
    return [candidates[i] for i in first_k_not_contained(order, candidates, k)]


def fit_generator(
    fed: Federation, schema: Schema, plan: GeneratorPlan, rng: np.random.Generator, progress: Progress
) -> MarginalModel:
    """Run the whole generator phase and return the fitted model."""
    domain = schema.domain()
    model = MarginalModel(domain)
    for m in measure(fed, schema, plan, [(c,) for c in domain], "1-way marginals"):
        model.add(m)
    model.fit(plan.settings.fit_iters)
    progress(f"generator: measured {len(domain)} 1-way marginals; ~{model.total:,.0f} rows in all")
    candidates = candidate_cliques(domain, plan.settings.max_size, plan.settings.max_cells)
    for round_ in range(1, plan.settings.rounds + 1):
        chosen = select(fed, schema, plan, model, candidates, rng)
        names = ", ".join("x".join(cl) for cl in chosen)
        for m in measure(fed, schema, plan, chosen, f"round {round_} marginals: {names}"):
            model.add(m)
        candidates = [cl for cl in candidates if cl not in chosen]
        model.fit(plan.settings.fit_iters)
        progress(f"generator round {round_}/{plan.settings.rounds}: measured {names}")
    model.fit(plan.settings.final_iters)
    return model
