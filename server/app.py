"""The deployment ServerApp (``fedsynth.server.app:app``), configured by Flower run-config.

Run-config keys (all public; ``flwr run <app> <federation> --run-config 'k=v ...'``):
``schema`` (path of the public schema on the coordinator), ``out`` (release directory),
``parties``, ``epsilon``, ``delta``, ``min-survivors`` (0 = parties - 1), ``max-rows`` (0 = no row
cap), ``rows`` (0 = the paid-for noisy count), ``seed``, ``rounds`` and ``per-round`` (generator
shape; 0 = planned from the columns and epsilon),
``timeout`` (seconds a round waits for organisations; 0 = Flower's default), ``labels``
(sample | argmax | generator), ``budget-split`` (e.g. ``generator=0.7,teacher=0.3``),
``teacher`` (logreg | mlp), ``teacher-steps`` and ``secagg-neighbours`` (SecAgg+ neighbourhood
size; 0 = chosen from the parties and t, ``common.secagg_graph``); set by the coordinator service:
``ledger`` and ``cap`` (the federation's ledger and epsilon cap), ``job-id`` and ``state``
(its job and database: progress and outcome are reported there, see ``server.jobstore``).
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.schema import load_schema
from fedsynth.common.teacher import TeacherSettings
from fedsynth.server.job import JobConfig, parse_budget_split, run_job
from fedsynth.server.jobstore import FAILED, RUNNING, SUBMITTED, SUCCEEDED, JobStore
from fedsynth.server.release import Release


def config_from_run_config(run_config: dict) -> JobConfig:
    """A job from Flower run-config values (see the module docstring).

    Flower passes every key with the app's default, so "unset" is 0 (or "" for ``schema``).
    """
    if not str(run_config.get("schema", "")):
        raise ValueError("run-config 'schema' is required: the path of the job's public schema")
    parties = int(run_config["parties"])
    rows = int(run_config.get("rows", 0))
    timeout = float(run_config.get("timeout", 0))
    teacher = TeacherSettings()
    return JobConfig(
        schema=load_schema(Path(str(run_config["schema"]))),
        parties=parties,
        epsilon=float(run_config["epsilon"]),
        delta=float(run_config["delta"]),
        out=Path(str(run_config["out"])),
        min_survivors=int(run_config.get("min-survivors", 0)) or max(2, parties - 1),
        max_rows=int(run_config.get("max-rows", 0)) or None,
        rows=rows or None,
        seed=int(run_config.get("seed", 0)),
        generator=GeneratorSettings(
            rounds=int(run_config.get("rounds", 0)) or None,
            per_round=int(run_config.get("per-round", 0)) or None,
        ),
        timeout=timeout or None,
        teacher=TeacherSettings(
            model=str(run_config.get("teacher", teacher.model)),
            steps=int(run_config.get("teacher-steps", teacher.steps)),
        ),
        labels=str(run_config.get("labels", "sample")),
        ledger=Path(str(run_config["ledger"])) if str(run_config.get("ledger", "")) else None,
        cap=float(run_config.get("cap", 0)) or None,
        budget_split=parse_budget_split(str(run_config.get("budget-split", "generator=0.7,teacher=0.3"))),
        secagg_neighbours=int(run_config.get("secagg-neighbours", 0)) or None,
    )


class JobReporter:
    """Progress and outcome of a coordinator service's job, written to its database."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id

    def start(self) -> bool:
        """Claim the job (SUBMITTED -> RUNNING); False if the service has given up on it."""
        return self.store.transition(self.job_id, RUNNING, expect=[SUBMITTED], message="running on the SuperLink")

    def progress(self, message: str) -> None:
        self.store.add_event(self.job_id, message)

    def succeed(self, release: Release) -> None:
        self.store.transition(
            self.job_id, SUCCEEDED, expect=[RUNNING],
            message=f"release written: {release.rows:,} rows, epsilon {release.statement['epsilon']:.4f}",
        )

    def fail(self, error: str) -> None:
        self.store.transition(self.job_id, FAILED, expect=[RUNNING], message=f"failed: {error}", error=error)


def reporter_for(run_config: dict) -> JobReporter | None:
    """The job's reporter when the coordinator service submitted it (``job-id`` and ``state``)."""
    job_id, url = str(run_config.get("job-id", "")), str(run_config.get("state", ""))
    return JobReporter(JobStore(url), job_id) if job_id and url else None


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_config = dict(context.run_config)
    reporter = reporter_for(run_config)
    if reporter is not None and not reporter.start():
        log(INFO, "job %s is no longer waiting to run (see the coordinator); nothing was done", reporter.job_id)
        return

    def progress(message: str) -> None:
        log(INFO, "%s", message)
        if reporter is not None:
            reporter.progress(message)

    try:
        release = run_job(grid, context, config_from_run_config(run_config), progress=progress)
    except Exception as exc:
        if reporter is not None:
            reporter.fail(f"{type(exc).__name__}: {exc}")
        raise
    if reporter is not None:
        reporter.succeed(release)
    log(
        INFO,
        "release written to %s: %d rows, epsilon %.4f (delta %g)",
        release.path,
        release.rows,
        release.statement["epsilon"],
        release.statement["delta"],
    )
