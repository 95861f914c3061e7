"""One synthesis job on the coordinator: plan, check, generate, release.

Order matters for privacy and for "nothing partial": the budget is planned and the secure
ranges checked before any message reaches an organisation; every organisation then checks
its table against the public schema before any vector leaves it; every noisy result is in
the fsynced ledger before it is used; the release directory appears only when complete, and a
job that fails removes the staging folder it created (never a release or the federation's ledger).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid

from dp_accounting import ComposedDpEvent, DpEvent

from ..common.accounting import BudgetError, BudgetExceeded, CombinedAccountant, EventFn, Ledger, plan_noise
from ..common.discovery import PHASE as DISCOVERY
from ..common.discovery import discovery_event
from ..common.discovery.protocol import round_sigma, schema_kinds
from ..common.evaluation import DEFAULT_PAIRS, PHASE as EVALUATION, evaluation_cliques, evaluation_event
from ..common.generator import GeneratorSettings, generator_event
from ..common.marginals import cells, count_sensitivity
from ..common.rounds import plan_request
from ..common.schema import Schema
from ..common.secagg_graph import SecAggGraph, choose_graph, default_min_survivors
from ..common.secure_sum import NoisySumSpec, secure_ranges
from ..common.student import LABEL_MODES, StudentSettings, distil
from ..common.student import relabel as relabel_codes
from ..common.teacher import Features, TeacherSettings, build_model, dimension, teacher_event
from .. import __version__
from .evaluation import EvaluationPlan, evaluate_release, headline, measure_union
from .generator import (
    PHASE as GENERATOR,
    GeneratorPlan,
    Progress,
    fit_generator,
    one_way_cliques,
    release_model,
    sample_rows,
    synthetic_codes,
)
from .jobspec import job_toml, option_values
from .release import Release, write_release
from .discovery import DiscoveryPlan, discover_for, plan_sigma
from .secure_sum import Federation
from .teacher import PHASE as TEACHER, TeacherPlan, fit_teacher

DEFAULT_SPLIT = {GENERATOR: 0.7, TEACHER: 0.3}
#: Public bound on any one organisation's count when the job caps no rows (vectors are projected
#: onto it, which never raises their sensitivity: ``common.secure_sum``).
MAX_COUNT = 1_000_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobConfig:
    """Everything a job needs, all of it public."""

    schema: Schema
    parties: int
    epsilon: float
    delta: float
    out: Path
    min_survivors: int
    max_rows: int | None = None  # public cap on each organisation's rows (uniform subsample); None: none
    rows: int | None = None
    seed: int = 0
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    timeout: float | None = None
    ledger: Path | None = None  # the federation's ledger; None: a fresh one for this job
    cap: float | None = None  # the federation's epsilon cap; None: this job's epsilon
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    student: StudentSettings = field(default_factory=StudentSettings)
    labels: str = "sample"  # sample | argmax | generator (no teacher: all budget to the generator)
    budget_split: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLIT))
    evaluate: float = 0.0  # share of epsilon for a federated evaluation (common.evaluation); 0: none
    evaluate_pairs: int = DEFAULT_PAIRS  # column pairs it checks, besides every 1-way marginal
    secagg_neighbours: int | None = None  # SecAgg+ neighbourhood size; None: common.secagg_graph chooses
    discover: float = 0.0  # share of epsilon for a schema discovery first phase (common.discovery); 0: none

    def __post_init__(self) -> None:
        if not 0.0 <= self.evaluate < 1.0:
            raise ValueError(f"evaluate (the evaluation's share of epsilon) must be in [0, 1), got {self.evaluate:g}")
        if not 0.0 <= self.discover < 1.0:
            raise ValueError(f"discover (the schema discovery's share of epsilon) must be in [0, 1), got {self.discover:g}")
        if self.evaluate_pairs < 0:
            raise ValueError(f"evaluate_pairs must be at least 0, got {self.evaluate_pairs}")
        if self.parties < 1:
            raise ValueError(f"a job needs at least one organisation, got {self.parties}")
        if not 1 <= self.min_survivors <= self.parties:
            raise ValueError(
                f"min_survivors (t) must be at least 1 and at most the number of organisations "
                f"({self.parties}), got {self.min_survivors}"
            )
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows (the per-organisation row cap) must be at least 1, got {self.max_rows}")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {', '.join(LABEL_MODES)}, got {self.labels!r}")
        if self.labels != "generator" and self.schema.label is None:
            raise ValueError(
                f"labels '{self.labels}' need a teacher, but schema '{self.schema.name}' names no label "
                "column; set one in the schema or use labels 'generator'"
            )
        self._check_inputs()

    def _check_inputs(self) -> None:
        """Refuse what would otherwise fail late, or silently do something else than asked."""
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise BudgetError(f"epsilon must be a positive finite number, e.g. 1.0; got {self.epsilon!r}")
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise BudgetError(f"delta must be between 0 and 1 (exclusive), e.g. 1e-6; got {self.delta!r}")
        if self.schema.draft:
            raise ValueError(
                f"schema '{self.schema.name}' is a draft read from private data (draft: true); review "
                "every bound, bin and category list with the data steward, then delete the line "
                "`draft: true` from the schema file"
            )
        if self.rows is not None and self.rows < 1:
            raise ValueError(f"rows (synthetic rows to release) must be at least 1, got {self.rows}; "
                             "leave it out to release the noisy row count")
        shares = list(self.budget_split.values())
        if not all(math.isfinite(share) and share > 0 for share in shares):
            raise BudgetError(f"budget split {dict(self.budget_split)}: every share must be a positive "
                              "number, e.g. generator=0.7,teacher=0.3")
        if len(self.phases) > 1 and abs(sum(shares) - 1) > 1e-9:
            raise BudgetError(f"budget split {dict(self.budget_split)}: the shares sum to {sum(shares):g}, "
                              "not 1; give shares that sum to 1, e.g. generator=0.7,teacher=0.3")
        if self.cap is not None and not (math.isfinite(self.cap) and self.cap > 0):
            raise BudgetError(
                f"cap (the federation's total epsilon) must be a positive finite number, got {self.cap!r}"
            )
        if not self.out.name or self.out.name in (".", ".."):
            raise ValueError(f"out must name the release folder (e.g. release), got {str(self.out)!r}")
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out {self.out} is an existing file; name a folder for the release")
        if self.ledger is not None and not self.ledger.parent.is_dir():
            raise ValueError(f"ledger {self.ledger}: folder {self.ledger.parent} does not exist; create "
                             "it, or point to the federation's existing ledger")
        if self.ledger is not None and self.ledger.is_dir():
            raise ValueError(f"ledger {self.ledger} is a folder; name the ledger file (e.g. ledger.jsonl)")

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases that spend budget: the teacher only when its labels are used."""
        return (GENERATOR,) if self.labels == "generator" else (GENERATOR, TEACHER)

    @property
    def main_epsilon(self) -> float:
        """What the phases after a schema discovery may spend (all of epsilon without one)."""
        return self.epsilon * (1.0 - self.discover)

    def discovery(self) -> DiscoveryPlan | None:
        """The schema discovery's plan (``discover`` of epsilon, at the job's delta), or None.

        Planned at the job's delta like the other phases: under RDP composition their epsilons
        then add up to at most the job's (the ledger's accountant composes them exactly)."""
        if not self.discover:
            return None
        return DiscoveryPlan(epsilon=self.epsilon * self.discover, delta=self.delta, min_survivors=self.min_survivors,
                             name=self.schema.name, na_values=self.schema.na_values)

    def features(self) -> Features:
        return Features(self.schema.domain(), str(self.schema.label))

    def evaluation_cliques(self) -> list:
        """The public marginals a federated evaluation checks (``common.evaluation``)."""
        return evaluation_cliques(self.schema.domain(), self.evaluate_pairs, self.seed)


