"""``fedsynth deploy local``: a real federation on one machine, over TLS on loopback, in one command.

Everything a deployment runs, as separate processes (``deploy/README.md`` and
``docs/deployment.md`` do the same by hand on real hosts):

1. credentials (``server.certs.issue``): a CA, the server certificate for ``localhost`` and
   ``127.0.0.1``, and one SuperNode key pair per organisation;
2. a Flower SuperLink (``fedsynth superlink``: each job's ServerApp forked from a warm process,
   ``server.link``) with TLS and SuperNode authentication (``--enable-supernode-auth``), its
   state in memory (a database serves every poll of every node, and nothing it holds needs to
   outlive this one run; a real deployment keeps ``--database``, ``docs/deployment.md``);
3. every organisation's public key registered with ``flwr supernode register``;
4. one daemon per organisation (``fedsynth client``: its own table, schema, node key and
   privacy guard with its own ledger, checked before it joins; ``client.node``: a warm
   SuperExec next to the SuperNode), and the coordinator service (``fedsynth coordinator``,
   TLS), all starting together;
5. the job, submitted, followed and fetched through the coordinator's API over TLS (the same
   calls as ``fedsynth job submit / events / fetch``);
6. every process it started stopped (SIGTERM, then SIGKILL; their children, which Flower starts,
   included), also on failure and on Ctrl-C.

Privacy: nothing here changes the mechanism; each organisation's table is written into its
own folder and read only by its own daemon, whose guard admits and records every round as in
any deployment. The folder ``--out`` keeps the credentials, configs, ledgers, logs and the
release.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .certs import DEFAULT_HOSTS, issue

BIN = Path(sys.executable).parent  # fedsynth's and Flower's console scripts
READY_S = 120  # a service accepting connections
STOP_S = 20  # a process gone after SIGTERM (then SIGKILL)
TAG = "FEDSYNTH_DEPLOY_LOCAL"  # inherited by every descendant of a started process
CONNECTION = "local"  # the operator's Flower connection name
GUARD_CAP = 10.0  # each organisation's own epsilon cap (its ledger persists in --out)


class DeployError(RuntimeError):
    """The local deployment cannot start or its job failed (the message says which and why)."""


@dataclass(frozen=True)
class Ports:
    """Loopback ports: the SuperLink's, the coordinator's, and each SuperNode's Runtime API."""

    superlink: int = 9092
    coordinator: int = 7000
    first_node: int = 9094

    def nodes(self, parties: int) -> list[int]:
        return [self.first_node + i for i in range(parties)]

    def check_free(self, parties: int) -> None:
        """Refuse, naming the port and its option, when something already listens there."""
        wanted = [(self.superlink, "--superlink-port"), (self.coordinator, "--coordinator-port")]
        wanted += [(p, "--first-node-port") for p in self.nodes(parties)]
        if len({p for p, _ in wanted}) != len(wanted):
            raise DeployError(f"ports overlap: {sorted(p for p, _ in wanted)} (choose other {', '.join(o for _, o in wanted[:3])})")
        for port, option in wanted:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                # As the servers themselves bind: a port that the last run's connections hold
                # in TIME_WAIT is free, one that something listens on is not.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise DeployError(f"port {port} on 127.0.0.1 is taken (choose another with {option})") from None


