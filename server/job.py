"""One synthesis job on the coordinator: plan, check, generate, release.

Order matters for privacy and for "nothing partial": the budget is planned and the secure
ranges checked before any message reaches an organisation; every organisation then checks
its table against the public schema before any vector leaves it; every noisy result is in
the fsynced ledger before it is used; the release directory appears only when complete.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid

from dp_accounting import ComposedDpEvent, DpEvent

from fedsynth.common.accounting import BudgetError, BudgetExceeded, EventFn, Ledger, plan_noise
from fedsynth.common.generator import GeneratorSettings, generator_event
from fedsynth.common.marginals import count_sensitivity
from fedsynth.common.rounds import plan_request
from fedsynth.common.schema import Schema
from fedsynth.common.secagg_graph import SecAggGraph, choose_graph
from fedsynth.common.secure_sum import NoisySumSpec, secure_ranges
from fedsynth.common.student import LABEL_MODES, StudentSettings, distil
from fedsynth.common.student import relabel as relabel_codes
from fedsynth.common.teacher import Features, TeacherSettings, build_model, dimension, teacher_event
from fedsynth.server.generator import PHASE as GENERATOR, GeneratorPlan, Progress, fit_generator, sample_rows, synthetic_codes
from fedsynth.server.release import Release, write_release
from fedsynth.server.secure_sum import Federation
from fedsynth.server.teacher import PHASE as TEACHER, TeacherPlan, fit_teacher

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
    secagg_neighbours: int | None = None  # SecAgg+ neighbourhood size; None: common.secagg_graph chooses

    def __post_init__(self) -> None:
        if self.parties < 1:
            raise ValueError(f"a job needs at least one organisation, got {self.parties}")
        if not 1 <= self.min_survivors < self.parties:
            raise ValueError(
                f"min_survivors (t) must be at least 1 and below the number of organisations "
                f"({self.parties}; SecAgg+ needs its reconstruction threshold below its number of "
                f"shares), got {self.min_survivors}"
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

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases that spend budget: the teacher only when its labels are used."""
        return (GENERATOR,) if self.labels == "generator" else (GENERATOR, TEACHER)

    def features(self) -> Features:
        return Features(self.schema.domain(), str(self.schema.label))


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

    def noise_multipliers(self) -> dict[str, float]:
        """Each phase's aggregate noise std over its L2 sensitivity, at ``t`` survivors."""
        multipliers = {GENERATOR: self.generator.sigma / count_sensitivity(self.generator.row_cap)[1]}
        if self.teacher is not None:
            multipliers[TEACHER] = self.teacher.noise_multiplier
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
        return summary


def parse_budget_split(text: str) -> dict[str, float]:
    """``generator=0.7,teacher=0.3`` -> ``{"generator": 0.7, "teacher": 0.3}`` (shares are normalised)."""
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
    return config.generator.resolved(config.schema.domain(), config.epsilon, config.parties)


def _phase_events(config: JobConfig) -> dict[str, EventFn]:
    num_columns = len(config.schema.domain())
    settings = generator_settings(config)
    events: dict[str, EventFn] = {
        GENERATOR: lambda sigma: generator_event(sigma, num_columns, settings, config.max_rows)
    }
    if TEACHER in config.phases:
        dim = dimension(build_model(config.teacher, config.features(), config.seed))
        events[TEACHER] = lambda z: teacher_event(z, config.teacher, dim)
    return events


def _split(config: JobConfig) -> dict[str, float]:
    if len(config.phases) == 1:
        return {GENERATOR: 1.0}
    missing = [p for p in config.phases if p not in config.budget_split]
    if missing:
        raise BudgetError(f"budget split {dict(config.budget_split)} gives no share to {', '.join(missing)}")
    return {p: float(config.budget_split[p]) for p in config.phases}


def plan_job(config: JobConfig) -> JobPlan:
    """Noise for the whole job from its (epsilon, delta), or ``BudgetError`` before any round
    (``GraphError`` for a SecAgg+ neighbourhood that cannot tolerate ``n - t`` dropouts)."""
    graph = choose_graph(config.parties, config.min_survivors, config.secagg_neighbours)
    events, split = _phase_events(config), _split(config)
    plan = plan_noise(events, split, config.epsilon, config.delta)
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
    event = ComposedDpEvent([events[p](plan.noise_multipliers[p]) for p in events])
    return JobPlan(generator, teacher, plan.epsilon.epsilon, event, split, config.labels, config.student, graph)


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
    if 2 * config.min_survivors <= config.parties:
        raise BudgetError(
            f"t={config.min_survivors} of {config.parties} organisations: SecAgg+ needs 2t > n (every "
            f"organisation holds a Shamir share of every other's masks, so t colluders could unmask one); "
            f"use t of at least {config.parties // 2 + 1}, and at least 3 organisations"
        )
    plan = plan_job(config)
    if config.ledger is not None:
        open_ledger(config, config.ledger.parent).check(plan.event, phase="this job (planned)")
    elif config.cap is not None and config.cap < plan.epsilon_planned:
        raise BudgetExceeded(f"this job plans epsilon {plan.epsilon_planned:.4f}, above the cap {config.cap:g}")
    return plan


def run_job(grid: Grid, context: Context, config: JobConfig, progress: Progress) -> Release:
    """Run the job on the organisations behind ``grid`` and write its release."""
    plan = preflight(config)
    staging = config.out.with_name(config.out.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    ledger = open_ledger(config, staging)
    if config.ledger is None and ledger.entries:
        raise BudgetError(f"{staging} holds a ledger from an unfinished job; remove it first")
    ledger.check(plan.event, phase="this job (planned)")
    first_entry = len(ledger.entries)

    def report(message: str) -> None:
        spent = ledger.epsilon().epsilon if ledger.entries else 0.0
        progress(f"{message}  [epsilon spent {spent:.3f} of {config.epsilon:g}]")

    rng = np.random.default_rng(config.seed)
    with Federation(grid, context, config.parties, ledger, timeout=config.timeout, neighbours=config.secagg_neighbours) as fed:
        fed.check({"schema": config.schema.dumps("json"), **plan.guard_request()})
        report(f"all {config.parties} organisations accept schema '{config.schema.name}'")
        model = fit_generator(fed, config.schema, plan.generator, rng, report)
        teacher = fit_teacher(fed, config.schema, plan.teacher, model.total, report) if plan.teacher else None
    rows = config.rows if config.rows is not None else int(round(model.total))
    labeller, relabel = {}, None
    if teacher is not None:
        features = plan.teacher.features
        student = distil(teacher, features, synthetic_codes(model, config.schema, rows, config.seed), config.student, config.seed)
        labeller = {"teacher": teacher, "student": student}

        def relabel(codes: np.ndarray, draw_rng: np.random.Generator) -> np.ndarray:
            return relabel_codes(codes, features, student, config.labels, draw_rng)

    synthetic = sample_rows(model, config.schema, rows, rng, relabel)
    report(f"sampled {rows:,} synthetic rows that keep the schema's {len(config.schema.rules)} rules")
    if teacher is not None:
        report(f"labelled them with the distilled student ({config.labels}; post-processing, no privacy cost)")
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
    )
