"""The coordinator service's job state, in an SQL database shared with the jobs' ServerApps.

SQLite by default (``sqlite:////var/lib/fedsynth/coordinator.db``), PostgreSQL by URL
(``postgresql+psycopg://...``, with ``pip install psycopg[binary]``). Two kinds of process
write it: the coordinator service (queue, submit, reconcile after a restart) and each job's
ServerApp on the SuperLink (progress, outcome). Every state change is a compare-and-set
(:meth:`JobStore.transition`) in one transaction with its event, so the two can never both
win a race: e.g. a restarted coordinator that fails a job it cannot account for, and that
job's ServerApp starting late, which then finds the job failed and touches no data.

States: QUEUED -> SUBMITTED -> RUNNING -> SUCCEEDED | FAILED (FAILED from any unfinished
state). They mirror ``JobState`` in ``protos/coordinator.proto``.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

QUEUED, SUBMITTED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "SUBMITTED", "RUNNING", "SUCCEEDED", "FAILED"
TERMINAL = (SUCCEEDED, FAILED)
UNFINISHED = (QUEUED, SUBMITTED, RUNNING)

_metadata = sa.MetaData()
_jobs = sa.Table(
    "jobs",
    _metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("plan_event", sa.Text, nullable=False),
    sa.Column("epsilon_planned", sa.Float, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("flower_run_id", sa.String(24), nullable=False),  # Flower's run ids are unsigned 64-bit
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("updated", sa.String(40), nullable=False),
)
_events = sa.Table(
    "events",
    _metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.job_id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
)


@dataclass(frozen=True)
class JobRow:
    job_id: str
    state: str
    spec: Mapping[str, Any]
    plan_event: Mapping[str, Any]
    epsilon_planned: float
    error: str
    flower_run_id: int
    created: str
    updated: str


@dataclass(frozen=True)
class EventRow:
    seq: int
    time: str
    message: str
    state: str


def new_job_id() -> str:
    return uuid.uuid4().hex


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    # SQLite: take the write lock at BEGIN (not at the first write), so that the service and
    # a ServerApp never deadlock upgrading read locks; wait for each other up to 30 s.
    engine = sa.create_engine(url, connect_args={"timeout": 30, "isolation_level": None})

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class JobStore:
    """Jobs and their events; safe to use from several processes at once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = _engine(url)
        _metadata.create_all(self._engine)

    def create(
        self, job_id: str, spec: Mapping[str, Any], plan_event: Mapping[str, Any], epsilon_planned: float
    ) -> JobRow:
        """A new QUEUED job (with its first event); ``job_id`` from :func:`new_job_id`."""
        now = _now()
        with self._engine.begin() as conn:
            conn.execute(
                _jobs.insert().values(
                    job_id=job_id, state=QUEUED, spec=json.dumps(dict(spec)), plan_event=json.dumps(dict(plan_event)),
                    epsilon_planned=float(epsilon_planned), error="", flower_run_id="0", created=now, updated=now,
                )
            )
            self._append(conn, job_id, f"queued; planned epsilon {epsilon_planned:.4f}", QUEUED)
        return self.get(job_id)

    def get(self, job_id: str) -> JobRow | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(_jobs).where(_jobs.c.job_id == job_id)).mappings().first()
        return _job(row) if row else None

    def jobs(self, states: Iterable[str] | None = None) -> list[JobRow]:
        """Jobs, oldest first (only those in ``states`` if given)."""
        query = sa.select(_jobs).order_by(_jobs.c.created, _jobs.c.job_id)
        if states is not None:
            query = query.where(_jobs.c.state.in_(list(states)))
        with self._engine.connect() as conn:
            return [_job(row) for row in conn.execute(query).mappings()]

    def transition(
        self, job_id: str, to: str, *, expect: Iterable[str], message: str, error: str = "", run_id: int | None = None
    ) -> bool:
        """Move the job to ``to`` if it is in one of ``expect``; record ``message``. Atomic."""
        values: dict[str, Any] = {"state": to, "updated": _now()}
        if error:
            values["error"] = error
        if run_id is not None:
            values["flower_run_id"] = str(int(run_id))
        with self._engine.begin() as conn:
            changed = conn.execute(
                _jobs.update().where(_jobs.c.job_id == job_id, _jobs.c.state.in_(list(expect))).values(**values)
            ).rowcount
            if changed:
                self._append(conn, job_id, message, to)
        return bool(changed)

    def set_run_id(self, job_id: str, run_id: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(_jobs.update().where(_jobs.c.job_id == job_id).values(flower_run_id=str(int(run_id)), updated=_now()))

    def add_event(self, job_id: str, message: str) -> None:
        """A progress line, under the job's current state."""
        with self._engine.begin() as conn:
            state = conn.execute(
                sa.select(_jobs.c.state).where(_jobs.c.job_id == job_id).with_for_update()  # serialises appends
            ).scalar_one()
            self._append(conn, job_id, message, state)

    def events_after(self, job_id: str, seq: int) -> list[EventRow]:
        query = (
            sa.select(_events.c.seq, _events.c.time, _events.c.message, _events.c.state)
            .where(_events.c.job_id == job_id, _events.c.seq > seq)
            .order_by(_events.c.seq)
        )
        with self._engine.connect() as conn:
            return [EventRow(**row) for row in conn.execute(query).mappings()]

    def _append(self, conn: sa.Connection, job_id: str, message: str, state: str) -> None:
        """Add an event; the job's ``updated`` time becomes the event's (a job is updated by its progress)."""
        last = conn.execute(sa.select(sa.func.max(_events.c.seq)).where(_events.c.job_id == job_id)).scalar()
        now = _now()
        conn.execute(_events.insert().values(job_id=job_id, seq=(last or 0) + 1, time=now, message=message, state=state))
        conn.execute(_jobs.update().where(_jobs.c.job_id == job_id).values(updated=now))


def _job(row: Mapping[str, Any]) -> JobRow:
    return JobRow(
        **{**row, "spec": json.loads(row["spec"]), "plan_event": json.loads(row["plan_event"]),
           "flower_run_id": int(row["flower_run_id"])}
    )