class Processes:
    """The processes a deployment starts, each tagged so that Flower's children are found too.

    Flower starts children of its own (the SuperLink's SuperExec and ServerApp, the warm
    SuperExec's ClientApp tasks); each started process gets a unique environment variable,
    which every descendant inherits, and :meth:`stop_all` finds them all by it in /proc.
    """

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.tag = uuid.uuid4().hex
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: Sequence[str], flwr_home: Path, *, stdout: Path | None = None) -> subprocess.Popen:
        """Start ``args`` with its own ``FLWR_HOME``; its output goes to ``<logs>/<name>.log``."""
        flwr_home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            TAG: self.tag,
        }
        with open(self.logs / f"{name}.log", "wb") as log:  # a file, not a pipe: a full pipe blocks Flower
            out = open(stdout, "wb") if stdout is not None else log
            try:
                proc = subprocess.Popen(list(args), stdout=out, stderr=log if stdout is not None else subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, cwd=self.logs, start_new_session=True)
            finally:
                if stdout is not None:
                    out.close()
        self.started[name] = proc
        return proc

    def run_all(self, commands: Mapping[str, Sequence[str]], flwr_home: Path, timeout_s: float = 120) -> dict[str, str]:
        """Run short commands side by side to their ends; return each one's standard output by
        name (raise on the first failure)."""
        for name, args in commands.items():
            self.start(name, args, flwr_home, stdout=self.logs / f"{name}.out")
        deadline = time.monotonic() + timeout_s
        return {name: self._finished(name, args, deadline) for name, args in commands.items()}

    def _finished(self, name: str, args: Sequence[str], deadline: float) -> str:
        try:
            code = self.started[name].wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise DeployError(f"`{' '.join(args)}` did not finish in time (see {self.logs / name}.log)") from None
        text = (self.logs / f"{name}.out").read_text(encoding="utf-8", errors="replace")
        if code != 0:
            raise DeployError(f"`{' '.join(args)}` exited {code}: {text}{self.tail(name)}")
        return text

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else ""

    def tagged(self) -> set[int]:
        """Live processes carrying this deployment's tag (its started processes and their children)."""
        needle = f"{TAG}={self.tag}".encode()
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                        found.add(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
        return found

    def stop_all(self) -> set[int]:
        """SIGTERM every started process and its process group at once (as systemd stops a unit's
        processes), SIGKILL what is left after :data:`STOP_S` (their children too); return survivors.

        The group matters for a daemon: its SuperExec, told only by Flower's parent monitor (a
        signal raised in one of its threads), ends only after it has retried its stopped SuperNode
        for some seconds."""
        running = [proc for proc in self.started.values() if proc.poll() is None]
        for proc in running:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # started in its own session: its group is its pid
            except ProcessLookupError:
                pass
        left = wait_for_exit({proc.pid for proc in running}, STOP_S)
        for proc in running:
            if proc.pid in left:
                proc.kill()
            proc.wait()
        for pid in wait_for_exit(self.tagged(), STOP_S):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return wait_for_exit(self.tagged(), 5)


def wait_for_exit(pids: set[int], deadline_s: float) -> set[int]:
    """Block until every process in ``pids`` has exited (Linux pidfds) or the deadline passed."""
    fds: dict[int, int] = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + deadline_s
    try:
        while fds and (remaining := deadline - time.monotonic()) > 0:
            for fd in select.select(list(fds), [], [], remaining)[0]:
                os.close(fd)
                del fds[fd]
        return set(fds.values())
    finally:
        for fd in fds:
            os.close(fd)


def wait_until_listening(port: int, proc: subprocess.Popen, what: str, logs: Processes, name: str) -> None:
    """Until ``port`` accepts connections; fail at once if ``proc`` exits first."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployError(f"{what} exited with {proc.returncode} before listening on {port}:\n{logs.tail(name)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
    raise DeployError(f"{what} did not listen on 127.0.0.1:{port} within {READY_S} s:\n{logs.tail(name)}")


@dataclass(frozen=True)
class Layout:
    """Where a local deployment keeps its files, under ``--out``."""

    root: Path

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def release(self) -> Path:
        return self.root / "release"

    def org(self, name: str) -> Path:
        return self.root / "orgs" / name


def org_config(layout: Layout, name: str, schema: Path, link: str, port: int, delta: float) -> Path:
    """An organisation's daemon config (``client.daemon``): TLS, node key, its own guard, and its
    signing key with the federation's roster (authenticated SecAgg+)."""
    folder = layout.org(name)
    path = folder / "org.toml"
    path.write_text(
        f"[organisation]\nname = {json.dumps(name)}\ndata = \"table.csv\"\nschema = {json.dumps(str(schema))}\n\n"
        f"[superlink]\naddress = {json.dumps(link)}\nroot-certificates = {json.dumps(str(layout.certs / 'ca.crt'))}\n"
        f"auth-key = {json.dumps(str(layout.certs / f'{name}.key'))}\nclientappio-port = {port}\n\n"
        f"[guard]\nledger = \"state/ledger.jsonl\"\nepsilon-cap = {GUARD_CAP!r}\ndelta = {delta!r}\n"
        "min-noise-multiplier = 0.5\nmin-survivors = 2\n\n"
        f"[identity]\nsigning-key = {json.dumps(str(layout.certs / f'{name}.signing.pem'))}\n"
        f"roster = {json.dumps(str(layout.certs / 'roster.toml'))}\n",
        encoding="utf-8",
    )
    return path


def coordinator_config(layout: Layout, ports: Ports, cap: float, delta: float) -> Path:
    path = layout.root / "coordinator.toml"
    certs = layout.certs
    path.write_text(
        f"[coordinator]\nlisten = \"127.0.0.1:{ports.coordinator}\"\nworkdir = \"state\"\n"
        f"certificate = {json.dumps(str(certs / 'server.pem'))}\nprivate-key = {json.dumps(str(certs / 'server.key'))}\n\n"
        f"[federation]\nepsilon-cap = {cap!r}\ndelta = {delta!r}\n\n"
        f"[superlink]\naddress = \"127.0.0.1:{ports.superlink}\"\nroot-certificates = {json.dumps(str(certs / 'ca.crt'))}\n",
        encoding="utf-8",
    )
    return path


def operator_home(layout: Layout, ports: Ports) -> Path:
    """The operator's ``$FLWR_HOME``: one connection to the SuperLink over TLS."""
    home = layout.root / "operator-flwr"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "127.0.0.1:{ports.superlink}"\n'
        f"root-certificates = {json.dumps(str(layout.certs / 'ca.crt'))}\n",
        encoding="utf-8",
    )
    return home


