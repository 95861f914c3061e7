"""The marginal generator's coordinator-side model: noisy marginals in, a graphical model out.

It only ever sees noisy measurements (post-processing): ``mbi`` fits a Markov random field
to them (``MirrorDescent``, weighted by each measurement's noise), and the fitted model
answers candidate marginals for the next selection round and samples synthetic rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from dp_accounting import ComposedDpEvent, DpEvent

from fedsynth.common.accounting import exponential_event, skellam_event
from fedsynth.common.marginals import Clique, cells

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # mbi's float32/compile-cache advice
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    import mbi
    from mbi.estimation import MirrorDescent


@dataclass(frozen=True)
class Measurement:
    """One noisy marginal: counts plus Skellam noise of standard deviation ``sigma``."""

    clique: Clique
    noisy: np.ndarray
    sigma: float


class MarginalModel:
    """Graphical model over a schema's domain, refitted as measurements arrive."""

    def __init__(self, domain: Mapping[str, int]) -> None:
        self.domain = dict(domain)
        self._mbi_domain = mbi.Domain(tuple(self.domain), tuple(self.domain.values()))
        self.measurements: list[Measurement] = []
        self._model: mbi.MarkovRandomField | None = None

    def add(self, measurement: Measurement) -> None:
        expected = cells(self.domain, measurement.clique)
        if measurement.noisy.size != expected:
            raise ValueError(f"{measurement.clique}: {measurement.noisy.size} cells, expected {expected}")
        self.measurements.append(measurement)

    @property
    def total(self) -> float:
        """Minimum-variance estimate of the number of rows, from the noisy measurements."""
        estimates = np.array([m.noisy.sum() for m in self.measurements], dtype=np.float64)
        variances = np.array([m.sigma**2 * m.noisy.size for m in self.measurements])
        return max(1.0, float(np.average(estimates, weights=1.0 / variances)))

    def fit(self, iters: int = 500) -> None:
        """(Re)fit the model to all measurements, warm-started from the previous fit."""
        linear = [
            mbi.LinearMeasurement(m.noisy.astype(np.float64), m.clique, stddev=m.sigma)
            for m in self.measurements
        ]
        self._model = MirrorDescent().estimate(
            self._mbi_domain, linear, known_total=self.total, iters=iters, warm_start=self._model
        )

    def project(self, clique: Clique) -> np.ndarray:
        """The fitted model's marginal on ``clique`` (flattened in C order)."""
        if self._model is None:
            raise RuntimeError("fit() the model before asking it for marginals")
        return np.asarray(self._model.project(clique).datavector(flatten=True), dtype=np.float64)

    def sample(self, rows: int, seed: int) -> np.ndarray:
        """``rows`` synthetic rows of integer codes (rows x columns, schema column order)."""
        if self._model is None:
            raise RuntimeError("fit() the model before sampling")
        saved = np.random.get_state()  # mbi samples with numpy's global generator
        np.random.seed(seed % 2**32)
        try:
            frame = self._model.synthetic_data(rows=rows).to_dict()
        finally:
            np.random.set_state(saved)
        return np.column_stack([np.asarray(frame[c]) for c in self.domain]).astype(np.int64)


def expected_noise_l1(sigma: float, clique: Clique, domain: Mapping[str, int]) -> float:
    """AIM's penalty: expected L1 norm of Gaussian noise of std ``sigma`` on a marginal."""
    return float(np.sqrt(2.0 / np.pi) * sigma * cells(domain, clique))


def penalties(sigma: float, candidates: Sequence[Clique], domain: Mapping[str, int]) -> np.ndarray:
    return np.array([expected_noise_l1(sigma, cl, domain) for cl in candidates])


@dataclass(frozen=True)
class GeneratorSettings:
    """Shape of the federated generator (public; fixed before any data is touched).

    After the 1-way marginals, ``rounds`` rounds each select ``per_round`` marginals among
    the candidates (cliques of up to ``max_size`` columns and ``max_cells`` cells) and
    measure them. Every measurement gets the same noise; each selection costs
    ``select_share / (1 - select_share)`` of one measurement's zCDP budget.
    """

    rounds: int = 5
    per_round: int = 4
    max_size: int = 3
    max_cells: int = 2000
    select_share: float = 0.1
    fit_iters: int = 300
    final_iters: int = 1500
    score_sample: int = 100_000

    def measurements(self, num_columns: int) -> int:
        return num_columns + self.rounds * self.per_round

    def selections(self) -> int:
        return self.rounds * self.per_round

    def epsilon_select(self, sigma: float) -> float:
        """Exponential-mechanism epsilon per selection when measurements have std ``sigma``.

        A measurement is ``1 / (2 sigma^2)``-zCDP; a selection gets ``select_share /
        (1 - select_share)`` of that, and is ``epsilon^2 / 8``-zCDP (bounded range).
        """
        rho = self.select_share / (1.0 - self.select_share) / (2.0 * sigma**2)
        return float(np.sqrt(8.0 * rho))


def generator_event(sigma: float, num_columns: int, settings: GeneratorSettings) -> DpEvent:
    """The generator phase's whole privacy cost when every measurement has std ``sigma``.

    Each marginal measurement is a Skellam mechanism (variance ``sigma^2``, i.e. ``mu =
    sigma^2 / 2``) with L1 = L2 sensitivity 1; each selection an exponential mechanism.
    This is the plan with exactly ``t`` survivors; more survivors only add noise.
    """
    events = [skellam_event(sigma**2 / 2.0, 1.0, 1.0, count=settings.measurements(num_columns))]
    if settings.selections():
        events.append(exponential_event(settings.epsilon_select(sigma), count=settings.selections()))
    return ComposedDpEvent(events)
