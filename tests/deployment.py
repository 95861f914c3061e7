"""Helpers for tests that start real Flower processes (SuperLink, SuperNodes, the `flwr` CLI).

Imported by the deployment tests as ``from deployment import ...`` (pytest puts ``tests/`` on
``sys.path``, as it does for ``noise_checks``).
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
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent  # flwr's console scripts live next to the interpreter

READY_DEADLINE_S = 90  # SuperLink accepting connections
STOP_DEADLINE_S = 30  # every process gone after SIGTERM (then SIGKILL)
TAG_VARIABLE = "FEDSYNTH_DEPLOYMENT_TEST"  # inherited by every descendant of a started process


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML) for Flower's `k=v` config parser."""
    assert '"' not in value, f"Flower's k=v parser cannot carry a double quote: {value!r}"
    return json.dumps(value)


class Processes:
    """Every process a test starts, tagged so that their descendants can be found too.

    Flower starts children of its own (SuperExec, `flwr-serverapp`, `flwr-clientapp`; the
    SuperLink's SuperExec in a session of its own), so killing the direct children is not
    enough. Each started process gets a unique environment variable, which every descendant
    inherits; on Linux the test finds them all by it in /proc.
    """

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.tag = f"fedsynth-deployment-{uuid.uuid4().hex}"
        self.started: dict[str, subprocess.Popen] = {}

    def start(
        self,
        name: str,
        args: list[str],
        flwr_home: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        *,
        stdout: Path | None = None,
    ) -> subprocess.Popen:
        """Start ``args`` with its own ``FLWR_HOME``; output goes to ``<logs>/<name>.log``.

        ``env`` adds to (or overrides) the environment below; ``cwd`` defaults to the log
        folder. With ``stdout``, standard output goes to that file and only standard error to
        the log.
        """
        flwr_home.mkdir(parents=True, exist_ok=True)
        full_env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            # SuperExecs poll for new ClientApp/ServerApp tasks every 1 s by default; every
            # secure round has 4 stages, each waiting for one such poll.
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
            **(env or {}),
            TAG_VARIABLE: self.tag,
        }
        log = open(self.logs / f"{name}.log", "wb")  # a file, not a pipe: a full pipe blocks Flower
        out = open(stdout, "wb") if stdout is not None else None
        try:
            proc = subprocess.Popen(
                args,
                stdout=out if out is not None else log,
                stderr=log if out is not None else subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd if cwd is not None else self.logs,
            )
        finally:
            log.close()
            if out is not None:
                out.close()
        self.started[name] = proc
        return proc

    def run(
        self,
        name: str,
        args: list[str],
        flwr_home: Path,
        timeout_s: float,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command (a `flwr` CLI call) to its end; stdout and stderr kept apart.

        Raises ``subprocess.TimeoutExpired`` (after killing it) if it outlives ``timeout_s``.
        """
        out_path = self.logs / f"{name}.out"
        proc = self.start(name, args, flwr_home, env, cwd, stdout=out_path)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        return subprocess.CompletedProcess(
            args,
            code,
            out_path.read_text(encoding="utf-8", errors="replace"),
            (self.logs / f"{name}.log").read_text(encoding="utf-8", errors="replace"),
        )

    def log(self, name: str, tail: int = 4000) -> str:
        text = (self.logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")
        return text[-tail:]

    def all_logs(self) -> str:
        return "\n".join(f"===== {name} =====\n{self.log(name)}" for name in self.started)

    def tagged(self) -> set[int]:
        """Live (non-zombie) processes carrying this test's tag, or the started ones without /proc."""
        proc_dir = Path("/proc")
        if not proc_dir.is_dir():
            return {p.pid for p in self.started.values() if p.poll() is None}
        needle = f"{TAG_VARIABLE}={self.tag}".encode()
        found = set()
        for entry in proc_dir.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if state not in ("Z", "X"):
                found.add(int(entry.name))
        return found

    def stop_all(self) -> set[int]:
        """SIGTERM the started processes (last started first), then SIGKILL stragglers.

        Returns the tagged processes still alive at the end (should be none).
        """
        for proc in reversed(list(self.started.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_DEADLINE_S)
        # Flower's own children watch their parent's pid and leave shortly after it.
        for pid in wait_for_exit(self.tagged(), STOP_DEADLINE_S):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for_exit(self.tagged(), 5)
        return self.tagged()


def wait_for_exit(pids: set[int], deadline_s: float) -> set[int]:
    """Block until every process in ``pids`` has exited, or ``deadline_s`` passed; return the rest.

    Waits on Linux pidfds (readable when the process exits), so it also works for Flower's
    grandchildren, which are not the test's to ``wait`` on.
    """
    fds: dict[int, int] = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:  # already gone
            pass
    deadline = time.monotonic() + deadline_s
    try:
        while fds and (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(fds), [], [], remaining)
            for fd in ready:
                os.close(fd)
                del fds[fd]
        return set(fds.values())
    finally:
        for fd in fds:
            os.close(fd)


def poll_until(condition: Callable[[], bool], deadline_s: float, proc: subprocess.Popen, interval_s: float = 0.2) -> bool:
    """Check ``condition`` until it holds or ``deadline_s`` passes; return whether it held.

    For states nothing signals (a port starting to listen, a node listed online): between
    checks the test waits on ``proc``, the process that should reach that state, so a crash
    ends the wait at once instead of after a blind sleep.
    """
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        try:
            proc.wait(timeout=interval_s)
        except subprocess.TimeoutExpired:
            pass
    return True


def wait_until_listening(port: int, proc: subprocess.Popen, deadline_s: float) -> None:
    """Readiness check: until ``port`` accepts TCP connections (or the process died)."""

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    if not poll_until(listening, deadline_s, proc):
        raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {deadline_s} s")


def operator_home(folder: Path, connection: str, address: str, root_certificates: Path) -> Path:
    """An operator's ``$FLWR_HOME``: one named connection to the SuperLink over TLS."""
    home = folder / "operator-flwr"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{connection}"\n\n[superlink.{connection}]\naddress = "{address}"\n'
        f"root-certificates = {json.dumps(str(root_certificates))}\n",
        encoding="utf-8",
    )
    return home