def start_superlink(procs: Processes, layout: Layout, ports: Ports) -> None:
    certs = layout.certs
    link = procs.start("superlink", [
        str(BIN / "fedsynth"), "superlink", "--", "--disable-runtime-dependency-installation",
        "--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile", str(certs / "server.pem"),
        "--ssl-keyfile", str(certs / "server.key"), "--enable-supernode-auth",
        "--host", "127.0.0.1", "--port", str(ports.superlink),
    ], layout.root / "superlink-flwr")  # state in memory: nothing here outlives this one run
    wait_until_listening(ports.superlink, link, "the SuperLink", procs, "superlink")


def register_nodes(procs: Processes, layout: Layout, ports: Ports, names: Sequence[str]) -> None:
    commands = {f"register-{name}": [str(BIN / "flwr"), "supernode", "register", str(layout.certs / f"{name}.pub"),
                                     CONNECTION, "--format", "json"] for name in names}
    answers = procs.run_all(commands, operator_home(layout, ports))  # side by side: each is a Flower CLI start
    for name in names:
        answer = answers[f"register-{name}"]
        if json.loads(answer or "{}").get("success") is not True:
            raise DeployError(f"registering {name}'s node key failed: {answer}")


def start_organisations(procs: Processes, layout: Layout, ports: Ports, tables: Mapping[str, pd.DataFrame],
                        schema: Path, delta: float) -> None:
    """Each organisation's table, config and daemon (``fedsynth client``, which checks its table,
    schema and ledger before it joins: :func:`wait_until_checked`)."""
    fedsynth = str(BIN / "fedsynth")
    for (name, table), port in zip(tables.items(), ports.nodes(len(tables)), strict=True):
        layout.org(name).mkdir(parents=True, exist_ok=True)
        table.to_csv(layout.org(name) / "table.csv", index=False)
        config = org_config(layout, name, schema, f"127.0.0.1:{ports.superlink}", port, delta)
        procs.start(name, [fedsynth, "--log-level", "INFO", "client", "--config", str(config)], layout.org(name) / "flwr")