@dataclass(frozen=True)
class JobPlan:
    """The noise of every phase, fixed from the job's (epsilon, delta) before any round."""

    generator: GeneratorPlan
    teacher: TeacherPlan | None
    epsilon_planned: float  # composed epsilon with exactly t survivors in every round
    event: DpEvent  # the whole job's cost with exactly t survivors
    split: Mapping[str, float]
    labels: str
    student: StudentSettings
    graph: SecAggGraph  # every round's SecAgg+ graph (common.secagg_graph)
    evaluation: EvaluationPlan | None = None
    discovery: DiscoveryPlan | None = None
    discovery_sigma: float | None = None  # the discovery's text rounds' noise std (round 0: FIRST_ROUND_NOISE of it)
    discovery_multiplier: float | None = None  # its smallest noise std over L2 sensitivity (round 0, every column)

    def noise_multipliers(self) -> dict[str, float]:
        """Each phase's aggregate noise std over its L2 sensitivity, at ``t`` survivors."""
        multipliers = {GENERATOR: self.generator.sigma / count_sensitivity(self.generator.row_cap)[1]}
        if self.teacher is not None:
            multipliers[TEACHER] = self.teacher.noise_multiplier
        if self.evaluation is not None:
            multipliers[EVALUATION] = self.evaluation.sigma / count_sensitivity(self.evaluation.row_cap)[1]
        if self.discovery is not None:
            multipliers[DISCOVERY] = self.discovery_multiplier
        return multipliers

    def guard_request(self) -> dict:
        """The plan as every organisation's guard judges it before the first round."""
        return plan_request(self.event, self.generator.min_survivors, self.noise_multipliers())

    def summary(self) -> dict:
        summary = {
            "min_survivors": self.generator.min_survivors,
            "epsilon_planned": self.epsilon_planned,
            "budget_split": dict(self.split),
            "max_rows_per_organisation": self.generator.row_cap,
            "generator": {"sigma_per_marginal": self.generator.sigma, **asdict(self.generator.settings)},
            "labels": self.labels,
            "secagg": self.graph.summary(),
        }
        if self.teacher is not None:
            dim = dimension(self.teacher.model())
            summary["teacher"] = {
                "noise_multiplier": self.teacher.noise_multiplier,
                "parameters": dim,
                "l2_sensitivity_on_grid": self.teacher.spec(dim).l2_sensitivity,
                **asdict(self.teacher.settings),
            }
            summary["student"] = {"privacy": "post-processing (no ledger event)", **asdict(self.student)}
        if self.evaluation is not None:
            summary[EVALUATION] = self.evaluation.summary()
        if self.discovery is not None:
            summary[DISCOVERY] = {"epsilon": self.discovery.epsilon, "noise_std_text_rounds": self.discovery_sigma,
                                  "noise_std_round_0": round_sigma(self.discovery_sigma, 0),
                                  **asdict(self.discovery.settings)}
        return summary


