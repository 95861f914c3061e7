"""Denoising a noisy histogram over ordered cells (a fine grid's 1-way marginal): post-processing.

A fine grid's count vector is measured once, with Skellam noise of standard deviation ``sigma``
in every cell; at single years of age and 5,000 rows that noise is as large as the counts. The
histogram of a number is mostly smooth, with spikes where values heap (40 hours a week, a top
code). So the estimate is a smooth density plus sparse spikes:

* the *smooth part* ``S y``: each cell's density (counts per unit of width; ``widths``: each
  cell's number of values) estimated as the kernel-weighted counts of the cells around it over
  their kernel-weighted widths, a Gaussian kernel ``K`` over the cells' order, times the cell's
  width: ``S_ij = w_i K_ij / sum_k K_ik w_k``, a linear smoother that keeps a constant density
  exactly and never lets a narrow cell's count (and noise) spill into wide neighbours many times
  over (uneven log grids);
* the *spikes*: the residuals ``y - S y`` soft-thresholded at ``lam * sigma``, added back.

The estimate's total is not the measured one (by the residuals the threshold clips, and near the
grid's ends, where the kernel is one-sided); the model's total is estimated from the measured
vectors (``MarginalModel.total``) and its least-squares fit spreads that difference over the
cells. Rescaling the estimate to the measured total was tried: a spike then takes most of the
correction, and on spikes over a flat background the error rose 34% above the measurement's own.

Bandwidth and threshold are chosen from a small public grid by Stein's unbiased risk estimate
(SURE; Stein 1981, Donoho and Johnstone 1995): for ``z = f(y)`` with ``y = x + N(0, sigma^2 I)``,
``||y - z||^2 - m sigma^2 + 2 sigma^2 div f(y)`` is an unbiased estimate of ``||z - x||^2``, and
here ``div f = tr S + sum over kept residuals of (1 - S_ii)``. The grid holds the identity, so
a histogram that smoothing does not help (all spikes, or little noise) keeps its measurement.
Skellam noise has the variance of that Gaussian; SURE's unbiasedness needs Gaussian noise, which
a Skellam of ``mu`` in the hundreds is to within its lattice.

Only the noisy vector, its public noise and the public grid enter: post-processing, no budget.
The model (``common.generator.MarginalModel``) fits to the smoothed vector at the standard
deviation the risk estimate gives per cell; the published measurement stays the noisy one.
"""

from __future__ import annotations

import numpy as np

#: Kernel bandwidths tried, in cells (0: no smoothing).
BANDWIDTHS = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
#: Thresholds tried for the spikes, in noise standard deviations (inf: the smooth part alone).
THRESHOLDS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, np.inf)


def kernel_smoother(widths: np.ndarray, bandwidth: float) -> np.ndarray:
    """``S_ij = w_i K_ij / sum_k K_ik w_k``: each cell's width times the kernel-weighted density
    around it, for a Gaussian kernel ``K`` over the cells' order (``bandwidth`` in cells; 0: the
    identity)."""
    m = len(widths)
    if bandwidth == 0.0:
        return np.eye(m)
    index = np.arange(m)
    kernel = np.exp(-0.5 * ((index[:, None] - index[None, :]) / bandwidth) ** 2)
    return widths[:, None] * kernel / (kernel @ widths)[:, None]


def smooth_histogram(noisy: np.ndarray, sigma: float, widths: np.ndarray) -> tuple[np.ndarray, float]:
    """The SURE-best smooth-plus-spikes estimate of the counts ``noisy`` (noise std ``sigma`` per
    cell; ``widths``: each cell's number of values, positive), and the standard deviation per cell
    that its estimated risk gives (at least that of the kept degrees of freedom's noise)."""
    y = np.asarray(noisy, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.float64)
    m = len(y)
    best = (np.inf, y, float(m))
    for bandwidth in BANDWIDTHS:
        smoother = kernel_smoother(widths, bandwidth)
        smooth = smoother @ y
        residual = y - smooth
        trace, leverage = float(np.trace(smoother)), 1.0 - np.diag(smoother)
        for lam in THRESHOLDS if bandwidth else (np.inf,):
            spikes = np.sign(residual) * np.maximum(np.abs(residual) - lam * sigma, 0.0)
            estimate = smooth + spikes
            freedom = trace + float(leverage[spikes != 0].sum())
            risk = float(((y - estimate) ** 2).sum()) - m * sigma**2 + 2.0 * sigma**2 * freedom
            if risk < best[0]:
                best = (risk, estimate, freedom)
    risk, estimate, freedom = best
    return estimate, float(np.sqrt(max(risk, sigma**2 * freedom) / m))
