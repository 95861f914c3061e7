"""The coordinator service: takes synthesis jobs over gRPC and runs them on the SuperLink.

``fedsynth coordinator --config coordinator.toml`` serves ``protos/coordinator.proto``:

```toml
[coordinator]
listen = "0.0.0.0:7000"
state = "sqlite:////var/lib/fedsynth/coordinator.db"  # or postgresql+psycopg://user:pw@db/fedsynth
workdir = "/var/lib/fedsynth"          # job schemas, releases, the federation's ledger
certificate = "/etc/fedsynth/server.pem"
private-key = "/etc/fedsynth/server.key"
# insecure = true                      # loopback trials only

[federation]
epsilon-cap = 10.0                     # over all jobs ever run on this federation
delta = 1e-6

[superlink]
address = "superlink:9092"
root-certificates = "/etc/fedsynth/ca.crt"
# insecure = true
```

How a job runs. ``SubmitJob`` validates the spec and plans it exactly as the ServerApp will
(``server.app.config_from_run_config`` + ``server.job.preflight``), then refuses it unless the
federation's ledger (every spend at its planned noise, i.e. ``t`` honest survivors, not the
survivors the coordinator happened to see) plus the plans of all unfinished jobs plus this one
stay within the cap; concurrent submissions are admitted one at a time, so their plans together
stay within it too.
Jobs run one at a time, oldest first: the service hands the job to the SuperLink with
``flwr run`` of the bundled Flower app (``fedsynth/flower_app``), whose ServerApp claims it in
the database, reports progress there, appends every spend to the federation's ledger (a
hash-chained file in the workdir, the same format as each organisation's guard ledger) and
writes the release into the workdir.

Restarts. The ServerApp runs under the SuperLink, not under this service, so a crash of the
service interrupts no job: on restart it finds its unfinished jobs in the database and keeps
following them. A job whose Flower run ended without the ServerApp reporting an outcome (it
crashed or was stopped) is failed; the spend of the rounds it ran is in the ledger already, as
it is written before each noisy result is used, and nothing is ever written twice, because
only the ServerApp writes the ledger. A job the service marked submitted but has no Flower run
id for (a crash in between) is failed, and its ServerApp, should it start late, finds it
failed and touches no data.

What operators read. The service logs (INFO, the default of ``fedsynth coordinator``) the address
it listens on, then every event of every job as the scheduler sees it: its state changes and the
ServerApp's progress lines (phase, round, epsilon spent). ``GetJob`` adds the job's progress from
the federation ledger's entries written while it ran (jobs run one at a time): epsilon spent so
far, and the phase, round and survivors of its last secure round (``fedsynth job status``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
from dp_accounting import ComposedDpEvent

from ..common.accounting import BudgetError, BudgetExceeded, CombinedAccountant, Ledger, LedgerCorrupt, event_from_dict, event_to_dict
from ..common.schema import SchemaError
from ..protos import coordinator_pb2 as pb
from ..protos import coordinator_pb2_grpc as pb_grpc
from .app import config_from_run_config
from .job import preflight
from .jobspec import JOB_OPTIONS
from .jobstore import FAILED, QUEUED, RUNNING, SUBMITTED, SUCCEEDED, TERMINAL, UNFINISHED, JobRow, JobStore, new_job_id

log = logging.getLogger(__name__)

CONNECTION = "fedsynth"  # the SuperLink's name in the service's own Flower configuration
CHUNK = 1 << 20
TICK_S = 2.0  # how often the scheduler looks at its jobs (in its database)
FOLLOW_S = 30.0  # how long an active job may be silent before it asks the SuperLink whether its run still runs
EVENT_POLL_S = 0.5  # how often an event stream looks for new events


class ConfigError(ValueError):
    """The coordinator's config file is wrong (the message names the file and key)."""


class SpecError(ValueError):
    """A submitted job spec is invalid (INVALID_ARGUMENT)."""


#: JobSpec field -> run-config key of the Flower app (``fedsynth/flower_app/pyproject.toml``).
SPEC_KEYS = {o.proto: o.name for o in JOB_OPTIONS}


def flower_app() -> Path:
    """The Flower app the service submits: ``fedsynth/flower_app`` (config only, no code)."""
    return Path(str(resources.files("fedsynth") / "flower_app"))


