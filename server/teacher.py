"""The DP teacher phase: federated DP-SGD, one optimizer step per secure noisy sum.

Each step broadcasts the teacher's weights; every organisation returns its Poisson batch's
clipped, integer-rounded per-example gradient sum (``common.teacher``) plus its Skellam
share through SecAgg+. The coordinator sees only the survivors' noisy total, records the
step as a (Poisson-subsampled) Skellam mechanism with the survivors' actual noise, divides
by the expected batch size ``q * N`` (``N`` the row count the generator already paid for,
never a raw count) and takes an Adam step: post-processing of the noisy sum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..common.schema import Schema
from ..common.secure_sum import NoisySumSpec
from ..common.teacher import (
    MAX_ABS,
    Features,
    TeacherSettings,
    build_model,
    dimension,
    get_flat,
    grid_sensitivity,
)
from .secure_sum import Federation

PHASE = "teacher"


@dataclass(frozen=True)
class TeacherPlan:
    """Public parameters of one teacher run: the noise multiplier at ``t`` survivors."""

    noise_multiplier: float  # aggregate noise std / L2 sensitivity with exactly t survivors
    min_survivors: int
    settings: TeacherSettings
    features: Features
    seed: int

    def model(self) -> nn.Module:
        return build_model(self.settings, self.features, self.seed)

    def spec(self, dim: int) -> NoisySumSpec:
        l1, l2 = grid_sensitivity(self.settings, dim)
        return NoisySumSpec(
            dim=dim,
            mu=(self.noise_multiplier * l2) ** 2 / 2.0,
            min_survivors=self.min_survivors,
            max_abs=MAX_ABS,
            l1_sensitivity=l1,
            l2_sensitivity=l2,
        )


def fit_teacher(
    fed: Federation, schema: Schema, plan: TeacherPlan, rows: float, progress: Callable[[str], None]
) -> nn.Module:
    """Train the teacher with ``plan.settings.steps`` federated DP-SGD steps.

    ``rows`` is the already-paid-for noisy row count of the union; it sets the expected
    batch size ``q * rows`` that turns the noisy gradient sum into a mean.
    """
    settings = plan.settings
    model = plan.model()
    spec = plan.spec(dimension(model))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    batch = max(1.0, settings.sampling_rate * rows)
    request = {"schema": schema.dumps("json"), "task": "gradients", **settings.to_config()}
    for step in range(1, settings.steps + 1):
        result = fed.noisy_sum(
            spec,
            request,
            phase=PHASE,
            mechanism=f"DP-SGD step {step}",
            parameters=[get_flat(model)],
        )
        _apply(model, optimizer, result.total * (settings.clip / settings.resolution) / batch)
        progress(f"teacher: DP-SGD step {step}/{settings.steps}")
    return model


def _apply(model: nn.Module, optimizer: torch.optim.Optimizer, gradient: np.ndarray) -> None:
    offset = 0
    for p in model.parameters():
        p.grad = torch.from_numpy(gradient[offset : offset + p.numel()].astype(np.float32)).view_as(p)
        offset += p.numel()
    optimizer.step()
