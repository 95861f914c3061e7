"""The marginal generator's coordinator-side model: noisy marginals in, a graphical model out.

It only ever sees noisy measurements (post-processing): ``mbi`` fits a Markov random field
to them (``MirrorDescent``, weighted by each measurement's noise), and the fitted model
answers candidate marginals for the next selection round and samples synthetic rows.

**The organisation as a column.** In a federation the model carries one extra, public
column, :data:`ORGANISATION` (the organisation a row comes from, one code per organisation).
Its marginals with every data column are measured like any other (one record is one count in
one organisation's block: sensitivity 1), so the model knows how organisations differ, and
each organisation can score candidates against the model *conditioned on itself*
(``server.generator``). It never reaches a release: the release's model is refitted to the
measurements of the schema's columns only (``server.generator.release_model``), so nothing
published, rows included, is a statistic of one organisation.

Rows are drawn by ancestral sampling along the model's junction tree: each column from its
distribution given its already-drawn neighbours (:func:`conditionals`, computed once per fit),
vectorised over rows with one ``searchsorted`` per column, so a million rows take seconds.
Within each configuration of a column's parents the draw is systematic (one uniform offset for
the configuration's rows, taken in a random order): each row's value is distributed as the
model says, and a configuration held by ``m`` rows gives each value ``floor`` or ``ceil`` of
``m`` times its probability, where independent draws would scatter the counts by about
``sqrt(m p)`` (``mbi``'s ``synthetic_data`` rounds for the same reason). Post-processing; on one
fitted model it lowers the mean 2-way TVD by 3% (Adult) to 4% (ACS MA):
``benchmarks/sampling_noise.py``.

The model runs in float64 (``jax_enable_x64``), as ``mbi`` advises from 100,000 rows on:
float32 mirror descent stalls on large counts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from dp_accounting import ComposedDpEvent, DpEvent

from .accounting import exponential_event, skellam_event
from .marginals import Clique, candidate_cliques, cells, count_sensitivity, grid_score_sensitivity
from .smoothing import smooth_histogram
from .vote import MAX_VOTE_EPSILON, MAX_VOTE_K

import jax

# Both before mbi is imported, which warns about each otherwise (and is right to).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)
import mbi  # noqa: E402
from mbi.estimation import MirrorDescent  # noqa: E402
from mbi import junction_tree, marginal_oracles  # noqa: E402
from mbi.junction_tree import hypothetical_model_size  # noqa: E402

#: Standard deviation of the placeholder measurement that puts a constrained clique in the model.
UNINFORMATIVE = 1e9

#: The model's column for "which organisation holds this row" (never released).
ORGANISATION = "__organisation__"


@dataclass(frozen=True)
class Measurement:
    """One noisy marginal: counts plus Skellam noise of standard deviation ``sigma``."""

    clique: Clique
    noisy: np.ndarray
    sigma: float


@dataclass(frozen=True)
class Conditional:
    """One column's distribution given its already-sampled neighbours in the junction tree.

    ``cdf`` concatenates, for each parent configuration ``k`` (C order over ``parents``), ``k``
    plus the cumulative distribution of ``column`` given it: one sorted array, so a single
    ``searchsorted`` of ``k + u`` draws every row's value by inversion.
    """

    column: str
    parents: tuple[str, ...]
    shape: tuple[int, ...]  # the parents' domain sizes
    size: int  # the column's domain size
    cdf: np.ndarray

    def draw(self, parents: Sequence[np.ndarray], rows: int, rng: np.random.Generator) -> np.ndarray:
        """One value for each of ``rows`` rows, given the parents' codes (one array per parent).

        Systematic within each parent configuration ``k``: its ``m`` rows, in a random order,
        take the quantiles ``(rank + U_k) / m`` of the column's distribution given ``k``, with one
        uniform ``U_k`` per configuration. A row's quantile is uniform on [0, 1), so its value
        has the model's distribution; the configuration's counts are within one of ``m`` times
        each value's probability."""
        k = np.ravel_multi_index(tuple(parents), self.shape) if self.parents else np.zeros(rows, dtype=np.int64)
        order = np.argsort(k + rng.random(rows))  # by configuration, at random within one
        by_config = k[order]
        first = np.ones(rows, dtype=bool)
        first[1:] = by_config[1:] != by_config[:-1]
        config = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        sizes = np.diff(np.r_[starts, rows])
        quantile = (np.arange(rows) - starts[config] + rng.random(len(starts))[config]) / sizes[config]
        position = np.searchsorted(self.cdf, by_config + quantile, side="right")
        values = np.empty(rows, dtype=np.int64)
        values[order] = np.clip(position - by_config * self.size, 0, self.size - 1)
        return values


