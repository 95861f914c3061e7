"""Denoising a fine grid's noisy 1-way marginal (``common.smoothing``): a smooth density plus
sparse spikes, chosen by Stein's unbiased risk estimate. Statistical checks over fixed seeds."""

import numpy as np
from scipy.stats import binom

from fedsynth.common.generator import MarginalModel, Measurement
from fedsynth.common.schema import Schema
from fedsynth.common.smoothing import kernel_smoother, smooth_histogram
from fedsynth.server.generator import refit

SIGMA = 30.0
SEEDS = range(200)


def errors(truth: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per seed: the squared error of the noisy vector, of its estimate, and the estimate's
    reported squared error (cells x its standard deviation squared)."""
    out = []
    for seed in SEEDS:
        noisy = truth + np.random.default_rng(seed).normal(0.0, SIGMA, truth.size)
        estimate, sigma = smooth_histogram(noisy, SIGMA, widths)
        out.append((((noisy - truth) ** 2).sum(), ((estimate - truth) ** 2).sum(), truth.size * sigma**2))
    return tuple(np.array(column) for column in zip(*out))


def test_a_smooth_histogram_is_smoothed_and_its_reported_error_is_its_actual_error():
    truth = 8_000 * binom.pmf(np.arange(80), 79, 0.4)  # ages: a smooth hump, tens to hundreds a cell
    raw, smoothed, reported = errors(truth, np.ones(80))
    assert smoothed.mean() < 0.4 * raw.mean()
    assert 0.7 < reported.mean() / smoothed.mean() < 1.3  # SURE's estimate of its own risk


def test_spikes_on_a_flat_background_are_kept():
    """Heaping (40 hours a week): the spikes stay within a few noise deviations, and the
    estimate is never worse on average than the measurement itself."""
    truth = np.full(90, 40.0)
    truth[[20, 40, 60]] = [3_000.0, 12_000.0, 2_000.0]
    raw, smoothed, _ = errors(truth, np.ones(90))
    assert smoothed.mean() < raw.mean()
    noisy = truth + np.random.default_rng(0).normal(0.0, SIGMA, truth.size)
    estimate, _ = smooth_histogram(noisy, SIGMA, np.ones(90))
    assert np.abs(estimate[[20, 40, 60]] - truth[[20, 40, 60]]).max() < 4 * SIGMA


def test_pure_noise_around_nothing_smooth_is_left_as_measured():
    """Counts with no smooth part (every other cell empty): the identity is in the grid and wins."""
    truth = np.tile([600.0, 0.0], 40)
    raw, smoothed, _ = errors(truth, np.ones(80))
    assert smoothed.mean() < 1.05 * raw.mean()


def test_uneven_cells_are_smoothed_as_densities():
    """A uniform density over cells of widths 1, 2, 4, ... holds counts in proportion to the widths:
    smoothing densities keeps them; smoothing the counts as if the cells were equal does not."""
    widths = np.tile([1.0, 2.0, 4.0, 8.0], 15)
    truth = 20.0 * widths
    smoother = kernel_smoother(widths, 3.0)
    assert np.allclose(smoother @ truth, truth)
    assert not np.allclose(kernel_smoother(np.ones(60), 3.0) @ truth, truth, rtol=0.1)
    _, smoothed, _ = errors(truth, widths)
    raw, as_equal, _ = errors(truth, np.ones(60))
    assert smoothed.mean() < 0.3 * raw.mean() and smoothed.mean() < 0.5 * as_equal.mean()


def test_a_narrow_cell_between_wide_ones_does_not_spill_its_count_into_them():
    """PINCP's grid has a cell of width 1 between cells of widths 1,000 and 99: no cell's estimate
    takes another's count more than once."""
    widths = np.array([4000.0, 1000.0, 1.0, 99.0, 200.0, 300.0, 400.0, 500.0])
    for bandwidth in (0.5, 1.0, 3.0):
        assert kernel_smoother(widths, bandwidth).max() <= 1.0


def test_the_model_fits_an_ordered_columns_measurement_denoised_and_keeps_what_was_measured():
    """A fine grid with a missing code (the last): its present cells are fitted smoothed, the
    missing cell as measured, and ``measurements`` holds the noisy vector unchanged."""
    truth = np.append(8_000 * binom.pmf(np.arange(60), 59, 0.5), 2_000.0)
    noisy = truth + np.random.default_rng(1).normal(0.0, SIGMA, truth.size)
    fitted = {}
    for ordered in (None, {"age:fine": np.ones(60)}):
        model = MarginalModel({"age:fine": 61}, ordered=ordered)
        model.add(Measurement(("age:fine",), noisy, SIGMA))
        model.fit(200)
        assert model.measurements[0].noisy is noisy
        fitted[ordered is None] = model.project(("age:fine",))
    plain, denoised = fitted[True], fitted[False]
    assert np.abs(denoised - truth).sum() < 0.8 * np.abs(plain - truth).sum()
    assert abs(denoised[-1] - plain[-1]) < 0.05 * truth[-1]


AGES = Schema.from_dict({"name": "ages", "label": None, "columns": [
    {"name": "age", "kind": "integer", "lower": 0, "upper": 60, "bins": [0, 20, 40, 60], "fine": 1}]})


def test_a_refit_denoises_the_fine_grids_as_the_release_plan_says():
    """A release's plan records ``denoise_fine``; one from before it was there refits as measured."""
    truth = 8_000 * binom.pmf(np.arange(60), 59, 0.5)
    rng = np.random.default_rng(3)
    measured = [Measurement(("age",), np.add.reduceat(truth, [0, 20, 40]) + rng.normal(0.0, SIGMA, 3), SIGMA),
                Measurement(("age:fine",), truth + rng.normal(0.0, SIGMA, truth.size), SIGMA)]
    plan = {"fit_iters": 50, "rounds": 0, "final_iters": 200}

    def error(settings: dict) -> float:
        return float(np.abs(refit(AGES, measured, settings).project(("age:fine",)) - truth).sum())

    before, off, on = error(plan), error({**plan, "denoise_fine": False}), error({**plan, "denoise_fine": True})
    assert before == off and on < 0.8 * off
