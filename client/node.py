"""An organisation's Flower node without idle time: a prompt SuperNode and a warm SuperExec.

Flower 1.41 runs each message a SuperNode receives in a fresh ``flwr-clientapp`` process,
in both isolation modes: with ``--isolation subprocess`` the SuperNode's own SuperExec starts
it, with ``--isolation process`` an external ``flower-superexec`` does. Each such process
starts an interpreter and imports Flower, fedsynth and, for a teacher round, torch and Opacus
(2-5 s of CPU per message, for every organisation in every round), and three fixed waits add
to every stage of a round: the SuperNode polls the SuperLink every 3 s when it has no
message, waits for the ClientApp's reply in 0.5 s steps, and the SuperExec polls for tasks
every second (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``).

``fedsynth client`` therefore runs the node as two Flower processes, both from this module:

``supernode``
    Flower's ``flower-supernode`` (``--isolation process``), its fixed 3 s and 0.5 s waits
    (``flwr.supernode.start_client_internal``; Flower has no setting for them) replaced by a
    ``common.backoff.Backoff`` (0.1 s between polls for 3 s after activity, then doubling to
    1 s), so that a round does not wait and an idle node costs the SuperLink little (each poll
    is a request it serves); its Runtime API skips the tracing layer while tracing is off
    (``common.lean_http``).
``superexec``
    Flower's SuperExec loop (``run_superexec``, asking its SuperNode's local Runtime API for
    tasks; its fixed 1 s wait replaced by :class:`SuperExecClock`) in a process
    that has imported the ClientApp (``fedsynth.client.app``) and everything its tasks
    import. It stays up across the rounds of a job and across jobs; it launches each
    ClientApp task as Flower's ``run_clientapp`` in a fork of itself (``common.warm_exec``)
    instead of a new interpreter, so a task starts in milliseconds.

Privacy and state: a task's process is a copy of the warm process, which never runs a task
itself, so every task starts from the same state. The warm process keeps one thing of the
organisation: its table, validated under the agreed schema (``client.app.warm_tables``, which
keeps that schema as parsed too), before
the first task and again before any task once the table file or the agreed schema's file
changed (their inodes, sizes and modification and change times), so that a round costs its computation, not a table read, as in
the simulation, whose organisations keep their table for the whole job. Every task still builds
its organisation, guard and identity from the daemon's files, so an edited cap or roster applies
to the next task; it uses the kept table and schema only if both files are still the ones
validated, and reads them itself otherwise. The guard's ledger is never read by the warm process:
each task reads it when a decision needs it, and the ledger on disk, appended and fsynced under
its file lock before a share leaves, is what carries a spend from one round, task or job to the
next. Nothing one task changes in memory reaches the next. The warm process is the daemon's
own, on the organisation's machine, and sends nothing. What a coordinator can see is timing: the
first task after the table file changed takes longer (the table is validated again), as every
task did before.

The SuperExec does not poll while it waits. Each of Flower's asks is an HTTP request through the
SuperNode's web service; asked every 0.1 s during a round (three organisations' SuperExecs took
96 s of CPU in a 380 s job, and their SuperNodes as much again to answer them) they cost more than
the tasks. ``fedsynth client`` joins the two processes by a pipe (:class:`WakePipe`): the SuperNode
writes a byte once it has stored a message and its content (:func:`announce_messages`), and the
SuperExec, which waits on the pipe, asks for the task at once; without a word it still asks once
every :data:`MAX_POLL_S`. A SuperNode whose SuperExec has exited (nobody reads the pipe) stops
with an error instead of taking messages that no task runs, so that the daemon's supervisor
(systemd's ``Restart=on-failure``, compose's ``restart``) starts both again. The byte carries nothing but "a message is here", within the
organisation's own machine.

Every process here also pulls a message's content as soon as it arrives (``common.backoff.
prompt_pulls``): Flower starts a task when the message's header arrives and lets it wait 1 to
10 s for content still on its way.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import time
from collections.abc import Callable
from functools import partial
from importlib import import_module
from types import ModuleType

from flwr.supercore.constant import TaskType
from flwr.supercore.superexec import run_superexec as superexec
from flwr.supercore.superexec.executor.types import ExecutionSpec
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supernode import start_client_internal
from flwr.supernode.cli.flower_supernode import flower_supernode
from flwr.supernode.runtime.run_clientapp import run_clientapp

from ..common.backoff import Backoff, prompt_pulls
from ..common.lean_http import lean_supernode
from ..common.warm_exec import ForkExecutor

#: The wait between two polls after activity (``common.backoff``) ...
FIRST_POLL_S = 0.1
#: ... up to this (an idle node then polls once a second; Flower's own SuperNode every 3 s) ...
MAX_POLL_S = 1.0
#: ... once this long has passed since the last activity (a round's next stage comes sooner).
HOT_S = 3.0
#: The SuperNode's wait between two looks at its own state for the ClientApp's reply (Flower: 0.5 s;
#: a look at memory, no request).
REPLY_POLL_S = 0.01

#: Imported once by the warm SuperExec: the ClientApp and what its tasks import lazily.
WARM_MODULES = ("fedsynth.client.app", "fedsynth.common.teacher", "fedsynth.common.student")


class WakePipe:
    """One end of the pipe from an organisation's SuperNode to its SuperExec: the SuperNode
    signals (:meth:`signal`) that a message is stored; the SuperExec waits for it (:meth:`wait`)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.closed = fd, False
        os.set_blocking(fd, False)

    def signal(self) -> None:
        """Tell the SuperExec a message is here (a full pipe has told it already). Raises SystemExit
        when no SuperExec is left to read it: the SuperNode would take messages that no task runs,
        so it stops and the daemon's supervisor starts both again."""
        try:
            os.write(self.fd, b"\0")
        except BlockingIOError:
            pass
        except BrokenPipeError:
            raise SystemExit(
                "fedsynth client: the SuperExec that runs this organisation's tasks has exited; "
                "the SuperNode stops too, so that the daemon can be started again"
            ) from None

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a signal; True if one came (every pending one is consumed:
        a pipe holds at most 64 KiB). Once the SuperNode has closed its end, every wait lasts ``seconds``."""
        if self.closed:
            time.sleep(seconds)
            return False
        if not select.select([self.fd], [], [], seconds)[0]:
            return False
        try:
            self.closed = not os.read(self.fd, 1 << 16)  # end of file: the SuperNode is gone
        except BlockingIOError:
            return False
        return not self.closed


def announce_messages(module: ModuleType, wake: WakePipe) -> None:
    """Make ``module`` (``flwr.supernode.start_client_internal``) signal ``wake`` whenever its
    ``_pull_and_store_message`` has stored a message with its content (it returns the run's id)."""
    pull_and_store = module._pull_and_store_message

    def pull_store_and_announce(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        run_id = pull_and_store(*args, **kwargs)
        if run_id is not None:
            wake.signal()
        return run_id

    module._pull_and_store_message = pull_store_and_announce


class SuperNodeClock:
    """Stands in for ``time`` in ``flwr.supernode.start_client_internal``: its 3 s wait for a
    message becomes :class:`Backoff`'s, and its 0.5 s waits for a reply (a message is being
    handled) mark activity and last :data:`REPLY_POLL_S`."""

    time = staticmethod(time.time)

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def sleep(self, seconds: float) -> None:
        if seconds >= 3:  # no message from the SuperLink
            self.backoff.idle()
        else:  # waiting for the ClientApp's reply or content to push
            self.backoff.active()
            time.sleep(min(seconds, REPLY_POLL_S))


def run_supernode(argv: list[str], wake_fd: int) -> None:
    """``flower-supernode ARGV`` with its polling waits from :class:`SuperNodeClock`, signalling
    each stored message to its SuperExec on the pipe ``wake_fd``."""
    start_client_internal.time = SuperNodeClock(Backoff(FIRST_POLL_S, MAX_POLL_S, HOT_S))  # type: ignore[attr-defined]
    os.set_inheritable(wake_fd, False)  # for nothing Flower may start
    announce_messages(start_client_internal, WakePipe(wake_fd))
    prompt_pulls(import_module("flwr.supercore.inflatable.inflatable_utils"))  # a message's content, as it arrives
    lean_supernode(import_module("flwr.supernode.main"))  # its Runtime API without a layer that does nothing here
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


class SuperExecClock:
    """Stands in for ``time`` in Flower's SuperExec loop (``run_superexec``) between two asks for a
    task: until the SuperNode signals a message on its :class:`WakePipe`, at most :data:`MAX_POLL_S`."""

    def __init__(self, wake: WakePipe) -> None:
        self.wake = wake

    def sleep(self, _seconds: float) -> None:
        self.wake.wait(MAX_POLL_S)


def run_clientapp_task(spec: ExecutionSpec) -> None:
    """One ClientApp task, as ``flwr-clientapp --token ...`` runs it."""
    run_clientapp(
        runtime_api_address=spec.runtime_api_address,
        token=spec.token,
        insecure=spec.insecure,
        certificates=validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure),
        parent_pid=spec.parent_pid,
        runtime_dependency_install=False,
    )


def log_to_stderr(level: str) -> None:
    """fedsynth's records (the guard's decisions, refusals) go to the daemon's log at ``level``."""
    logger = logging.getLogger("fedsynth")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def run_warm_superexec(runtime_api_address: str, parent_pid: int, wake_fd: int, config: str | None = None) -> None:
    """Flower's SuperExec loop against the SuperNode's Runtime API (loopback, no TLS), warm, asking
    for a task when the SuperNode signals one on the pipe ``wake_fd``; with the daemon's ``config``,
    its table validated before the first task and whenever its file changed."""
    for module in WARM_MODULES:
        import_module(module)
    prepare = (lambda: None) if config is None else partial(import_module("fedsynth.client.app").warm_tables, config)
    prepare()
    superexec.time = SuperExecClock(WakePipe(wake_fd))  # type: ignore[attr-defined]
    runners = {TaskType.CLIENT_APP: run_clientapp_task}
    superexec.get_executor = lambda *args, **kwargs: ForkExecutor(runners, prepare, private_fds=(wake_fd,))  # Flower's factory knows no fork executor
    superexec.run_superexec(runtime_api_address=runtime_api_address, insecure=True, parent_pid=parent_pid)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["supernode"]:  # supernode --wake-fd N FLOWER-SUPERNODE-ARGS (as fedsynth client starts it)
        if args[1:2] != ["--wake-fd"] or len(args) < 3:
            raise SystemExit("usage: python -m fedsynth.client.node supernode --wake-fd N [flower-supernode arguments]")
        run_supernode(args[3:], int(args[2]))
        return
    parser = argparse.ArgumentParser(prog="python -m fedsynth.client.node superexec")
    parser.add_argument("role", choices=["superexec"])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--config", default=None, help="the daemon's config file: its table is validated before the first task and again when it changed")
    parser.add_argument("--wake-fd", type=int, required=True,
                        help="the read end of a pipe on which the SuperNode signals each stored message (fedsynth client sets it)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="level of fedsynth's own records in the daemon's log (default: INFO)")
    parsed = parser.parse_args(args)
    log_to_stderr(parsed.log_level)
    run_warm_superexec(parsed.runtime_api_address, parsed.parent_pid, parsed.wake_fd, parsed.config)


if __name__ == "__main__":
    main()