def app_defaults() -> dict[str, Any]:
    """The run-config defaults the Flower app declares (what Flower passes for unset keys)."""
    pyproject = tomllib.loads((flower_app() / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(pyproject["tool"]["flwr"]["app"]["config"])


@dataclass(frozen=True)
class CoordinatorConfig:
    path: Path
    listen: str
    state: str
    workdir: Path
    certificate: Path | None
    private_key: Path | None
    insecure: bool
    epsilon_cap: float
    delta: float
    superlink: str
    superlink_root_certificates: Path | None
    superlink_insecure: bool

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CoordinatorConfig":
        path = Path(path).resolve()
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
            service, federation, link = raw["coordinator"], raw["federation"], raw["superlink"]

            def file(value: Any) -> Path:
                return (path.parent / str(value)).resolve()

            insecure, link_insecure = bool(service.get("insecure", False)), bool(link.get("insecure", False))
            config = cls(
                path=path,
                listen=str(service["listen"]),
                state=str(service.get("state", "")) or f"sqlite:///{file(service['workdir']) / 'coordinator.db'}",
                workdir=file(service["workdir"]),
                certificate=None if insecure else file(service["certificate"]),
                private_key=None if insecure else file(service["private-key"]),
                insecure=insecure,
                epsilon_cap=float(federation["epsilon-cap"]),
                delta=float(federation["delta"]),
                superlink=str(link["address"]),
                superlink_root_certificates=None if link_insecure else file(link["root-certificates"]),
                superlink_insecure=link_insecure,
            )
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the coordinator config: {exc}") from None
        except KeyError as exc:
            raise ConfigError(f"{path}: missing key {exc} (see `fedsynth coordinator --help`)") from None
        return config

    @property
    def ledger_path(self) -> Path:
        return self.workdir / "federation-ledger.jsonl"

    def ledger(self) -> Ledger:
        return Ledger(self.ledger_path, cap_epsilon=self.epsilon_cap, delta=self.delta)

    def job_dir(self, job_id: str) -> Path:
        return self.workdir / "jobs" / job_id


class FlowerRuns:
    """The SuperLink, as the service reaches it: the ``flwr`` CLI with its own Flower home."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.home = config.workdir / "flwr-home"
        self.home.mkdir(parents=True, exist_ok=True)
        security = (
            "insecure = true" if config.superlink_insecure
            else f"root-certificates = {json.dumps(str(config.superlink_root_certificates))}"
        )
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f"address = {json.dumps(config.superlink)}\n{security}\n",
            encoding="utf-8",
        )
        self._flwr = str(Path(sys.executable).with_name("flwr"))

    def _call(self, *args: str) -> dict:
        env = {**os.environ, "FLWR_HOME": str(self.home), "FLWR_TELEMETRY_ENABLED": "0"}
        done = subprocess.run([self._flwr, *args, "--format", "json"], capture_output=True, text=True, env=env, timeout=120)
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"`flwr {args[0]}` failed (exit {done.returncode}): {done.stdout}{done.stderr}") from None

    def start(self, run_config: Path) -> int:
        """Submit the bundled app with this run-config file; return Flower's run id."""
        out = self._call("run", str(flower_app()), CONNECTION, "--run-config", str(run_config))
        if not out.get("success") or out.get("run-id") is None:
            raise RuntimeError(f"the SuperLink did not start the run: {out.get('error-message', out)}")
        return int(out["run-id"])

    def status(self, run_id: int) -> str:
        """Flower's status of a run: pending, starting, running, finished:<how>."""
        out = self._call("ls", CONNECTION, "--run-id", str(run_id))
        runs = out.get("runs") or []
        return str(runs[0]["status"]) if runs else "unknown"


class Coordinator:
    """The service's logic (no gRPC): accept jobs, run them one at a time, reconcile."""

    def __init__(self, config: CoordinatorConfig, runs: FlowerRuns, follow_s: float = FOLLOW_S) -> None:
        self.config = config
        self.runs = runs
        self.follow_s = follow_s  # each ask is a `flwr` process: not every tick
        self._asked: dict[str, float] = {}
        self._logged: dict[str, int] = {}  # job -> seq of its last event logged
        self._admission = threading.Lock()  # a cap check and the queueing it admits are one step
        config.workdir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(config.state)
        config.ledger()  # reading it verifies its hash chain: refuse to start on a corrupt ledger

    # ---- submission
    def run_config(self, job_id: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The Flower run-config of a job, as the ServerApp will receive it.

        Flower gives every key the app's default unless overridden, so this starts from the
        bundled app's defaults, overrides them with the spec's set fields (proto3: 0 or "" is
        unset) and adds the service's own keys. The job is validated and planned from exactly
        this, so the service refuses what the ServerApp would.
        """
        folder = self.config.job_dir(job_id)
        values = {**app_defaults(), "delta": self.config.delta}
        values.update({key: spec[field] for field, key in SPEC_KEYS.items() if spec.get(field)})
        values.update({
            "schema": str(folder / "schema.yaml"),
            "out": str(folder / "release"),
            "ledger": str(self.config.ledger_path),
            "cap": self.config.epsilon_cap,
            "job-id": job_id,
            "state": self.config.state,
        })
        return values

    def submit(self, spec: Mapping[str, Any]) -> JobRow:
        """Queue a job, or raise ``SpecError`` / ``BudgetExceeded`` having queued nothing."""
        job_id = new_job_id()
        folder = self.config.job_dir(job_id)
        folder.mkdir(parents=True)
        try:
            (folder / "schema.yaml").write_text(str(spec.get("schema", "")), encoding="utf-8")
            try:
                job = config_from_run_config(self.run_config(job_id, spec))
                if job.delta != self.config.delta:
                    raise SpecError(f"delta must be the federation's ({self.config.delta:g}), got {job.delta:g}")
                plan = preflight(job)
            except (ValueError, KeyError, SchemaError) as exc:
                if isinstance(exc, (BudgetExceeded, SpecError)):
                    raise
                raise SpecError(f"invalid job: {exc}") from None
            (folder / "run-config.toml").write_text(_toml(self.run_config(job_id, spec)), encoding="utf-8")
            with self._admission:
                self._check_federation_cap(plan.event)
                return self.store.create(job_id, dict(spec), event_to_dict(plan.event), plan.epsilon_planned)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _check_federation_cap(self, event, job_id: str = "") -> None:  # noqa: ANN001 (a DpEvent)
        """Planned ledger + plans of the unfinished jobs (other than ``job_id``) + ``event`` within the cap."""
        pending = [event_from_dict(job.plan_event) for job in self.store.jobs(UNFINISHED) if job.job_id != job_id]
        spent = [entry.planned_event() for entry in self.config.ledger().entries]
        eps = CombinedAccountant().compose(ComposedDpEvent([*spent, *pending, event])).epsilon(self.config.delta)
        if eps.epsilon > self.config.epsilon_cap:
            raise BudgetExceeded(
                f"the federation's cap {self.config.epsilon_cap:g} would be passed: this job (planned) would bring "
                f"epsilon to {eps.epsilon:.6g} (delta {self.config.delta:g}, {eps.method}), above the cap "
                f"{self.config.epsilon_cap:g} (counting the ledger at its planned noise and the plans of "
                f"{len(pending)} unfinished job(s))"
            )

    # ---- scheduling
    def tick(self) -> None:
        """Follow the active job; when none is active, hand the oldest queued one to Flower.
        Log what the jobs reported since the last tick."""
        try:
            self._schedule()
        finally:
            self.log_events()

    def _schedule(self) -> None:
        active = self.store.jobs((SUBMITTED, RUNNING))
        for job in active:
            self._follow(job)
        if any(self.store.get(j.job_id).state not in TERMINAL for j in active):
            return
        queued = self.store.jobs((QUEUED,))
        if queued:
            self._start(queued[0])

    def _follow(self, job: JobRow) -> None:
        if job.flower_run_id == 0:
            self.store.transition(
                job.job_id, FAILED, expect=[SUBMITTED],
                message="failed: the service stopped while submitting it; it never ran",
                error="interrupted while being submitted; nothing ran",
            )
            return
        if not self.due_to_ask(job):
            return
        self._asked[job.job_id] = time.monotonic()
        status = self.runs.status(job.flower_run_id)
        if status.startswith("finished"):
            self.store.transition(
                job.job_id, FAILED, expect=[SUBMITTED, RUNNING],
                message=f"failed: Flower run {job.flower_run_id} ended ({status}) without an outcome",
                error=f"the ServerApp ended ({status}) without reporting; spends of finished rounds are in the ledger",
            )

    def due_to_ask(self, job: JobRow) -> bool:
        """Whether to ask the SuperLink if the job's run still runs: only when neither its ServerApp
        reported nor the service asked within ``follow_s`` (a job that reports is alive)."""
        silent_s = (datetime.now(timezone.utc) - datetime.fromisoformat(job.updated)).total_seconds()
        return silent_s >= self.follow_s and time.monotonic() - self._asked.get(job.job_id, -math.inf) >= self.follow_s

    def _start(self, job: JobRow) -> None:
        try:
            with self._admission:
                self._check_federation_cap(event_from_dict(job.plan_event), job.job_id)  # the ledger has grown
        except BudgetExceeded as exc:
            self.store.transition(job.job_id, FAILED, expect=[QUEUED], message=f"refused: {exc}", error=str(exc))
            return
        if not self.store.transition(job.job_id, SUBMITTED, expect=[QUEUED], message="submitting to the SuperLink"):
            return
        try:
            run_id = self.runs.start(self.config.job_dir(job.job_id) / "run-config.toml")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            self.store.transition(job.job_id, FAILED, expect=[SUBMITTED], message=f"failed: {exc}", error=str(exc))
            return
        self.store.set_run_id(job.job_id, run_id)
        self.store.add_event(job.job_id, f"Flower run {run_id} started")

    # ---- reading
    def release_files(self, job_id: str) -> list[Path]:
        release = self.config.job_dir(job_id) / "release"
        return sorted(p for p in release.iterdir() if p.is_file()) if release.is_dir() else []

    def progress(self, job: JobRow) -> JobProgress:
        """What ``job`` has done so far: its latest event and the federation ledger's entries
        written while it ran (from its RUNNING event to its end; jobs run one at a time)."""
        events = self.store.events_after(job.job_id, 0)
        running = [e.time for e in events if e.state == RUNNING]
        last = events[-1].message if events else ""
        if not running:
            return JobProgress(last_event=last)
        since = datetime.fromisoformat(running[0])
        until = datetime.fromisoformat(events[-1].time) if job.state in TERMINAL else None
        entries = [
            e for e in self.config.ledger().entries
            if since <= datetime.fromisoformat(e.time) and (until is None or datetime.fromisoformat(e.time) <= until)
        ]
        if not entries:
            return JobProgress(last_event=last)
        spent = CombinedAccountant().compose(ComposedDpEvent([e.dp_event() for e in entries])).epsilon(self.config.delta)
        latest = entries[-1]
        return JobProgress(
            epsilon_spent=spent.epsilon, phase=latest.phase, round=int(latest.metadata.get("round", 0)),
            survivors=tuple(latest.metadata.get("survivors", ())), last_event=last,
        )

    def log_events(self) -> None:
        """Log each new event of the jobs not yet finished when last looked at (phase, round, outcome)."""
        for job in self.store.jobs(UNFINISHED):
            self._logged.setdefault(job.job_id, 0)
        for job_id, seen in list(self._logged.items()):
            for event in self.store.events_after(job_id, seen):
                log.info("job %s %s: %s", job_id, event.state, event.message)
                self._logged[job_id] = event.seq
                if event.state in TERMINAL:
                    del self._logged[job_id]

    def job_message(self, job: JobRow) -> pb.Job:
        progress = self.progress(job)
        spent = progress.epsilon_spent
        if job.state == SUCCEEDED:
            statement = json.loads((self.config.job_dir(job.job_id) / "release" / "privacy.json").read_text())
            spent = float(statement["epsilon"])
        return pb.Job(
            job_id=job.job_id,
            state=pb.JobState.Value(job.state),
            error=job.error,
            epsilon_planned=job.epsilon_planned,
            epsilon_spent=spent,
            created=job.created,
            updated=job.updated,
            flower_run_id=job.flower_run_id,
            release_files=[p.name for p in self.release_files(job.job_id)] if job.state == SUCCEEDED else [],
            spec=pb.JobSpec(**job.spec),
            phase=progress.phase,
            round=progress.round,
            survivors=list(progress.survivors),
            last_event=progress.last_event,
        )


@dataclass(frozen=True)
class JobProgress:
    """A job's progress as ``fedsynth job status`` shows it (see :meth:`Coordinator.progress`)."""

    epsilon_spent: float = 0.0
    phase: str = ""
    round: int = 0
    survivors: tuple[str, ...] = ()
    last_event: str = ""


def _toml(values: Mapping[str, Any]) -> str:
    """A flat TOML table (JSON's string escaping is valid TOML)."""
    return "".join(f"{k} = {json.dumps(v) if isinstance(v, str) else repr(v)}\n" for k, v in values.items())


def spec_dict(spec: pb.JobSpec) -> dict[str, Any]:
    """The set fields of a JobSpec as a plain dict (proto3 defaults mean "unset")."""
    return {field.name: value for field, value in spec.ListFields()}


class Servicer(pb_grpc.CoordinatorServicer):
    """gRPC adapter over :class:`Coordinator`."""

    def __init__(self, coordinator: Coordinator, stopping: threading.Event) -> None:
        self.coordinator = coordinator
        self.stopping = stopping

    def _job(self, job_id: str, context: grpc.ServicerContext) -> JobRow:
        job = self.coordinator.store.get(job_id)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r}")
        return job

    def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.ServicerContext) -> pb.Job:  # noqa: N802
        try:
            job = self.coordinator.submit(spec_dict(request.spec))
        except SpecError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (BudgetExceeded, BudgetError) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return self.coordinator.job_message(job)

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:  # noqa: N802
        return self.coordinator.job_message(self._job(request.job_id, context))

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:  # noqa: N802
        return pb.ListJobsResponse(jobs=[self.coordinator.job_message(j) for j in self.coordinator.store.jobs()])

    def StreamEvents(self, request: pb.StreamEventsRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:  # noqa: N802
        self._job(request.job_id, context)
        seq = request.after_seq
        while context.is_active() and not self.stopping.is_set():
            events = self.coordinator.store.events_after(request.job_id, seq)
            for event in events:
                seq = event.seq
                yield pb.JobEvent(seq=event.seq, time=event.time, message=event.message, state=pb.JobState.Value(event.state))
            if not events and self.coordinator.store.get(request.job_id).state in TERMINAL:
                return
            self.stopping.wait(EVENT_POLL_S)

    def FetchRelease(self, request: pb.FetchReleaseRequest, context: grpc.ServicerContext) -> Iterator[pb.ReleaseChunk]:  # noqa: N802
        job = self._job(request.job_id, context)
        if job.state != SUCCEEDED:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {job.job_id} has no release (state {job.state})")
        files = self.coordinator.release_files(job.job_id)
        if request.file:
            files = [p for p in files if p.name == request.file]
            if not files:
                context.abort(grpc.StatusCode.NOT_FOUND, f"the release of job {job.job_id} has no file {request.file!r}")
        for path in files:
            with open(path, "rb") as f:
                while True:
                    data = f.read(CHUNK)
                    last = len(data) < CHUNK
                    yield pb.ReleaseChunk(file=path.name, data=data, last=last)
                    if last:
                        break

    def GetLedger(self, request: pb.GetLedgerRequest, context: grpc.ServicerContext) -> pb.LedgerResponse:  # noqa: N802
        try:
            ledger = self.coordinator.config.ledger()
        except LedgerCorrupt as exc:
            context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
        epsilon = ledger.epsilon() if len(ledger) else None
        return pb.LedgerResponse(
            epsilon=epsilon.epsilon if epsilon else 0.0,
            delta=ledger.delta,
            cap=ledger.cap_epsilon,
            method=epsilon.method if epsilon else "",
            entries=[
                pb.LedgerEntry(
                    seq=e.seq, time=e.time, phase=e.phase, mechanism=e.mechanism, event_json=json.dumps(e.event),
                    metadata_json=json.dumps(e.metadata), prev_hash=e.prev_hash, hash=e.hash,
                )
                for e in ledger.entries
            ],
        )


def _credentials(config: CoordinatorConfig) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(config.private_key.read_bytes(), config.certificate.read_bytes())])


def serve(config_path: Path) -> int:
    """``fedsynth coordinator``: serve the API and run the scheduler until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = CoordinatorConfig.load(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    coordinator = Coordinator(config, FlowerRuns(config))
    stopping = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_CoordinatorServicer_to_server(Servicer(coordinator, stopping), server)
    if config.insecure:
        port = server.add_insecure_port(config.listen)
    else:
        port = server.add_secure_port(config.listen, _credentials(config))
    server.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    unfinished = coordinator.store.jobs(UNFINISHED)
    log.info(
        "coordinator listening on %s (%s); %d unfinished job(s) resumed; federation ledger %s",
        f"{config.listen.rpartition(':')[0]}:{port}", "insecure" if config.insecure else "TLS", len(unfinished),
        config.ledger_path,
    )
    while not stopping.is_set():
        try:
            coordinator.tick()
        except Exception:  # a broken tick must not stop the service; it is retried
            log.exception("scheduler tick failed")
        stopping.wait(TICK_S)
    server.stop(grace=5).wait()
    return 0
