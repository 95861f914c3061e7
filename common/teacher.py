"""The DP teacher: a small torch classifier and one organisation's clipped gradient sum.

Mechanism (one step of distributed DP-SGD, the organisation's part)
-------------------------------------------------------------------
1. Every local row enters the batch independently with probability ``q`` (Poisson
   sampling; ``q = 1`` is full-batch DP gradient descent).
2. Per-example gradients come from Opacus' ``GradSampleModule``; each is clipped to L2
   norm ``C`` (``clip``).
3. Each clipped gradient is scaled by ``R / C`` (``resolution``: the integer norm of a
   clipped example) and mapped to integers by *conditional* randomized rounding: unbiased
   rounding, redrawn until the integer vector's L2 norm is at most
   ``Delta2 = rounded_l2_bound(R, dim)`` (Kairouz, Liu & Steinke, ICML 2021, Theorem 1:
   with ``beta = exp(-1/2)`` a draw is accepted with probability at least ``1 - beta``).
4. The batch's integer vectors are summed and the sum is projected coordinate-wise onto
   ``[-MAX_ABS, MAX_ABS]`` (a public box that SecAgg+'s ranges fit).

Sensitivity: adding or removing one record adds or removes one integer vector of L2 norm
at most ``Delta2``; the projection onto a box is non-expansive in L1 and L2 and keeps the
grid, so the organisation's sum moves by an integer vector with L2 norm ``<= Delta2`` and
L1 norm ``<= Delta2 * min(sqrt(dim), Delta2)`` (integers: ``|x| <= x^2``). The Skellam share
is then added by the secure noisy sum (``common.secure_sum``) and the whole step is a
Poisson-subsampled Skellam mechanism (``accounting.skellam_dpsgd_event``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from dp_accounting import DpEvent
from opacus import GradSampleModule
from torch import nn

from .accounting import skellam_dpsgd_event

#: Public bound on every coordinate of an organisation's integer gradient sum.
MAX_ABS = 2**29
#: Conditional rounding's rejection parameter (Kairouz et al.'s default).
ROUNDING_BETA = math.exp(-0.5)
#: Rows per chunk of per-example gradients (bounds memory: chunk x parameters floats).
#: Per-example gradient entries computed at a time (rows per chunk: this over the model's size, at
#: least 1), so an organisation's memory does not grow with its rows, whatever the model.
CHUNK_ENTRIES = 2**21
#: Public bounds on what a gradients round may ask: the clip (a finite number: below this the
#: scaled gradients overflow), the integer norm of a clipped example (far inside int64 and the
#: secure sum's box) and the hidden layer's width (the model's size).
MIN_CLIP = 1e-6
MAX_RESOLUTION = 2**20
MAX_HIDDEN = 512


@dataclass(frozen=True)
class TeacherSettings:
    """Shape of the federated DP-SGD teacher (public; fixed before any data is touched).

    ``sampling_rate = 1`` (full batch) is the default: Skellam noise under Poisson
    subsampling can only be accounted with Zhu & Wang's general bound, whose slack outweighs
    the amplification (see ``accounting.subsampled``); with full batches the accountant's
    epsilon is that of the Gaussian with the same variance, to within a fraction of a percent.
    """

    model: str = "logreg"  # or "mlp"
    hidden: int = 32
    steps: int = 30
    sampling_rate: float = 1.0
    clip: float = 1.0
    learning_rate: float = 0.1
    resolution: int = 1024

    def __post_init__(self) -> None:
        if self.model not in ("logreg", "mlp"):
            raise ValueError(f"teacher model must be 'logreg' or 'mlp', got {self.model!r}")
        if not 0 < self.sampling_rate <= 1:
            raise ValueError(f"teacher sampling rate must be in (0, 1], got {self.sampling_rate}")
        if self.steps < 1 or not 1 <= self.resolution <= MAX_RESOLUTION or not 1 <= self.hidden <= MAX_HIDDEN:
            raise ValueError(f"teacher steps must be positive, resolution in [1, {MAX_RESOLUTION}] and hidden in "
                             f"[1, {MAX_HIDDEN}], got {self.steps}, {self.resolution} and {self.hidden}")
        if not (math.isfinite(self.clip) and self.clip >= MIN_CLIP):
            raise ValueError(f"teacher clip must be a finite number of at least {MIN_CLIP:g}, got {self.clip}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"teacher learning rate must be a positive number, got {self.learning_rate}")

    def to_config(self) -> dict[str, float | int | str]:
        return {f"teacher.{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> "TeacherSettings":
        """The settings of a request's ``teacher.*`` keys; ValueError for any key or value that is not
        one (an unknown name, a value of another type, one outside the public bounds)."""
        fields = {k[len("teacher.") :]: v for k, v in config.items() if k.startswith("teacher.")}
        try:
            return cls(**{name: type(getattr(cls(), name))(value) for name, value in fields.items()})
        except (AttributeError, TypeError, OverflowError) as exc:
            raise ValueError(f"teacher settings: {exc}") from None


@dataclass(frozen=True)
class Features:
    """One-hot layout of a schema's encoded columns: every column but the label is a block."""

    domain: Mapping[str, int]
    label: str

    @property
    def inputs(self) -> list[str]:
        return [c for c in self.domain if c != self.label]

    @property
    def width(self) -> int:
        return sum(self.domain[c] for c in self.inputs)

    @property
    def classes(self) -> int:
        return self.domain[self.label]

    def x(self, codes: np.ndarray) -> torch.Tensor:
        """One-hot features of integer-coded rows (rows x columns, schema column order)."""
        out = np.zeros((len(codes), self.width), dtype=np.float32)
        np.put_along_axis(out, self.hot(codes), 1.0, axis=1)
        return torch.from_numpy(out)

    def hot(self, codes: np.ndarray) -> np.ndarray:
        """Per row, the position of each input column's 1 in the one-hot features (rows x inputs)."""
        columns = list(self.domain)
        offsets = np.cumsum([0] + [self.domain[c] for c in self.inputs[:-1]])
        return codes[:, [columns.index(name) for name in self.inputs]] + offsets

    def y(self, codes: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(codes[:, list(self.domain).index(self.label)].astype(np.int64))


def build_model(settings: TeacherSettings, features: Features, seed: int) -> nn.Module:
    """The teacher (or student) network, initialised from a public seed."""
    torch.manual_seed(seed)
    if settings.model == "logreg":
        return nn.Sequential(nn.Linear(features.width, features.classes))
    return nn.Sequential(
        nn.Linear(features.width, settings.hidden), nn.ReLU(), nn.Linear(settings.hidden, features.classes)
    )


def get_flat(model: nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()]).astype(np.float64)