def parse_budget_split(text: str) -> dict[str, float]:
    """``generator=0.7,teacher=0.3`` -> ``{"generator": 0.7, "teacher": 0.3}`` (``JobConfig`` checks the sum)."""
    split = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, share = part.partition("=")
        try:
            split[name.strip()] = float(share)
        except ValueError:
            raise BudgetError(f"budget split {text!r}: '{part}' is not PHASE=SHARE (e.g. generator=0.7)") from None
    unknown = set(split) - set(DEFAULT_SPLIT)
    if unknown or not split:
        raise BudgetError(f"budget split {text!r}: phases are {', '.join(DEFAULT_SPLIT)}; got {', '.join(sorted(split))}")
    return split


def generator_settings(config: JobConfig) -> GeneratorSettings:
    """The job's generator shape, with its plan chosen from public facts where left open."""
    measured = config.schema.measured_domain()
    ones = [cells(measured, cl) for cl in one_way_cliques(config.schema)]
    return config.generator.resolved(config.schema.domain(), config.epsilon, config.parties, one_way_cells=ones)


def _phase_events(config: JobConfig) -> dict[str, EventFn]:
    num_columns = len(config.schema.measured_domain())  # a 1-way marginal per column and per fine grid
    settings = generator_settings(config)
    events: dict[str, EventFn] = {
        GENERATOR: lambda sigma: generator_event(sigma, num_columns, settings, config.max_rows)
    }
    if TEACHER in config.phases:
        dim = dimension(build_model(config.teacher, config.features(), config.seed))
        events[TEACHER] = lambda z: teacher_event(z, config.teacher, dim)
    if config.evaluate:
        cliques = config.evaluation_cliques()
        events[EVALUATION] = lambda sigma: evaluation_event(sigma, cliques, config.max_rows)
    return events