def wait_until_checked(procs: Processes, names: Sequence[str]) -> None:
    """Until every daemon has passed its checks (it logs ``starting:``); fail if one exits first."""
    deadline = time.monotonic() + READY_S
    for name in names:
        proc = procs.started[name]
        while "\nstarting: " not in procs.tail(name, 10**6):
            if proc.poll() is not None:
                raise DeployError(f"{name}'s daemon exited with {proc.returncode} before joining:\n{procs.tail(name)}")
            if time.monotonic() > deadline:
                raise DeployError(f"{name}'s daemon did not pass its checks within {READY_S} s:\n{procs.tail(name)}")
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass


def start_coordinator(procs: Processes, layout: Layout, ports: Ports, cap: float, delta: float) -> None:
    config = coordinator_config(layout, ports, cap, delta)
    proc = procs.start("coordinator", [str(BIN / "fedsynth"), "--log-level", "INFO", "coordinator", "--config",
                                       str(config)], layout.root / "coordinator-flwr")
    wait_until_listening(ports.coordinator, proc, "the coordinator service", procs, "coordinator")


def run_job(layout: Layout, ports: Ports, schema: Path, options: Mapping[str, Any],
            say: Callable[[str], None]) -> Path:
    """Submit the job over TLS, print its events until it ends, fetch its release."""
    from ..protos import coordinator_pb2 as pb
    from ..protos import coordinator_pb2_grpc as pb_grpc
    from .operator import channel, fetch, follow, job_spec, submit

    with channel(f"127.0.0.1:{ports.coordinator}", layout.certs / "ca.crt") as chan:
        stub = pb_grpc.CoordinatorStub(chan)
        job = submit(stub, job_spec(schema.read_text(encoding="utf-8"), options))
        say(f"job {job.job_id} submitted (planned epsilon {job.epsilon_planned:.4f})")
        done = follow(stub, job.job_id, lambda e: say(f"  {pb.JobState.Name(e.state):<9} {e.message}"))
        if done.state != pb.SUCCEEDED:
            raise DeployError(f"job {job.job_id} ended {pb.JobState.Name(done.state)}: {done.error}")
        fetch(stub, job.job_id, layout.release)
    return layout.release


def deploy_local(tables: Mapping[str, pd.DataFrame], schema: Path, options: Mapping[str, Any], out: Path,
                 ports: Ports = Ports(), say: Callable[[str], None] = print) -> Path:
    """Run one job on a loopback federation of ``tables`` (organisation name -> its table).

    Returns the fetched release folder; stops every process it started, whatever happens.
    Raises :class:`DeployError` (a port taken, a process that does not start, a failed job).
    """
    ports.check_free(len(tables))
    epsilon, delta = float(options["epsilon"]), float(options["delta"])
    layout = Layout(out.resolve())
    if layout.root.exists() and any(layout.root.iterdir()):
        raise DeployError(f"{out} is not empty: give --out a new folder (it keeps certificates, ledgers and logs)")
    layout.logs.mkdir(parents=True, exist_ok=True)
    issue(layout.certs, list(DEFAULT_HOSTS), list(tables))  # every credential: server.certs
    say(f"credentials in {layout.certs}; logs in {layout.logs}")
    procs = Processes(layout.logs)
    stop = _raise_on_sigterm()
    try:
        start_superlink(procs, layout, ports)
        say(f"SuperLink on 127.0.0.1:{ports.superlink} (TLS, node authentication)")
        register_nodes(procs, layout, ports, list(tables))
        start_organisations(procs, layout, ports, tables, schema, delta)
        start_coordinator(procs, layout, ports, cap=epsilon, delta=delta)
        say(f"coordinator on 127.0.0.1:{ports.coordinator} (TLS)")
        wait_until_checked(procs, list(tables))
        say(f"{len(tables)} organisation daemons checked their tables and guards and joined: {', '.join(tables)}")
        return run_job(layout, ports, schema, options, say)
    finally:
        left = procs.stop_all()
        signal.signal(signal.SIGTERM, stop)
        if left:
            say(f"warning: processes still running after stop: {sorted(left)}")
        else:
            say("stopped every process it started")


def _raise_on_sigterm():  # noqa: ANN202 (the previous handler)
    """SIGTERM ends a deployment like Ctrl-C does (its ``finally`` stops what it started)."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)
