"""Flower's SuperExec, its tasks forked from a warm process instead of started as new interpreters.

Flower 1.41 starts every task (a ClientApp for each message an organisation receives, a ServerApp
for each job) as a fresh Python process that imports Flower, fedsynth, torch and jax: seconds of
CPU before the task does anything. A process that has imported all of that once, and runs Flower's
own SuperExec loop (``flwr.supercore.superexec.run_superexec``) with :class:`ForkExecutor` as its
executor, starts each task as a fork of itself in milliseconds. The warm process never runs a task
itself, so every task starts from the same state and nothing one task changes in memory reaches
the next.

Only imports are done in the warm process, and no jax backend is initialised. A fork copies the
forking thread only; the warm process's other threads (Flower's parent-process monitor, the native
threads of OpenBLAS and the allocator, which are fork-safe) hold nothing a task needs. Computing in
the warm process would start thread pools a fork cannot carry, and is not done.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Mapping

from flwr.supercore.constant import TaskType
from flwr.supercore.exit.exit_handler import registered_exit_handlers
from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult

#: Runs one task in the fork (Flower's ``run_clientapp`` or ``run_serverapp`` with the spec's token).
Runner = Callable[[ExecutionSpec], None]


class ForkExecutor:
    """Flower's SuperExec executor interface: tasks of the types in ``runners`` in a fork of this
    process; other task types go to Flower's ``SubprocessExecutor``.

    ``prepare`` runs in this process before every fork; a task closes ``private_fds`` before it runs.
    """

    def __init__(
        self,
        runners: Mapping[TaskType, Runner],
        prepare: Callable[[], None] = lambda: None,
        private_fds: tuple[int, ...] = (),
    ) -> None:
        self.fallback = SubprocessExecutor()
        self.owner = os.getpid()
        self.runners, self.prepare, self.private_fds = runners, prepare, private_fds

    def get_eligible_capacity(self, supported_task_types, *, insecure=False, root_certificates_path=None):  # noqa: ANN001, ANN201
        return self.fallback.get_eligible_capacity(
            supported_task_types, insecure=insecure, root_certificates_path=root_certificates_path
        )

    def wait_for_capacity(self, task_type=None, *, fab_hash=None, insecure=False, root_certificates_path=None) -> None:  # noqa: ANN001
        return None

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        runner = self.runners.get(spec.task_type)
        if runner is None:
            return self.fallback.launch(spec)
        self.prepare()
        if os.fork() == 0:
            for fd in self.private_fds:
                os.close(fd)
            run_in_child(runner, spec)  # never returns
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished tasks (they are this process's children)."""
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass

    def close(self) -> None:
        if os.getpid() == self.owner:  # not in a task's fork, which inherits this object
            self.reconcile()


def run_in_child(runner: Runner, spec: ExecutionSpec) -> None:
    """One task, as Flower's own task command runs it; then this fork exits with its code."""
    registered_exit_handlers.clear()  # the warm process's handlers are not this task's
    code = 1
    try:
        runner(spec)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 (the fork must end here, with what went wrong in its log)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