def _split(config: JobConfig) -> dict[str, float]:
    """Each phase's share; a federated evaluation takes its share, the others share the rest."""
    split = _main_split(config)
    if not config.evaluate:
        return split
    total = sum(split.values())
    shares = {p: round((1.0 - config.evaluate) * s / total, 12) for p, s in split.items()}
    return {**shares, EVALUATION: config.evaluate}


def _main_split(config: JobConfig) -> dict[str, float]:
    if len(config.phases) == 1:
        return {GENERATOR: 1.0}
    missing = [p for p in config.phases if p not in config.budget_split]
    if missing:
        raise BudgetError(f"budget split {dict(config.budget_split)} gives no share to {', '.join(missing)}")
    return {p: float(config.budget_split[p]) for p in config.phases}


def plan_job(config: JobConfig) -> JobPlan:
    """Noise for the whole job from its (epsilon, delta), or ``BudgetError`` before any round
    (``GraphError`` for a SecAgg+ neighbourhood that cannot tolerate ``n - t`` dropouts).

    With a schema discovery first, the rest is planned on what the planned discovery leaves
    (:func:`plan_after`), and again on what its rounds did leave once they have run."""
    discovery = config.discovery()
    if discovery is None:
        return plan_phases(config)
    kinds = schema_kinds(config.schema.columns)
    sigma = plan_sigma(discovery, kinds)
    spent = discovery_event(sigma, kinds, discovery.settings)
    rest = plan_after(replace(config, epsilon=config.main_epsilon, discover=0.0), spent, config.epsilon)
    return replace(rest, event=ComposedDpEvent([spent, rest.event]), discovery=discovery, discovery_sigma=sigma,
                   discovery_multiplier=round_sigma(sigma, 0) / math.sqrt(len(kinds)))


def plan_phases(config: JobConfig) -> JobPlan:
    """The plan of the job's phases after any discovery, at ``config.main_epsilon`` alone."""
    graph = choose_graph(config.parties, config.min_survivors, config.secagg_neighbours)
    events, split = _phase_events(config), _split(config)
    plan = plan_noise(events, split, config.main_epsilon, config.delta)
    sigma = plan.noise_multipliers[GENERATOR]
    max_abs = config.max_rows or MAX_COUNT
    spec = NoisySumSpec(dim=1, mu=sigma**2 / 2, min_survivors=config.min_survivors, max_abs=max_abs)
    secure_ranges(spec, config.parties)  # refuses noise or bounds that cannot fit SecAgg+
    generator = GeneratorPlan(sigma, config.min_survivors, max_abs, config.max_rows, generator_settings(config))
    teacher = None
    if TEACHER in events:
        teacher = TeacherPlan(
            plan.noise_multipliers[TEACHER], config.min_survivors, config.teacher, config.features(), config.seed
        )
        secure_ranges(teacher.spec(dimension(teacher.model())), config.parties)
    evaluation = None
    if EVALUATION in events:
        cliques = tuple(config.evaluation_cliques())
        sigma = plan.noise_multipliers[EVALUATION]  # its event takes the noise std per cell
        evaluation = EvaluationPlan(sigma, cliques, config.min_survivors, max_abs, config.max_rows)
        secure_ranges(evaluation.spec(config.schema.domain()), config.parties)
    event = ComposedDpEvent([events[p](plan.noise_multipliers[p]) for p in events])
    return JobPlan(
        generator, teacher, plan.epsilon.epsilon, event, split, config.labels, config.student, graph, evaluation
    )