def set_flat(model: nn.Module, flat: np.ndarray) -> None:
    if len(flat) != dimension(model):
        raise ValueError(f"{len(flat)} weights for a model of {dimension(model)} parameters")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(np.asarray(flat[offset : offset + p.numel()], dtype=np.float32)).view_as(p))
            offset += p.numel()


def dimension(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def rounded_l2_bound(resolution: float, dim: int, beta: float = ROUNDING_BETA) -> float:
    """L2 bound after conditional randomized rounding of a vector of norm ``<= resolution``.

    Kairouz, Liu & Steinke (ICML 2021), Theorem 1: ``min(c + sqrt(d), sqrt(c^2 + d/4 +
    sqrt(2 log(1/beta)) (c + sqrt(d)/2)))``.
    """
    loose = resolution + math.sqrt(dim)
    tight = math.sqrt(
        resolution**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (resolution + math.sqrt(dim) / 2)
    )
    return min(loose, tight)


def grid_sensitivity(settings: TeacherSettings, dim: int) -> tuple[float, float]:
    """(L1, L2) sensitivity of an organisation's integer gradient sum (module docstring)."""
    l2 = rounded_l2_bound(settings.resolution, dim)
    return l2 * min(math.sqrt(dim), l2), l2


def per_example_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-example gradients of the cross-entropy loss (rows x parameters), by Opacus."""
    module = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    loss = nn.functional.cross_entropy(module(x), y, reduction="sum")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")  # inputs need no grad
        loss.backward()
    grads = [p.grad_sample.reshape(len(x), -1) for p in module.parameters()]
    flat = torch.cat(grads, dim=1).detach().numpy().astype(np.float64)
    module.to_standard_module().zero_grad(set_to_none=True)  # hooks off: the model is plain again
    return flat


def clip_rows(grads: np.ndarray, clip: float) -> np.ndarray:
    """Scale every row down to L2 norm at most ``clip`` (rows already inside are kept); a row
    with a non-finite entry (weights that overflow on that record) becomes zero, a function of the
    row alone, so the sensitivity holds and no record can stall the rounding."""
    grads = np.where(np.isfinite(grads).all(axis=1, keepdims=True), grads, 0.0)
    norms = np.linalg.norm(grads, axis=1, keepdims=True)
    return grads * np.minimum(1.0, clip / np.maximum(norms, 1e-12))


def conditional_round(rows: np.ndarray, bound: float, rng: np.random.Generator) -> np.ndarray:
    """Unbiased randomized rounding of each row, redrawn until its L2 norm is ``<= bound``."""
    low = np.floor(rows)
    frac = rows - low
    out = np.empty(rows.shape, dtype=np.int64)
    pending = np.arange(len(rows))
    while pending.size:
        draw = (low[pending] + (rng.random(frac[pending].shape) < frac[pending])).astype(np.int64)
        ok = np.linalg.norm(draw, axis=1) <= bound
        out[pending[ok]] = draw[ok]
        pending = pending[~ok]
    return out


def integer_gradient_sum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TeacherSettings,
    rng: np.random.Generator,
) -> np.ndarray:
    """One organisation's step: Poisson batch, clipped integer per-example gradients, summed.

    The result is an int64 vector on the grid of step ``clip / resolution`` whose
    per-record sensitivity is ``grid_sensitivity`` (module docstring).
    """
    dim = dimension(model)
    bound = rounded_l2_bound(settings.resolution, dim)
    batch = np.flatnonzero(rng.random(len(x)) < settings.sampling_rate)
    total = np.zeros(dim, dtype=np.int64)
    chunk = max(1, CHUNK_ENTRIES // dimension(model))
    for start in range(0, len(batch), chunk):
        rows = torch.from_numpy(batch[start : start + chunk])
        clipped = clip_rows(per_example_gradients(model, x[rows], y[rows]), settings.clip)
        total += conditional_round(clipped * (settings.resolution / settings.clip), bound, rng).sum(axis=0)
    return np.clip(total, -MAX_ABS, MAX_ABS)


def predict_proba(model: nn.Module, x: torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities (rows x classes) at ``temperature``."""
    with torch.no_grad():
        return torch.softmax(model(x) / temperature, dim=1).numpy()


def predict_proba_codes(model: nn.Sequential, features: Features, codes: np.ndarray) -> np.ndarray:
    """``predict_proba(model, features.x(codes))`` without building the one-hot features: a linear
    layer applied to a one-hot row is the sum of one weight column per input (``embedding_bag``)."""
    first, rest = model[0], model[1:]
    hot = torch.from_numpy(features.hot(codes))
    with torch.no_grad():
        hidden = nn.functional.embedding_bag(hot, first.weight.t().contiguous(), mode="sum") + first.bias
        return torch.softmax(rest(hidden), dim=1).numpy()


def weights_for(settings: TeacherSettings, features: Features, arrays: Sequence[np.ndarray]) -> nn.Module:
    """The teacher at the weights the coordinator broadcast (``arrays[0]``)."""
    model = build_model(settings, features, seed=0)
    set_flat(model, arrays[0])
    return model


def teacher_event(noise_multiplier: float, settings: TeacherSettings, dim: int, steps: int | None = None) -> DpEvent:
    """Privacy cost of ``steps`` (default: all) teacher steps at aggregate noise std ``z * Delta2``."""
    l1, l2 = grid_sensitivity(settings, dim)
    mu = (noise_multiplier * l2) ** 2 / 2.0
    return skellam_dpsgd_event(mu, l1, l2, settings.sampling_rate, steps or settings.steps)
