"""The deployment ServerApp (``fedsynth.server.app:app``), configured by Flower run-config.

Run-config keys (all public; ``flwr run <app> <federation> --run-config 'k=v ...'``): every job
option of ``server.jobspec.JOB_OPTIONS`` under its name (``epsilon``, ``teacher-steps``, ...; an
option whose default is "chosen from public facts" is unset as 0), plus ``schema`` (path of the
public schema on the coordinator) and ``out`` (release directory); set by the coordinator
service: ``ledger`` and ``cap`` (the federation's ledger and epsilon cap), ``job-id`` and
``state`` (its job and database: progress and outcome are reported there, see
``server.jobstore``). ``fedsynth/flower_app/pyproject.toml`` declares them all with their
defaults.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO
from pathlib import Path

from flwr.app import Context, Message
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from ..common.backoff import Backoff
from ..common.schema import load_schema
from .job import JobConfig, run_job
from .jobspec import from_run_config, job_config
from .jobstore import FAILED, RUNNING, SUBMITTED, SUCCEEDED, JobStore
from .release import Release


#: Run-config keys that are not job options: where the job reads and writes, and the service's own.
SERVICE_KEYS = ("schema", "out", "ledger", "cap", "job-id", "state")


def config_from_run_config(run_config: dict) -> JobConfig:
    """A job from Flower run-config values (see the module docstring).

    Flower passes every key with the app's default, so "unset" is 0 (or "" for ``schema``).
    """
    if not str(run_config.get("schema", "")):
        raise ValueError("run-config 'schema' is required: the path of the job's public schema")
    return job_config(
        from_run_config(run_config),
        schema=load_schema(Path(str(run_config["schema"]))),
        out=Path(str(run_config.get("out", "release"))),
        ledger=Path(str(run_config["ledger"])) if str(run_config.get("ledger", "")) else None,
        cap=float(run_config.get("cap", 0)) or None,
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


class PromptGrid(Grid):
    """The SuperLink's grid, collecting replies promptly instead of every 3 s.

    Flower 1.41's deployment grid sleeps a fixed 3 s between pulls while it waits for replies;
    a secure round has five such waits. Here ``common.backoff.Backoff`` sets them: 0.05 s for
    3 s after the messages left or a reply came, then doubling up to 1 s. Everything else is
    the SuperLink's grid.
    """

    first_poll_s = 0.05
    max_poll_s = 1.0
    hot_s = 3.0

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run) -> None:  # noqa: ANN001 (Flower's Run)
        self.grid.set_run(run)

    @property
    def run(self):  # noqa: ANN201 (Flower's Run)
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:  # noqa: ANN002, ANN003
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self):  # noqa: ANN201
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Flower's ``send_and_receive``, its waits between pulls short and growing."""
        waiting = set(self.push_messages(messages))
        end = time.monotonic() + (timeout or 0.0)
        replies: list[Message] = []
        backoff = Backoff(self.first_poll_s, self.max_poll_s, self.hot_s)
        while waiting and (timeout is None or time.monotonic() < end):
            pulled = list(self.pull_messages(waiting))
            replies += pulled
            waiting -= {m.metadata.reply_to_message_id for m in pulled}
            if pulled:
                backoff.active()
            if waiting:
                backoff.idle()
        return replies


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
        release = run_job(PromptGrid(grid), context, config_from_run_config(run_config), progress=progress)
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