def conditionals(model: mbi.MarkovRandomField) -> list[Conditional]:
    """The model's columns in sampling order, each with its distribution given earlier ones.

    The order and parent sets are those ``mbi`` samples by (the reverse elimination order of
    the junction tree; each column's parents are the earlier columns of its cliques), with the
    parents in a fixed order, so the chain is deterministic. Post-processing of the model.
    """
    domain = model.domain
    tree, order = junction_tree.make_junction_tree(domain, [tuple(cl) for cl in model.cliques])
    potentials = model.potentials.expand(list(tree.nodes))
    if model.constraints:  # Shafer-Shenoy keeps the constraints' -inf potentials exact
        marginals = marginal_oracles.message_passing_shafer_shenoy(potentials, model.total, constraints=model.constraints)
    else:
        marginals = marginal_oracles.message_passing_stable(potentials, model.total)
    chain, used = [], []
    for column in order[::-1]:
        neighbours = set().union(*(set(node) for node in tree.nodes if column in node))
        parents = tuple(c for c in used if c in neighbours)
        used.append(column)
        table = np.asarray(marginals.project(parents + (column,)).datavector(flatten=False), dtype=np.float64)
        size = domain[column]
        table = np.clip(table.reshape(-1, size), 0.0, None)
        mass = table.sum(axis=1, keepdims=True)
        cdf = np.where(mass > 0, np.cumsum(table, axis=1) / np.where(mass > 0, mass, 1.0), np.arange(1, size + 1) / size)
        cdf[:, -1] = 1.0
        cdf = np.maximum.accumulate(cdf, axis=1) + np.arange(len(cdf))[:, None]
        chain.append(Conditional(column, parents, tuple(domain[c] for c in parents), size, cdf.ravel()))
    return chain


