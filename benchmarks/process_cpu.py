"""CPU time of every process a benchmarked command starts, also those that outlive their parent.

``getrusage(RUSAGE_CHILDREN)`` counts a process's CPU time only once it is reaped by its parent,
up the tree to the benchmark. Processes that outlive their parent are not: Ray's workers and
daemons (killed with their raylet at the end of a simulation), or a deployment's warm
SuperExecs (they end just after their SuperNode). They are re-parented to init and their CPU
time is lost, so a job's "CPU busy" share came out low (39% for the 100-organisation simulation,
while the otherwise quiet machine was 79% busy).

:func:`adopt_orphans` makes the benchmark the reaper of its descendants' orphans (Linux
``PR_SET_CHILD_SUBREAPER``); after the command ends, :func:`reap_orphans` stops the orphans it
adopted (SIGTERM, then SIGKILL) and reaps them, so that :func:`children_cpu_s` holds the CPU time
of the command's whole process tree.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def adopt_orphans() -> None:
    """Become the reaper of this process's orphaned descendants (raises ``OSError`` off Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def children() -> list[int]:
    """The process ids whose parent is this process (from ``/proc``)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == me:
            found.append(int(stat.parent.name))
    return found


def reap_orphans(grace_s: float = 20.0) -> None:
    """Stop every child this process still has (SIGTERM, SIGKILL after ``grace_s``) and reap it."""
    left = children()
    for pid in left:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while left:
        left = [pid for pid in left if not _reaped(pid)]
        if left and time.monotonic() > deadline:
            for pid in left:
                _signal(pid, signal.SIGKILL)
            deadline = float("inf")
        if left:
            time.sleep(0.05)


def children_cpu_s() -> float:
    """User + system CPU seconds of every child process this one has reaped (with their trees)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True