def open_ledger(config: JobConfig, staging: Path) -> Ledger:
    """The federation's ledger (``config.ledger``) or a fresh one in the job's staging dir."""
    path = config.ledger or staging / "ledger.jsonl"
    return Ledger(path, cap_epsilon=config.cap or config.epsilon, delta=config.delta)


def preflight(config: JobConfig) -> JobPlan:
    """Plan the job and check it against the federation's cap, before any data is touched.

    Raises ``BudgetError`` (unreachable target, ranges that cannot fit, a threshold that
    colluders could get round) or ``BudgetExceeded`` (the federation's earlier spend plus this
    job would pass its cap).
    """
    if 3 * config.min_survivors <= 2 * config.parties:
        raise BudgetError(
            f"t={config.min_survivors} of {config.parties} organisations: authenticated SecAgg+ needs "
            f"t > 2n/3 (else n - t organisations colluding with a coordinator that lies could get two "
            f"different survivor sets signed and unmask a partial sum); use t of at least "
            f"{default_min_survivors(config.parties) if config.parties > 2 else 3}, and at least 3 organisations"
        )
    plan = plan_job(config)
    if config.ledger is not None:
        open_ledger(config, config.ledger.parent).check(plan.event, phase="this job (planned)")
    elif config.cap is not None and config.cap < plan.epsilon_planned:
        raise BudgetExceeded(f"this job plans epsilon {plan.epsilon_planned:.4f}, above the cap {config.cap:g}")
    return plan


@contextmanager
def staged(staging: Path) -> Iterator[None]:
    """Create the job's staging folder; remove it again if the job fails before its release.

    A folder that was already there (an unfinished job's) is left alone: only what this job
    created is removed. The federation's ledger lives elsewhere and is never touched; a
    finished release has been renamed away from ``staging`` by then.
    """
    created = not staging.exists()
    staging.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def discovered_job(fed: Federation, config: JobConfig, plan: JobPlan, report: Progress) -> tuple[JobConfig, JobPlan]:
    """Run the schema discovery phase, then plan the rest of the job on the discovered schema
    with what remains of epsilon (the release's job.toml keeps the job as it was given)."""
    schema, spent = discover_for(fed, config.schema, plan.discovery, report)
    report(f"schema discovery: {len(schema.columns)} columns described from the organisations' rows "
           f"(epsilon {schema.provenance['epsilon_spent']:.3f})")
    rest = replace(config, schema=schema, epsilon=config.main_epsilon, discover=0.0, cap=config.cap or config.epsilon,
                   labels=config.labels if schema.label is not None else "generator")
    main = plan_after(rest, spent, config.epsilon)
    summary_plan = replace(main, discovery=plan.discovery, discovery_sigma=plan.discovery_sigma,
                           discovery_multiplier=plan.discovery_multiplier)
    return replace(rest, epsilon=config.epsilon, discover=config.discover), summary_plan


#: Relative precision of :func:`plan_after`'s search (bisection steps: about log2(1 / it)).
REST_RTOL = 1e-3


def plan_after(rest: JobConfig, spent: DpEvent, epsilon: float) -> JobPlan:
    """The rest of a job after a discovery whose rounds, as every guard recorded them, compose to
    ``spent``, with the two composed as its ``epsilon_planned``: planned at the largest epsilon (from ``rest.epsilon``, the rest's stand-alone share,
    up to ``epsilon``) whose plan composed with ``spent`` costs at most ``epsilon`` at the job's
    delta (composition is sub-additive, so the stand-alone share alone would leave budget unspent).
    Public: ``spent`` is the plan's and the rounds' noise, never a count. The share itself fits
    (under RDP, epsilons at one delta add up at most: the discovery's filter keeps ``spent``
    within its share); a plan that does not is refused before any further round."""

    def composed(plan: JobPlan) -> float:
        return CombinedAccountant().compose(ComposedDpEvent([spent, plan.event])).epsilon(rest.delta).epsilon

    low, high, best = rest.epsilon, epsilon, plan_phases(rest)
    if composed(best) > epsilon:
        raise BudgetError(f"the discovery's rounds and the rest of the job compose to {composed(best):.4f}, "
                          f"above epsilon {epsilon:g}")
    while high - low > REST_RTOL * epsilon:
        middle = (low + high) / 2
        plan = plan_phases(replace(rest, epsilon=middle))
        if composed(plan) <= epsilon:
            low, best = middle, plan
        else:
            high = middle
    return replace(best, epsilon_planned=composed(best))


