"""The coordinator's side of a federated evaluation (mechanism and privacy: ``common.evaluation``).

One secure noisy sum of the public evaluation marginals over all organisations, in phase
``evaluation`` (its event in the ledger, with the survivors' actual noise, before the counts
are used); then, after sampling, the comparison of the released rows with those noisy counts
(post-processing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..common.evaluation import (
    PHASE,
    evaluation_request,
    summarise,
    synthetic_marginals,
)
from ..common.marginals import Clique, split_blocks, total_cells
from ..common.schema import Schema
from ..common.secure_sum import NoisySumSpec
from .secure_sum import Federation


@dataclass(frozen=True)
class EvaluationPlan:
    """Public parameters of a federated evaluation, fixed before round 1."""

    sigma: float  # noise std per cell of the union's counts, at t survivors
    cliques: tuple[Clique, ...]
    min_survivors: int
    max_abs: int  # public bound on any one organisation's count
    row_cap: int | None

    def spec(self, domain: dict[str, int]) -> NoisySumSpec:
        return NoisySumSpec(
            dim=total_cells(domain, self.cliques), mu=self.sigma**2 / 2.0,
            min_survivors=self.min_survivors, max_abs=self.max_abs,
        )

    def summary(self) -> dict:
        return {"sigma_per_cell": self.sigma, "marginals": [list(cl) for cl in self.cliques]}


@dataclass(frozen=True)
class UnionMarginals:
    """The union's noisy counts of the evaluation marginals and their actual noise std."""

    blocks: list[np.ndarray]
    sigma: float


def measure_union(fed: Federation, schema: Schema, plan: EvaluationPlan) -> UnionMarginals:
    """Secure noisy sum of every organisation's counts of the evaluation marginals."""
    domain = schema.domain()
    request = evaluation_request(schema.dumps("json"), plan.cliques, plan.row_cap)
    result = fed.noisy_sum(
        plan.spec(domain), request, phase=PHASE,
        mechanism=f"evaluation counts of {len(plan.cliques)} public marginals",
    )
    blocks = [np.asarray(b, dtype=np.float64) for b in split_blocks(result.total, domain, list(plan.cliques))]
    return UnionMarginals(blocks, float(np.sqrt(2.0 * result.mu)))


def evaluate_release(plan: EvaluationPlan, union: UnionMarginals, schema: Schema, synthetic: pd.DataFrame) -> dict:
    """The published quality summary of the released rows against the union's noisy marginals."""
    codes = schema.encode(synthetic)
    return summarise(plan.cliques, union.blocks, synthetic_marginals(codes, schema.domain(), plan.cliques), union.sigma)


def headline(summary: dict) -> str:
    """One line of the summary's averages, for progress and the CLI."""
    parts = [
        f"mean {name} TVD {summary[key]['mean_tvd']:.3f} +- {summary[key]['noise_band']:.3f}"
        for key, name in (("one_way", "1-way"), ("two_way", "2-way"))
        if summary[key] is not None
    ]
    return "; ".join(parts) + " (against the union's noisy marginals)"
