"""``fedsynth superlink -- FLAGS``: Flower's SuperLink, each job's ServerApp forked from a warm process.

Flower 1.41's SuperLink (``--isolation subprocess``, its default) starts its own SuperExec, which
starts each job's ServerApp as a new ``flwr-serverapp`` process; that process imports fedsynth,
torch, jax and mbi (8 s of wall time measured on a loaded 2-core machine) before the job's first
round. ``fedsynth superlink -- FLAGS`` runs ``flower-superlink FLAGS --isolation process`` and, in
place of the SuperExec Flower would start, Flower's own SuperExec loop in a process that has
imported the ServerApp (``fedsynth.server.app``) and forks each job's ServerApp from itself
(``common.warm_exec``). It connects to the SuperLink's Runtime API as Flower's own would: the
SuperLink's host and port (a bind-all host read as loopback), over TLS with the SuperLink's CA
unless ``--insecure``, with the SuperLink's SuperExec secret when ``--superexec-auth-secret-file``
is given. ``fedsynth superlink`` stays as the two processes' supervisor: when either ends (the
warm process cannot import the ServerApp or reach the SuperLink, an OOM kill), it stops the other
and exits with an error, so that systemd, compose or Kubernetes start both again; jobs do not wait
on a SuperLink whose ServerApps nobody starts. SIGTERM and SIGINT stop both. The SuperLink is
Flower's ``flower-superlink`` with its HTTP middleware scoped to the requests each layer acts on
(``common.lean_http``: the layers that hand Fleet and Runtime requests on unchanged are skipped
for them), started from this module (``python -m fedsynth.server.link superlink FLAGS``).

Privacy: the warm process is the coordinator's; it holds imported code only, and each job's
ServerApp is a fresh fork of it, so nothing one job leaves in memory reaches the next.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from importlib import import_module
from queue import Queue

from flwr.supercore.address import resolve_bind_address
from flwr.supercore.auth.superexec_secret import load_superexec_auth_secret
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, TaskType
from flwr.supercore.logger import mirror_output_to_queue, restore_output
from flwr.supercore.superexec import run_superexec as superexec
from flwr.supercore.superexec.executor.types import ExecutionSpec
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink, flower_superlink
from flwr.superlink.runtime import run_serverapp

from ..common.lean_http import lean_superlink
from ..common.warm_exec import ForkExecutor

#: Imported once by the warm process: the ServerApp and everything a job imports.
WARM_MODULES = ("fedsynth.server.app", "fedsynth.server.job")
#: Seconds a process has to end after SIGTERM before it is killed.
STOP_S = 20


def serverexec_args(flags: list[str]) -> list[str]:
    """The warm ServerApp executor's arguments for a SuperLink started with ``flags``: the
    Runtime API address, TLS setting and SuperExec secret Flower's own SuperExec would get
    (flags flower-superlink would refuse end the command here, with Flower's message)."""
    link = _parse_args_run_superlink().parse_args(flags)
    host = f"[{link.host}]" if ":" in link.host else link.host
    tls = ["--insecure"] if link.insecure else ["--root-certificates", str(link.ssl_ca_certfile)]
    secret = [] if link.superexec_auth_secret_file is None else ["--superexec-auth-secret-file", str(link.superexec_auth_secret_file)]
    return ["--runtime-api-address", resolve_bind_address(f"{host}:{link.port}"), *tls, *secret]


def run_superlink(flags: list[str]) -> int:
    """Run ``flower-superlink FLAGS --isolation process`` and the warm ServerApp executor beside it
    until either ends (then stop the other; exit 1) or this process is told to stop (exit 0).
    An ``--isolation`` among the flags is refused (exit 2): this command sets it."""
    if any(flag == "--isolation" or flag.startswith("--isolation=") for flag in flags):
        print("error: fedsynth superlink runs the SuperLink with --isolation process (its ServerApps are "
              "forked from a warm process); leave --isolation out of the flags", file=sys.stderr)
        return 2
    warm_args = serverexec_args(flags)
    children: list[subprocess.Popen] = []
    stopping: list[int] = []

    def signal_all(signum: int) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        signal_all(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    link = subprocess.Popen([sys.executable, "-m", "fedsynth.server.link", "superlink", *flags, "--isolation", "process"],  # noqa: S603
                            stdin=subprocess.DEVNULL)
    children.append(link)
    warm = subprocess.Popen([sys.executable, "-m", "fedsynth.server.link", "serverexec", *warm_args, "--parent-pid", str(link.pid)],  # noqa: S603
                            stdin=subprocess.DEVNULL)
    children.append(warm)
    print(f"fedsynth superlink: SuperLink pid {link.pid}, ServerApp starter pid {warm.pid}", flush=True)
    if stopping:  # asked to stop while they were starting
        signal_all(stopping[0])
    ended = wait_for_either(link, warm)
    failed = not stopping
    if failed:
        which = "the SuperLink" if ended is link else "the process that starts each job's ServerApp"
        print(f"fedsynth superlink: {which} exited (code {ended.returncode}); stopping the other", file=sys.stderr, flush=True)
        signal_all(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 1 if failed else 0


def wait_for_either(*children: subprocess.Popen) -> subprocess.Popen:
    """The first of ``children`` to end (a signal that interrupts the wait is handled, then waiting goes on)."""
    while True:
        pid, status = os.wait()
        for child in children:
            if child.pid == pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                return child


def run_serverapp_task(spec: ExecutionSpec) -> None:
    """One job's ServerApp, as ``flwr-serverapp --token ...`` runs it (its output mirrored to the SuperLink's log)."""
    log_queue: Queue[str | None] = Queue()
    mirror_output_to_queue(log_queue)
    run_serverapp(
        runtime_api_address=spec.runtime_api_address,
        log_queue=log_queue,
        token=spec.token,
        insecure=spec.insecure,
        certificates=validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure),
        parent_pid=spec.parent_pid,
        runtime_dependency_install=False,
    )
    restore_output()


def run_warm_serverexec(
    runtime_api_address: str, insecure: bool, root_certificates: str | None, secret_file: str | None, parent_pid: int
) -> None:
    """Flower's SuperExec loop against the SuperLink's Runtime API, each ServerApp forked from here."""
    for module in WARM_MODULES:
        import_module(module)
    runners = {TaskType.SERVER_APP: run_serverapp_task}
    superexec.get_executor = lambda *args, **kwargs: ForkExecutor(runners)  # Flower's factory knows no fork executor
    superexec.run_superexec(
        runtime_api_address=runtime_api_address, insecure=insecure, root_certificates_path=root_certificates,
        superexec_auth_secret=load_superexec_auth_secret(secret_file), parent_pid=parent_pid,
        runtime_dependency_install=False,
    )


def state_in_memory(flags: list[str]) -> bool:
    """Whether ``flower-superlink FLAGS`` keeps its state in memory (no ``--database`` file)."""
    return _parse_args_run_superlink().parse_known_args(flags)[0].database == FLWR_IN_MEMORY_DB_NAME


def run_lean_superlink(flags: list[str]) -> None:
    """``flower-superlink FLAGS``, its HTTP middleware scoped to the requests each layer acts on,
    its Fleet and Runtime handlers in place while its state is in memory (``common.lean_http``)."""
    lean_superlink(import_module("flwr.superlink.main"), state_in_memory(flags))
    sys.argv = ["flower-superlink", *flags]
    flower_superlink()


def main(argv: list[str] | None = None) -> None:
    """``superlink FLAGS``: the SuperLink; ``serverexec ...``: the warm ServerApp executor."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["superlink"]:
        run_lean_superlink(args[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m fedsynth.server.link serverexec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-api-address", required=True)
    tls = parser.add_mutually_exclusive_group(required=True)
    tls.add_argument("--insecure", action="store_true")
    tls.add_argument("--root-certificates")
    parser.add_argument("--superexec-auth-secret-file", default=None)
    parser.add_argument("--parent-pid", type=int, required=True)
    if args[:1] != ["serverexec"]:
        parser.error("the first argument is superlink (then flower-superlink's flags) or serverexec")
    parsed = parser.parse_args(args[1:])
    run_warm_serverexec(parsed.runtime_api_address, parsed.insecure, parsed.root_certificates,
                        parsed.superexec_auth_secret_file, parsed.parent_pid)


if __name__ == "__main__":
    main()