def run_job(grid: Grid, context: Context, config: JobConfig, progress: Progress) -> Release:
    """Run the job on the organisations behind ``grid`` and write its release."""
    def connect(ledger: Ledger) -> Federation:
        return Federation(
            grid, context, config.parties, ledger, timeout=config.timeout, neighbours=config.secagg_neighbours
        )

    return run_job_with(connect, config, progress)


def run_job_with(connect: Callable[[Ledger], AbstractContextManager[Any]], config: JobConfig, progress: Progress) -> Release:
    """Run the job on the organisations that ``connect(ledger)`` reaches and write its release.

    ``connect`` gives a context manager with ``check``, ``noisy_sum`` and ``org_names``: a
    Flower :class:`Federation` (``run_job``) or, for one trusted curator and the tests, a
    ``server.central.CentralAggregator`` running the same job code in one process.
    """
    plan = preflight(config)
    staging = config.out.with_name(config.out.name + ".partial")
    with staged(staging):
        ledger = open_ledger(config, staging)
        if config.ledger is None and ledger.entries:
            raise BudgetError(f"{staging} holds a ledger from an unfinished job; remove it first")
        ledger.check(plan.event, phase="this job (planned)")
        first_entry = len(ledger.entries)

        def report(message: str) -> None:
            spent = ledger.epsilon().epsilon if ledger.entries else 0.0
            progress(f"{message}  [epsilon spent {spent:.3f} of {config.epsilon:g}]")

        rng = np.random.default_rng(config.seed)
        with connect(ledger) as fed:
            if plan.discovery is not None:
                config, plan = discovered_job(fed, config, plan, report)
            fed.check({"schema": config.schema.dumps("json"), **plan.guard_request()})
            report(f"all {config.parties} organisations accept schema '{config.schema.name}'")
            model = fit_generator(fed, config.schema, plan.generator, rng, report)
            teacher = fit_teacher(fed, config.schema, plan.teacher, model.total, report) if plan.teacher else None
            union = measure_union(fed, config.schema, plan.evaluation) if plan.evaluation else None
        model = release_model(model, config.schema, plan.generator.settings)  # nothing per organisation
        rows = config.rows if config.rows is not None else int(round(model.total))
        labeller, relabel = {}, None
        if teacher is not None:
            features = plan.teacher.features
            codes = synthetic_codes(model, config.schema, rows, config.seed)
            student = distil(teacher, features, codes, config.student, config.seed)
            labeller = {"teacher": teacher, "student": student}

            def relabel(codes: np.ndarray, draw_rng: np.random.Generator) -> np.ndarray:
                return relabel_codes(codes, features, student, config.labels, draw_rng)

        report(f"sampling {rows:,} synthetic rows from the model")
        synthetic = sample_rows(model, config.schema, rows, rng, relabel)
        report(f"sampled {rows:,} synthetic rows that keep the schema's {len(config.schema.rules)} rules")
        if teacher is not None:
            report(f"labelled them with the distilled student ({config.labels}; post-processing, no privacy cost)")
        evaluation = evaluate_release(plan.evaluation, union, config.schema, synthetic) if union else None
        if evaluation is not None:
            report(f"federated evaluation: {headline(evaluation)}")
        return write_release(
            staging,
            config.out,
            synthetic,
            ledger,
            first_entry,
            plan.summary(),
            fed.org_names.values(),
            model.measurements,
            missing_token=config.schema.na_values[0] if config.schema.na_values else "",
            labeller=labeller,
            job=job_toml(option_values(config), __version__),
            evaluation=evaluation,
            schema=config.schema,
        )
