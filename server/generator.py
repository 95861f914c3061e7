"""The federated marginal generator: 1-way marginals, then rounds of select-and-measure.

Design and privacy argument
---------------------------
* **Measure.** Every marginal is measured by a secure noisy sum over all organisations
  (``fedsynth.common.secure_sum``): the coordinator sees the exact global counts plus Skellam
  noise, so organisations' heterogeneity does not bias any measurement. A round measuring
  ``k`` marginals is ``k`` Skellam mechanisms with the sensitivity of counts (1; that of a
  replaced row when the job caps each organisation's rows: ``common.rounds``), recorded with
  the survivors' actual noise.
* **1-way round.** Its count vectors are measured at ``one_way_scale`` times the rounds' noise
  (``common.generator.one_way_scale``: the ratio that minimises the 2-way workload's summed L1
  error at a fixed budget, from public domain sizes; at least 1), one Skellam mechanism of
  sensitivity 1 per count vector in the plan every guard judges, like every count.
* **Fine grids.** The 1-way round also measures each fine grid's 1-way marginal (a column's public
  ``fine`` cells: ``Schema.measured_domain``), one more count vector per such column, a Skellam
  mechanism of sensitivity 1 like every count, in the plan that every guard judges. The model gets
  the fine grid as a column tied to its bins by structural zeros (``fine_zeros``); selection never
  proposes it, and sampling decodes values within their fine cells (post-processing).
  A column that is a function of a group column by public knowledge (``constant_per``: a region's
  density) has its finest grid counted jointly with the group column instead, the same one vector
  per record (:func:`one_way_cliques`); sampling then gives each group one value.
* **Profile.** With several organisations, one round measures every organisation's 1-way
  marginals of the small columns (at most ``profile_max_values`` values) apart, each in its own
  block of the summed vector (a record still moves one cell of each marginal: the sensitivity
  of counts), at a noise that makes the whole profile cost ``profile_share`` measurements. It
  tells the coordinator, noisily, how organisations differ and how many rows each holds; that
  is all it learns about any one organisation, and it is paid for in the ledger like every
  count. A homogeneity test on the noisy counts, calibrated by simulating its null under the
  same noise (:func:`heterogeneous_columns`, post-processing)
  decides on which columns organisations differ; the model gets an organisation column joined
  to exactly those (``common.generator``), and nothing where organisations do not differ.
* **Select.** The coordinator cannot see un-noised marginals, so scoring happens where the rows
  are, in two stages (FLAIM, Maddock et al., KDD 2024, scores locally and sums; AIM, McKenna
  et al., 2022, scores by L1 error minus a noise penalty):

  1. *Votes.* Each organisation scores every candidate by the L1 error between its own
     marginal and the model's view sent to it (the model conditioned on that organisation
     when the model has the organisation column: a column on which organisations differ then
     does not look badly fitted from every one of them; and taken given the candidate's most
     different such column, weighted by the organisation's own counts of it, so that the
     profile's noise, which blurs the model's idea of how the organisation spreads over that
     column, is not charged to every candidate holding it: ``marginals.local_errors``, whose
     sensitivity this leaves at 2 rows), minus its share of AIM's penalty,
     which it computes itself, and draws ``k`` candidates by the exponential mechanism, sampled
     exactly in integers (``common.vote``). A record influences only its own organisation's
     draw: by parallel composition the round costs one organisation's ``k`` mechanisms. The
     k-hot votes are summed through SecAgg+ (already private: no noise); the most voted
     ``shortlist * k`` candidates are shortlisted.
  2. *Scores.* Each organisation sends its local error on every shortlisted candidate, on an
     integer grid, through the secure noisy sum (per-record sensitivity
     ``marginals.grid_score_sensitivity``: a score moves by at most 2). The sum is the model's
     error over the union (of ``organisation x candidate`` with the organisation column), a
     global score that no split of the rows can bias. The coordinator subtracts the error that
     sampling alone would leave in each organisation (``marginals.expected_sampling_l1`` at its
     noisy row count) and AIM's penalty for the measurement's noise, and measures the ``k``
     best. Votes take ``vote_share`` of the round's selection budget, the scores the rest.
* **Plan.** The number of rounds and marginals per round follow from the number of columns and
  epsilon (``GeneratorSettings.resolved``), public and bounded (``MAX_ROUNDS``), fixed before
  round 1 so every guard judges the whole plan at pre-flight. A round whose candidates would
  make the model larger than ``max_model_mb`` drops them; a run that runs out of candidates
  stops early and spends less (stopping on already-released outputs is post-processing of the
  full plan).
* **Bounded messages.** A round considers at most ``max_view_cells`` cells of candidate
  marginals: all candidates when they fit, else a uniform random subset drawn by the
  coordinator (:func:`round_candidates`; public randomness, no data involved, so no privacy
  cost; the model-size limit is then applied to the shortlist, and a round whose whole
  shortlist is too large measures nothing, which only spends less). The model's view sent to
  an organisation for the votes is then at most ``max_view_cells`` floats plus one penalty per
  candidate, and for the scores a part of it, whatever the number of columns
  (``docs/generator.md``).
* **Fit and sample.** ``mbi`` fits a graphical model to all noisy measurements (weighted by
  their actual noise); rows are sampled from it. Both are post-processing.
* **Release.** Nothing per organisation is published: the release's model
  (:func:`release_model`) is fitted to the measurements of the schema's columns only, which
  ``measurements.json`` publishes, exactly as ``server.release.Release`` refits it; the
  profile's per-organisation blocks and the organisation column stay with the coordinator,
  where they steered the selection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..common.generator import ORGANISATION, GeneratorSettings, MarginalModel, Measurement
from ..common.marginals import (
    Clique,
    candidate_cliques,
    cells,
    cliques_to_json,
    first_k_not_contained,
    SCORE_GRID,
    expected_sampling_l1,
    marginals,
    penalties,
    split_blocks,
    total_cells,
)
from ..common.schema import Schema, fine_zeros, structural_zeros
from ..common.vote import MAX_PENALTY_STD
from ..common.secure_sum import NoisySumSpec
from .secure_sum import Federation

log = logging.getLogger(__name__)

PHASE = "generator"

#: Chance that ``heterogeneous_columns`` finds organisations differing on any column when they
#: do not (family-wise over the profiled columns).
HETEROGENEITY_ALPHA = 0.01
#: Simulated tables of the null distribution per column (``heterogeneous_columns``).
NULL_DRAWS = 2000

#: ``progress(message)``: one line of human-readable progress.
Progress = Callable[[str], None]


@dataclass(frozen=True)
class GeneratorPlan:
    """Public parameters of one generator run."""

    sigma: float  # std of every marginal measurement's aggregate noise (counts), at t survivors
    min_survivors: int
    max_abs: int  # public bound on any one organisation's count (vectors are projected onto it)
    row_cap: int | None  # public cap on each organisation's rows (uniform subsample), or None
    settings: GeneratorSettings  # resolved: rounds, per_round and profile fixed


def _schema_request(schema: Schema) -> dict[str, str]:
    return {"schema": schema.dumps("json")}


def _count_request(schema: Schema, plan: GeneratorPlan, cliques: list[Clique]) -> dict[str, Any]:
    request: dict[str, Any] = {**_schema_request(schema), "task": "marginals", "cliques": cliques_to_json(cliques)}
    if plan.row_cap is not None:
        request["row_cap"] = plan.row_cap
    return request


def _spec(plan: GeneratorPlan, dim: int, sigma: float | None = None) -> NoisySumSpec:
    sigma = plan.sigma if sigma is None else sigma
    return NoisySumSpec(dim=dim, mu=sigma**2 / 2.0, min_survivors=plan.min_survivors, max_abs=plan.max_abs)


def measure(
    fed: Federation, schema: Schema, plan: GeneratorPlan, cliques: list[Clique], what: str, sigma: float | None = None
) -> list[Measurement]:
    """Secure noisy sum of the marginals of ``cliques`` (of the schema's columns and fine grids)
    over all organisations, at noise std ``sigma`` (default the plan's) at ``t`` survivors."""
    domain = schema.measured_domain()
    request = _count_request(schema, plan, cliques)
    result = fed.noisy_sum(_spec(plan, total_cells(domain, cliques), sigma), request, phase=PHASE, mechanism=what)
    sigma = float(np.sqrt(2.0 * result.mu))
    return [
        Measurement(cl, block, sigma)
        for cl, block in zip(cliques, split_blocks(result.total, domain, cliques), strict=True)
    ]


def measure_by_organisation(
    fed: Federation, schema: Schema, plan: GeneratorPlan, cliques: list[Clique], what: str, sigma: float
) -> list[Measurement]:
    """Secure noisy sum of every organisation's marginals of ``cliques``, each in its own block.

    The request lists the organisations (``slots``); each writes its counts into its own
    block and zeros elsewhere. A record still adds one count to one cell of each marginal
    (sensitivity 1, the same event as :func:`measure`), and each block carries the whole
    round's noise (std ``sigma`` at ``t`` survivors). The result is the marginal of
    ``(ORGANISATION,) + clique``.
    """
    domain = schema.domain()
    slots = list(fed.organisations)
    request = {**_count_request(schema, plan, cliques), "slots": json.dumps(slots)}
    spec = _spec(plan, len(slots) * total_cells(domain, cliques), sigma)
    result = fed.noisy_sum(spec, request, phase=PHASE, mechanism=what)
    sigma = float(np.sqrt(2.0 * result.mu))
    per_slot = np.asarray(result.total).reshape(len(slots), -1)
    edges = np.cumsum([cells(domain, cl) for cl in cliques])[:-1]
    blocks = np.split(per_slot, edges, axis=1)
    return [
        Measurement((ORGANISATION, *cl), block.ravel(), sigma) for cl, block in zip(cliques, blocks, strict=True)
    ]


def model_marginals_by_organisation(
    model: MarginalModel, candidates: list[Clique], organisations: int, seed: int, rows: int
) -> list[np.ndarray]:
    """Each organisation's view of the model: candidate marginals conditioned on it.

    From ``rows`` rows sampled from the model (post-processing). Without the organisation
    column, or for an organisation with no sampled row, every organisation gets the model's
    marginals over the union.
    """
    sample = model.sample(rows, seed=seed)
    columns = list(model.domain)
    union = marginals(sample, columns, model.domain, candidates).astype(np.float64)
    if ORGANISATION not in model.domain:
        return [union] * organisations
    org = sample[:, columns.index(ORGANISATION)]
    views = []
    for i in range(organisations):
        mine = sample[org == i]
        views.append(marginals(mine, columns, model.domain, candidates).astype(np.float64) if len(mine) else union)
    return views


def sampling_floor(
    rows: np.ndarray, views: list[np.ndarray], domain: dict[str, int], candidates: list[Clique]
) -> np.ndarray:
    """Per candidate, the summed local error a perfect model would still show, by sampling."""
    per_org = [
        [expected_sampling_l1(n, block) for block in split_blocks(view, domain, candidates)]
        for n, view in zip(rows, views, strict=True)
    ]
    return np.sum(per_org, axis=0)


def shortlist(
    fed: Federation,
    schema: Schema,
    plan: GeneratorPlan,
    candidates: list[Clique],
    views: dict[str, np.ndarray],
    rng: np.random.Generator,
    given: list[str],
) -> list[int]:
    """Stage 1: every organisation votes for ``per_round`` candidates, drawn by the exponential
    mechanism on its own rows against its view of the model; the most voted are shortlisted.

    Each organisation computes its own share of AIM's penalties from ``penalty_std`` (at most
    ``vote.MAX_PENALTY_STD``, the most its guard admits) and the candidates (``common.vote``)."""
    settings = plan.settings
    k = min(settings.per_round, len(candidates))
    request = {
        **_schema_request(schema),
        "task": "select",
        "cliques": cliques_to_json(candidates),
        "epsilon": settings.epsilon_select(plan.sigma),
        "k": k,
        "penalty_std": min(plan.sigma / fed.num_clients, MAX_PENALTY_STD),
        "given": json.dumps(given),
    }
    spec = NoisySumSpec(dim=len(candidates), mu=0.0, min_survivors=plan.min_survivors, max_abs=1)
    votes = fed.noisy_sum(
        spec,
        request,
        phase=PHASE,
        mechanism=f"votes for {k} marginals (exponential mechanism, per organisation)",
        node_parameters={name: [view] for name, view in views.items()},
    ).total
    order = np.lexsort((rng.random(len(candidates)), -votes))
    return first_k_not_contained(order, candidates, min(settings.shortlisted(), len(candidates)))


def global_scores(
    fed: Federation,
    schema: Schema,
    plan: GeneratorPlan,
    shortlisted: list[Clique],
    views: dict[str, np.ndarray],
    given: list[str],
) -> np.ndarray:
    """Stage 2: the secure noisy sum of every organisation's local error on each shortlisted
    candidate (in count units). With the organisation column, it is the model's L1 error on
    ``(ORGANISATION,) + candidate`` over the union, the AIM score of the federation as a whole."""
    request = {**_schema_request(schema), "task": "scores", "cliques": cliques_to_json(shortlisted),
               "given": json.dumps(given)}
    spec = NoisySumSpec(
        dim=len(shortlisted),
        mu=plan.settings.score_mu(plan.sigma),
        min_survivors=plan.min_survivors,
        max_abs=2 * SCORE_GRID * plan.max_abs,
    )
    total = fed.noisy_sum(
        spec,
        request,
        phase=PHASE,
        mechanism=f"scores of {len(shortlisted)} shortlisted marginals",
        node_parameters={name: [view] for name, view in views.items()},
    ).total
    return np.asarray(total, dtype=np.float64) / SCORE_GRID


def select(
    fed: Federation,
    schema: Schema,
    plan: GeneratorPlan,
    model: MarginalModel,
    candidates: list[Clique],
    rows: np.ndarray,
    rng: np.random.Generator,
) -> list[Clique]:
    """One selection round: votes shortlist candidates, their global noisy scores pick ``k``.

    Each organisation sees the model conditioned on itself (when the model has the
    organisation column), so a column on which organisations differ does not look badly
    fitted from every one of them: how organisations differ is the organisation column's
    business, already measured. The final choice uses global scores, minus the error that
    sampling alone would leave (``sampling_floor``) and AIM's penalty for the measurement's
    noise, both computed at the coordinator from public or already noisy quantities.
    Shortlisted candidates that would make the model larger than ``max_model_mb`` are dropped
    before the scores; when none is left the round picks nothing.
    """
    domain = schema.domain()
    organisations = list(fed.organisations)
    views = model_marginals_by_organisation(
        model, candidates, len(organisations), int(rng.integers(2**31)), plan.settings.score_sample
    )
    given = joined_columns(model)
    picks = shortlist(fed, schema, plan, candidates, dict(zip(organisations, views, strict=True)), rng, given)
    fitting = set(within_model_size(model, [candidates[i] for i in picks], plan.settings))
    picks = [i for i in picks if candidates[i] in fitting]
    if not picks:
        return []
    shortlisted = [candidates[i] for i in picks]
    own = [np.concatenate([split_blocks(v, domain, candidates)[i] for i in picks]) for v in views]
    scores = global_scores(fed, schema, plan, shortlisted, dict(zip(organisations, own, strict=True)), given)
    scores -= sampling_floor(rows, own, domain, shortlisted)
    scores -= penalties(plan.sigma, shortlisted, domain)
    order = np.lexsort((rng.random(len(shortlisted)), -scores))
    k = min(plan.settings.per_round, len(shortlisted))
    return [shortlisted[i] for i in first_k_not_contained(order, shortlisted, k)]


def joined_columns(model: MarginalModel) -> list[str]:
    """The columns the model's organisation column is joined to (those on which organisations
    differ, from the profile: post-processing), most different first (:func:`first_round`)."""
    return [m.clique[1] for m in model.measurements if m.clique[0] == ORGANISATION]


def heterogeneous_columns(
    first: list[Measurement], organisations: int, alpha: float = HETEROGENEITY_ALPHA, seed: int = 0
) -> list[str]:
    """The columns on which organisations differ by more than sampling and noise explain.

    For each column's per-organisation noisy counts (rows: organisations), a chi-square-like
    statistic against the pooled distribution (:func:`_homogeneity_statistic`), with each
    organisation's row count estimated once from every profiled column (the mean of their row
    sums: a column's own row sum carries the noise of all its cells, which a dominant value's
    residual would then carry too). Its null distribution is simulated (a parametric bootstrap:
    ``NULL_DRAWS`` tables of multinomial rows from the pooled distribution at those row counts,
    plus the measurement's noise, and the row counts' own noise), not read from a chi-square,
    which a column that is 97% one value passes about twice over under a profile's heavy noise
    with no difference at all. A column is heterogeneous when its statistic passes the null's
    ``1 - alpha / columns`` quantile (Bonferroni over the columns), so a federation whose
    organisations do not differ has a column flagged with chance at most about ``alpha``.
    Returned most different first (statistic over threshold). Post-processing of noisy counts with
    public randomness (``seed``); no budget.
    """
    if not first:
        return []
    rng = np.random.default_rng(seed)
    quantile = 1.0 - alpha / len(first)
    blocks = [m.noisy.reshape(organisations, -1) for m in first]
    rows = np.clip(np.mean([b.sum(axis=1) for b in blocks], axis=0), 0.0, None)
    rows_sd = np.sqrt(sum(m.sigma**2 * b.shape[1] for m, b in zip(first, blocks))) / len(first)
    out = {}
    for m, counts in zip(first, blocks):
        p = _pooled(counts)
        null = rng.multinomial(np.rint(rows).astype(np.int64), p, size=(NULL_DRAWS, organisations))
        null = null + rng.normal(0.0, m.sigma, null.shape)
        null_rows = rows + rng.normal(0.0, rows_sd, (NULL_DRAWS, organisations))
        threshold = np.quantile(_homogeneity_statistic(null, null_rows, m.sigma), quantile)
        statistic = _homogeneity_statistic(counts, rows, m.sigma)
        if statistic > threshold:
            out[m.clique[1]] = statistic / threshold
    return sorted(out, key=out.get, reverse=True)


def _pooled(counts: np.ndarray) -> np.ndarray:
    """The pooled distribution of (..., organisations, values) noisy counts (negatives as 0)."""
    pooled = np.clip(counts.sum(axis=-2), 0.0, None)
    total = pooled.sum(axis=-1, keepdims=True)
    return np.where(total > 0, pooled / np.where(total > 0, total, 1.0), 1.0 / pooled.shape[-1])


def _homogeneity_statistic(counts: np.ndarray, rows: np.ndarray, sigma: float) -> np.ndarray:
    """Sum over cells of (m_ij - n_i p_j)^2 / (n_i p_j + sigma^2), for (..., organisations, values)
    counts and (..., organisations) row counts."""
    expected = np.clip(rows, 0.0, None)[..., :, None] * _pooled(counts)[..., None, :]
    return (((counts - expected) ** 2) / (expected + sigma**2)).sum(axis=(-2, -1))


def one_way_cliques(schema: Schema) -> list[Clique]:
    """The 1-way round's count vectors: one per column and per fine grid, except that a
    ``constant_per`` column's finest grid (its fine grid, else the column) is counted jointly with
    its group column, so the model knows each group's value; a record still adds one count to
    one cell of each vector (the same plan and sensitivity)."""
    joint = {(c.fine_name if c.fine is not None else c.name): c.constant_per for c in schema.columns if c.constant_per}
    return [(joint[c], c) if c in joint else (c,) for c in schema.measured_domain()]


def first_round(
    fed: Federation, schema: Schema, plan: GeneratorPlan
) -> tuple[dict[str, int], list[Measurement], np.ndarray]:
    """The 1-way marginals (of every column and fine grid) and the organisations' profile: the
    model's domain, its first measurements and each organisation's noisy row count (NaN without a
    profile).

    The profile measures every organisation's 1-way marginals of the profiled columns apart
    (one round, at the profile's own, larger noise). The model gets the organisation column,
    joined to the profiled columns on which organisations differ
    (:func:`heterogeneous_columns`); where they do not differ, it costs the model nothing.
    """
    what = "1-way marginals" + (" and fine grids" if schema.fine_columns else "")
    ones = measure(fed, schema, plan, one_way_cliques(schema), what, plan.settings.one_way_sigma(plan.sigma))
    organisations = fed.num_clients
    profiled = [(c,) for c in plan.settings.profiled]
    if not profiled or organisations < 2:
        return model_domain(schema, ones, organisations), ones, np.full(organisations, np.nan)
    profile = measure_by_organisation(
        fed, schema, plan, profiled, "profile of each organisation", plan.settings.profile_sigma(plan.sigma)
    )
    rows = np.mean([m.noisy.reshape(organisations, -1).sum(axis=1) for m in profile], axis=0)
    differ = heterogeneous_columns(profile, organisations)  # most different first
    kept = sorted((m for m in profile if m.clique[1] in differ), key=lambda m: differ.index(m.clique[1]))
    return model_domain(schema, ones + kept, organisations), ones + kept, rows


def model_domain(schema: Schema, measurements: list[Measurement], organisations: int) -> dict[str, int]:
    """The model's columns: the organisation column when a measurement names it, the schema's,
    then each fine grid a measurement names."""
    named = {c for m in measurements for c in m.clique}
    head = {ORGANISATION: organisations} if ORGANISATION in named else {}
    return {**head, **schema.domain(), **{c: n for c, n in schema.fine_domain().items() if c in named}}


def model_zeros(schema: Schema, domain: dict[str, int]) -> list[tuple[Clique, np.ndarray]]:
    """The schema's structural zeros (its rules' and its fine grids' ties to their bins) on the
    model's columns."""
    return [(cl, z) for cl, z in structural_zeros(schema) + fine_zeros(schema) if set(cl) <= set(domain)]


def new_model(schema: Schema, domain: dict[str, int], denoise_fine: bool) -> MarginalModel:
    """An empty model of ``domain`` with the schema's structural zeros; with ``denoise_fine``, it fits
    its fine grids' 1-way measurements denoised (given their cells' widths: ``common.smoothing``)."""
    widths = {c.fine_name: c.fine_widths for c in schema.fine_columns if denoise_fine and c.fine_name in domain}
    return MarginalModel(domain, model_zeros(schema, domain), widths)


def refit(schema: Schema, measurements: list[Measurement], settings: Mapping[str, Any]) -> MarginalModel:
    """A model of the schema's columns, and of the fine grids the measurements name, fitted afresh
    to already-noisy ``measurements`` as the generator's plan ``settings`` says (as ``privacy.json``
    records it: :func:`refit_iters`; fine grids denoised when the plan says ``denoise_fine``, which a
    release from before it was there does not). Post-processing: no round, no budget."""
    domain = model_domain(schema, measurements, organisations=0)  # no measurement names the organisation
    model = new_model(schema, domain, bool(settings.get("denoise_fine", False)))
    for m in measurements:
        model.add(m)
    model.fit(refit_iters(settings))
    return model


def refit_iters(settings: Mapping[str, Any]) -> int:
    """Mirror-descent iterations of a refit: as many as the job ran in all (``settings``: the
    generator's plan, as ``privacy.json`` records it)."""
    return int(settings["fit_iters"]) * (int(settings["rounds"]) + 1) + int(settings["final_iters"])


def release_model(model: MarginalModel, schema: Schema, settings: GeneratorSettings) -> MarginalModel:
    """The model a release samples from: ``model`` itself when it has no organisation column,
    else a refit to the measurements of the schema's columns only, the one ``Release.model``
    repeats from ``measurements.json`` (so resampling draws from the release's own distribution).

    The profile's per-organisation blocks are left out, and with them every statistic of one
    organisation, including the mixture over organisations that a model with the organisation
    column would sample rows from. (They reach the release only through the selection they
    steered: which marginals were measured.)
    """
    if ORGANISATION not in model.domain:
        return model
    public = [m for m in model.measurements if ORGANISATION not in m.clique]
    return refit(schema, public, asdict(settings))


def round_candidates(
    model: MarginalModel, candidates: list[Clique], settings: GeneratorSettings, rng: np.random.Generator
) -> tuple[list[Clique], list[Clique]]:
    """This round's candidates, and the candidates left for later rounds.

    When the candidates' marginals have at most ``max_view_cells`` cells in all, the round
    considers every one that keeps the model within ``max_model_mb`` (the others are dropped for
    good: the model only grows). Otherwise it walks them in a uniform random order drawn by the
    coordinator (public: no data involved) and takes each one whose cells still fit, so the
    model's view sent to an organisation never exceeds ``max_view_cells`` floats, whatever the
    number of columns; the model-size limit is then checked on the shortlist (:func:`select`),
    not on each of the thousands of candidates.
    """
    if total_cells(model.domain, candidates) <= settings.max_view_cells:
        fits = within_model_size(model, candidates, settings)
        return fits, fits
    chosen: list[Clique] = []
    room = settings.max_view_cells
    for i in rng.permutation(len(candidates)):
        size = cells(model.domain, candidates[i])
        if size <= room:
            chosen.append(candidates[i])
            room -= size
    return chosen, candidates


def within_model_size(model: MarginalModel, cliques: list[Clique], settings: GeneratorSettings) -> list[Clique]:
    """The cliques each of which keeps the model's junction tree within ``max_model_mb``."""
    return [cl for cl in cliques if model.size_mb([cl]) <= settings.max_model_mb]


def fit_generator(
    fed: Federation, schema: Schema, plan: GeneratorPlan, rng: np.random.Generator, progress: Progress
) -> MarginalModel:
    """Run the whole generator phase and return the fitted model."""
    domain = schema.domain()
    settings = plan.settings
    model_dom, first, rows = first_round(fed, schema, plan)
    model = new_model(schema, model_dom, settings.denoise_fine)
    for m in first:
        model.add(m)
    model.fit(settings.fit_iters)
    differ = [m.clique[1] for m in first if m.clique[0] == ORGANISATION]
    progress(
        f"generator: measured {len(domain)} 1-way marginals"
        + (f" and {len(schema.fine_columns)} fine grids" if schema.fine_columns else "")
        + f"; ~{model.total:,.0f} rows in all; "
        f"organisations differ on {', '.join(differ) if differ else 'no column'}"
    )
    if np.isnan(rows).any():
        rows = np.full(fed.num_clients, model.total / fed.num_clients)
    candidates = candidate_cliques(domain, settings.max_size, settings.max_cells)
    for round_ in range(1, settings.rounds + 1):
        considered, candidates = round_candidates(model, candidates, settings, rng)
        if not considered:
            progress(f"generator: no candidate fits the model size limit; stopping after round {round_ - 1}")
            break
        chosen = select(fed, schema, plan, model, considered, rows, rng)
        names = ", ".join("x".join(cl) for cl in chosen)
        if chosen:
            for m in measure(fed, schema, plan, chosen, f"round {round_} marginals: {names}"):
                model.add(m)
            candidates = [cl for cl in candidates if cl not in chosen]
            model.fit(settings.fit_iters)
        progress(f"generator round {round_}/{settings.rounds}: measured {names or 'nothing (model size limit)'}")
    model.fit(settings.final_iters)
    return model


def synthetic_codes(model: MarginalModel, schema: Schema, rows: int, seed: int) -> np.ndarray:
    """``rows`` rows sampled from the model, in the schema's columns (no organisation column)."""
    return model.sample(rows, seed=seed, columns=list(schema.domain()))


#: ``relabel(codes, rng)``: codes with the label column replaced (the student labeller), or None.
Relabel = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def sample_rows(
    model: MarginalModel,
    schema: Schema,
    rows: int,
    rng: np.random.Generator,
    relabel: Relabel | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """``rows`` decoded synthetic rows that keep every rule of the schema (``Schema.sample_valid``:
    the model's distribution conditioned on the rules; post-processing). ``fixed``: the typed
    values of the columns the model (and ``relabel``) was conditioned on. Where the model has the
    fine grids, each value is drawn inside its fine cell, itself drawn given its bin."""
    fine = set(schema.fine_domain()) <= set(model.domain)
    columns = list(schema.measured_domain() if fine else schema.domain())

    def draw(n: int, draw_rng: np.random.Generator) -> np.ndarray:
        codes = model.sample(n, seed=int(draw_rng.integers(2**31)), columns=columns)
        return codes if relabel is None else relabel(codes, draw_rng)

    return schema.sample_valid(draw, rows, rng, fixed=fixed)
