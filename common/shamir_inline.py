"""Flower's Shamir secret sharing without a thread pool for every secret.

Flower 1.41's ``flwr.common.secure_aggregation.crypto.shamir`` splits a secret into 16-byte
chunks and shares (or recombines) each chunk in a fresh ``ThreadPoolExecutor``, one pool per
secret. The chunk arithmetic is pure Python (PyCryptodome's GF(2^128)), so under the GIL the
threads compute nothing in parallel; what remains is starting them. A SecAgg+ round shares two
secrets per organisation and recombines one per organisation at the coordinator: at 100
organisations the coordinator's unmask stage spent about 2.3 s of its 4.2 s per round starting
threads (``benchmarks/secure_sum_overhead.py`` under cProfile, before this module).

:func:`run_inline` rebinds the module's ``ThreadPoolExecutor`` to :class:`InlineExecutor`, which
maps in the calling thread, in order. The functions, their shares and their wire format are
unchanged, so a patched side talks to an unpatched one; nothing about secrecy changes. This
module does not import Flower (the caller passes the module, as ``common.secure_prg.harden``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any


class InlineExecutor:
    """The part of ``concurrent.futures.ThreadPoolExecutor`` Flower's Shamir module uses, in-thread."""

    def __init__(self, max_workers: int | None = None) -> None:
        del max_workers  # one thread: the caller's

    def __enter__(self) -> "InlineExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        """``fn`` over the iterables, lazily and in order, as ``Executor.map`` yields it."""
        return map(fn, *iterables)


def run_inline(module: ModuleType) -> None:
    """Make ``module`` (Flower's Shamir module) share and combine in the calling thread.

    Raises ``RuntimeError`` when ``module`` has no ``ThreadPoolExecutor`` binding: Flower's
    Shamir module changed, and this patch must be reviewed rather than silently skipped.
    """
    if not hasattr(module, "ThreadPoolExecutor"):
        raise RuntimeError(
            f"module {module.__name__!r} has no 'ThreadPoolExecutor' (Flower's Shamir sharing changed); "
            "review fedsynth.common.shamir_inline against this Flower version"
        )
    module.ThreadPoolExecutor = InlineExecutor  # type: ignore[attr-defined]