class MarginalModel:
    """Graphical model over a schema's domain, refitted as measurements arrive.

    ``zeros``: public structural zeros (``schema.structural_zeros``: per clique, the code cells the
    schema's rules forbid), on which the model puts no mass. ``ordered``: the columns whose codes
    are ordered cells of a number (fine grids), each with its cells' widths; the model fits to
    each one's 1-way measurement denoised (``common.smoothing``, post-processing), while
    :attr:`measurements` keeps what was measured.
    """

    def __init__(
        self,
        domain: Mapping[str, int],
        zeros: Sequence[tuple[Clique, np.ndarray]] = (),
        ordered: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.domain = dict(domain)
        self._ordered = dict(ordered or {})
        self._denoised: dict[int, tuple[np.ndarray, float]] = {}
        self._mbi_domain = mbi.Domain(tuple(self.domain), tuple(self.domain.values()))
        self.measurements: list[Measurement] = []
        self._model: mbi.MarkovRandomField | None = None
        self._conditionals: list[Conditional] | None = None
        self._constraints = tuple(
            mbi.Constraint(domain=self._mbi_domain.project(cols), invalid=np.asarray(cells)) for cols, cells in zeros
        )

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
        linear = [self._linear(i) for i in range(len(self.measurements))] + [
            # no information: puts each constrained clique in the model, whose marginals then keep the zeros
            mbi.LinearMeasurement(np.zeros(c.domain.size()), c.domain.attributes, stddev=UNINFORMATIVE)
            for c in self._constraints
        ]
        self._model = MirrorDescent().estimate(
            self._mbi_domain,
            linear,
            known_total=self.total,
            constraints=self._constraints,
            iters=iters,
            warm_start=self._model,
        )
        self._conditionals = None

    def _linear(self, index: int) -> mbi.LinearMeasurement:
        """Measurement ``index`` as the fit uses it: a 1-way measurement of an ordered column
        denoised (computed once; its std the root mean square over its cells of the denoised cells'
        and the missing cell's, kept as measured), any other as measured."""
        m = self.measurements[index]
        widths = self._ordered.get(m.clique[0]) if len(m.clique) == 1 else None
        if widths is None:
            return mbi.LinearMeasurement(m.noisy.astype(np.float64), m.clique, stddev=m.sigma)
        if index not in self._denoised:
            present = len(widths)  # a missing code, when there is one, is the last
            smooth, sigma = smooth_histogram(m.noisy[:present], m.sigma, widths)
            rms = np.sqrt((present * sigma**2 + (m.noisy.size - present) * m.sigma**2) / m.noisy.size)
            self._denoised[index] = (np.concatenate([smooth, m.noisy[present:]]).astype(np.float64), float(rms))
        vector, sigma = self._denoised[index]
        return mbi.LinearMeasurement(vector, m.clique, stddev=sigma)

    def project(self, clique: Clique) -> np.ndarray:
        """The fitted model's marginal on ``clique`` (flattened in C order)."""
        if self._model is None:
            raise RuntimeError("fit() the model before asking it for marginals")
        return np.asarray(self._model.project(clique).datavector(flatten=True), dtype=np.float64)

    def size_mb(self, cliques: Sequence[Clique]) -> float:
        """Size of the model's junction tree if it also had to represent ``cliques``."""
        measured = [m.clique for m in self.measurements] + [c.domain.attributes for c in self._constraints]
        return float(hypothetical_model_size(self._mbi_domain, measured + list(cliques)))

    def conditionals(self) -> list[Conditional]:
        """The fitted model as a chain of conditional distributions, computed once per fit."""
        if self._model is None:
            raise RuntimeError("fit() the model before sampling")
        if self._conditionals is None:
            self._conditionals = conditionals(self._model)
        return self._conditionals

    def conditioned(self, evidence: Mapping[str, int]) -> MarginalModel:
        """The fitted model given ``evidence`` (column -> code): post-processing of the model.

        Each evidence column's other codes become structural zeros (``mbi.Constraint``), so the
        chain of :meth:`conditionals` is the model's exact conditional distribution given the
        evidence (message passing carries it to every column, not only to later ones). Raises
        ``ValueError`` when the model gives the evidence no mass.
        """
        if self._model is None:
            raise RuntimeError("fit() the model before conditioning it")
        clique = tuple(evidence)
        mass = self.project(clique).reshape([self.domain[c] for c in clique])[tuple(evidence.values())]
        if not mass > 0:
            raise ValueError("the model gives no mass to rows with " + ", ".join(f"{c} = code {v}" for c, v in evidence.items()))
        given = tuple(
            mbi.Constraint(domain=self._mbi_domain.project((column,)), valid=np.array([[code]]))
            for column, code in evidence.items()
        )
        out = copy.copy(self)
        out._model = replace(self._model, constraints=tuple(self._model.constraints) + given)
        out._conditionals = None
        return out

    def sample(self, rows: int, seed: int, columns: Sequence[str] | None = None) -> np.ndarray:
        """``rows`` synthetic rows of integer codes (rows x ``columns``, default the model's).

        Ancestral sampling along the model's junction tree (:func:`conditionals`), vectorised
        over rows; the same ``seed`` gives the same rows. The array is column-major (each
        column one contiguous block), as decoding reads it.
        """
        rng = np.random.default_rng(seed)
        drawn: dict[str, np.ndarray] = {}
        for step in self.conditionals():
            drawn[step.column] = step.draw([drawn[c] for c in step.parents], rows, rng)
        columns = list(self.domain) if columns is None else list(columns)
        codes = np.empty((rows, len(columns)), dtype=np.int64, order="F")
        for j, column in enumerate(columns):
            codes[:, j] = drawn[column]
        return codes


@dataclass(frozen=True)
class GeneratorSettings:
    """Shape of the federated generator (public; fixed before any data is touched).

    After the 1-way marginals, ``rounds`` rounds each select ``per_round`` marginals among
    the candidates (cliques of up to ``max_size`` columns and ``max_cells`` cells, that keep
    the model within ``max_model_mb``) and measure them. A round considers at most
    ``max_view_cells`` cells of candidate marginals (a public random subset when there are more:
    ``server.generator.round_candidates``), which bounds what it sends to each organisation
    whatever the number of columns. Every measurement gets the same
    noise; each selection costs ``select_share / (1 - select_share)`` of one measurement's
    zCDP budget. ``rounds`` or ``per_round`` None means "chosen by :meth:`resolved`" from the
    number of columns and epsilon (both public), so the plan is fixed, and judged by every
    organisation's guard, before round 1. A round's selection spends ``vote_share`` of its
    budget on the organisations' votes, which shortlist ``shortlist * per_round`` candidates,
    and the rest on the secure noisy sum of the shortlist's scores (``server.generator``).
    ``organisation_column``: profile each organisation on its columns of at most
    ``profile_max_values`` values (``profiled``, set by :meth:`resolved`; the whole profile
    costs ``profile_share`` measurements) and model which organisation each row comes from
    where they differ (see the module docstring); ignored with a single organisation.
    ``denoise_fine``: the model fits each fine grid's 1-way measurement denoised
    (``common.smoothing``; post-processing); a release refits as its plan says.
    """

    rounds: int | None = None
    per_round: int | None = None
    max_size: int = 3
    max_cells: int = 2000
    max_model_mb: float = 16.0
    max_view_cells: int = 2**18
    select_share: float = 0.1
    vote_share: float = 1.0 / 3.0
    shortlist: int = 4
    organisation_column: bool = True
    profile_max_values: int = 32
    profile_share: float = 2.0
    profiled: tuple[str, ...] = ()
    one_way_scale: float | None = None
    denoise_fine: bool = True
    fit_iters: int = 300
    final_iters: int = 1500
    score_sample: int = 100_000

    def __post_init__(self) -> None:
        if not 0.0 < self.vote_share < 1.0:
            raise ValueError(f"vote_share must lie strictly between 0 and 1, got {self.vote_share}")
        if self.max_view_cells < self.max_cells:
            raise ValueError(
                f"max_view_cells ({self.max_view_cells}) must be at least max_cells ({self.max_cells}): "
                "a round must be able to consider any candidate"
            )
        if self.per_round is not None and not 1 <= self.per_round <= MAX_VOTE_K:
            raise ValueError(f"per_round must lie between 1 and {MAX_VOTE_K} (the most a vote draws), got {self.per_round}")
        if not 0.0 < self.select_share < 1.0:
            raise ValueError(f"select_share must lie strictly between 0 and 1, got {self.select_share}")
        if self.one_way_scale is not None and not self.one_way_scale >= 1.0:
            raise ValueError(f"one_way_scale must be at least 1 (the rounds' noise is the plan's least), got {self.one_way_scale}")

    def resolved(
        self, domain: Mapping[str, int], epsilon: float, organisations: int, one_way_cells: Sequence[int] = ()
    ) -> "GeneratorSettings":
        """The settings with the plan fixed from public facts: ``rounds`` and ``per_round``
        where they are None, and the columns of the organisations' profile.

        AIM measures more marginals where the budget allows; so does this plan: about 1.6
        selected marginals per column at epsilon 1, growing with ``log(1 + epsilon)``, measured
        ``per_round`` at a time (one per 6 columns, at least 2) so that a wide table does not
        need many more secure rounds. With several organisations and ``organisation_column``,
        every column of at most ``profile_max_values`` values is profiled per organisation.
        ``one_way_scale`` where None: :func:`one_way_scale` from the cells of the 1-way round's
        count vectors (``one_way_cells``, default one per column of ``domain``) and of the
        candidates.
        """
        num_columns = len(domain)
        per_round = self.per_round or min(max(2, math.ceil(num_columns / 6)), MAX_VOTE_K)
        selections = num_columns * (0.8 + 1.2 * math.log1p(epsilon))
        rounds = self.rounds if self.rounds is not None else int(np.clip(round(selections / per_round), 2, MAX_ROUNDS))
        profiled = ()
        if self.organisation_column and organisations > 1:
            profiled = tuple(c for c, size in domain.items() if size <= self.profile_max_values)
        scale = self.one_way_scale
        if scale is None:
            ones = list(one_way_cells) or list(domain.values())
            candidates = [[domain[c] for c in cl] for cl in candidate_cliques(domain, self.max_size, self.max_cells)]
            scale = one_way_scale(ones, candidates, len(domain)) if rounds * per_round else 1.0
        return replace(self, rounds=rounds, per_round=per_round, profiled=profiled, one_way_scale=scale)

    def one_way_sigma(self, sigma: float) -> float:
        """Noise std of the 1-way round's counts (columns and fine grids) when round measurements
        have std ``sigma``."""
        return sigma * (1.0 if self.one_way_scale is None else self.one_way_scale)

    def profile_sigma(self, sigma: float) -> float:
        """Noise std of the profile's per-organisation counts: the whole profile costs
        ``profile_share`` measurements' worth of zCDP."""
        return sigma * math.sqrt(len(self.profiled) / self.profile_share)

    def selections(self) -> int:
        return self.rounds * self.per_round

    def shortlisted(self) -> int:
        """Candidates whose global score a round asks for."""
        return self.shortlist * self.per_round

    def _select_rho(self, sigma: float) -> float:
        """zCDP budget of one selected marginal: ``select_share / (1 - select_share)`` of a
        measurement's ``1 / (2 sigma^2)``."""
        return self.select_share / (1.0 - self.select_share) / (2.0 * sigma**2)

    def epsilon_select(self, sigma: float) -> float:
        """Exponential-mechanism epsilon of one vote when measurements have std ``sigma``.

        Votes get ``vote_share`` of the selection budget; an exponential mechanism is
        ``epsilon^2 / 8``-zCDP (bounded range). At most ``vote.MAX_VOTE_EPSILON``, the most an
        organisation's guard admits (reached only at a very large budget; the plan then spends
        less on votes).
        """
        return float(min(np.sqrt(8.0 * self.vote_share * self._select_rho(sigma)), MAX_VOTE_EPSILON))

    def score_mu(self, sigma: float) -> float:
        """Skellam parameter of a round's summed scores, in grid units (``marginals.SCORE_GRID``).

        The rest of the round's selection budget, ``(1 - vote_share) * per_round`` selections'
        worth of zCDP, buys a Gaussian-like sum of the shortlist's scores: variance
        ``L2^2 / (2 rho)``, i.e. ``mu = L2^2 / (4 rho)``.
        """
        rho = (1.0 - self.vote_share) * self.per_round * self._select_rho(sigma)
        l2 = grid_score_sensitivity(self.shortlisted())[1]
        return l2**2 / (4.0 * rho)


#: Upper bound on an automatically planned generator's select-and-measure rounds.
MAX_ROUNDS = 40


def one_way_scale(one_way_cells: Sequence[int], candidates: Sequence[Sequence[int]], columns: int) -> float:
    """How many times noisier the 1-way round's counts are than a round's marginal: the ratio of
    standard deviations that minimises the workload's summed expected L1 error at a fixed zCDP
    budget, at least 1. ``one_way_cells``: the cells of each 1-way count vector (a column, a fine
    grid); ``candidates``: each candidate marginal's column sizes; ``columns``: the table's columns.
    The workload is every 2-way marginal of the table, as AIM's, the benchmarks' and SDNist's are.

    A count vector of ``m`` cells at noise std ``s`` (L2 sensitivity 1) costs ``1 / (2 s^2)`` zCDP
    and has expected L1 error ``m s sqrt(2 / pi)``. Its error enters ``w`` of the workload's
    marginals: a measured ``k``-way marginal holds ``k (k - 1) / 2`` pairs; a column's 1-way vector
    bounds the error of each of the ``columns - 1`` pairs that hold the column wherever no measured
    marginal holds the pair (the total variation distance of a product is at most the sum of its
    factors'), and a fine grid's is the only measurement of the column's values within its bins.
    Minimising ``sum_i w_i m_i s_i`` subject to ``sum_i 1 / s_i^2`` fixed gives ``w_i m_i s_i^3``
    equal for every vector. With one std for the whole 1-way round (one secure sum) and one for
    the rounds' marginals, drawn from the candidates, the ratio is ``(mean over candidates of
    w m / mean over 1-way vectors of (columns - 1) m)^(1/3)``.

    Only public facts enter (the schema's domain sizes and the plan's candidate bounds), so the
    plan, and the event every guard judges before round 1, is fixed and public. At least 1: no
    count is measured with less noise than the plan's ``sigma``, the noise multiplier the guards
    check against their floor.
    """
    if len(one_way_cells) == 0 or len(candidates) == 0 or columns < 2:
        return 1.0
    one_way = (columns - 1) * float(np.mean(one_way_cells))
    rounds = float(np.mean([math.comb(len(sizes), 2) * math.prod(sizes) for sizes in candidates]))
    return max(1.0, (rounds / one_way) ** (1.0 / 3.0))


def generator_event(
    sigma: float, num_columns: int, settings: GeneratorSettings, row_cap: int | None = None
) -> DpEvent:
    """The generator phase's whole privacy cost when every round's measurement has std ``sigma``.

    Each marginal measurement is a Skellam mechanism (variance ``sigma^2``, i.e. ``mu =
    sigma^2 / 2``; the ``num_columns`` count vectors of the 1-way round at
    ``settings.one_way_sigma(sigma)``) with the sensitivity of counts (``marginals.count_sensitivity``: 1, or
    that of a replaced row when organisations cap their rows at ``row_cap``); each vote an exponential mechanism; each
    round's summed scores a Skellam mechanism with the grid scores' sensitivity. This is the
    plan with exactly ``t`` survivors; more survivors only add noise.
    """
    l1, l2 = count_sensitivity(row_cap)
    one_way = settings.one_way_sigma(sigma)
    events = [skellam_event(one_way**2 / 2.0, l1, l2, count=num_columns)]
    if settings.profiled:
        profile = settings.profile_sigma(sigma)
        events.append(skellam_event(profile**2 / 2.0, l1, l2, count=len(settings.profiled)))
    if settings.selections():
        events.append(skellam_event(sigma**2 / 2.0, l1, l2, count=settings.selections()))
        events.append(exponential_event(settings.epsilon_select(sigma), count=settings.selections()))
        l1, l2 = grid_score_sensitivity(settings.shortlisted())
        events.append(skellam_event(settings.score_mu(sigma), l1, l2, count=settings.rounds))
    return ComposedDpEvent(events)
