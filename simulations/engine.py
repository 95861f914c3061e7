"""Run a coordinator job against N simulated organisations in Flower's simulation engine."""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

import functools  # noqa: E402
import logging  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any, Generic, TypeVar  # noqa: E402

import ray  # noqa: E402
from flwr.app import Context  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from flwr.supercore.logger import update_console_handler  # noqa: E402

T = TypeVar("T")


class Shared(Generic[T]):
    """An object the simulated organisations' ClientApp holds, sent to each Ray actor once.

    Flower's Ray backend pickles the whole ClientApp into every message's task, so a table
    the app holds directly travels (and is pickled and unpickled) with every message: at 100
    organisations holding the bundled Adult that was most of the coordinator's CPU. A
    ``Shared`` pickles as a reference into Ray's object store (put there the first time it is
    pickled, inside the running simulation); an actor fetches the object on first :meth:`get`
    and keeps it for the rest of the run.
    """

    def __init__(self, value: T) -> None:
        self._value: T | None = value
        self._ref: ray.ObjectRef | None = None

    def get(self) -> T:
        """The object (fetched from the object store once per process)."""
        if self._value is None:
            self._value = _fetched(self._ref)
        return self._value

    def __reduce__(self) -> tuple[Callable[..., "Shared[T]"], tuple[Any, ...]]:
        if self._ref is None:
            self._ref = ray.put(self._value)
        return _shared_ref, (self._ref,)


def _shared_ref(ref: ray.ObjectRef) -> Shared[Any]:
    shared: Shared[Any] = Shared(None)
    shared._ref = ref
    return shared


@functools.lru_cache(maxsize=None)
def _fetched(ref: ray.ObjectRef) -> Any:
    return ray.get(ref)


class _RunSimulationDeprecation(logging.Filter):
    """Drops Flower's "`run_simulation` is deprecated" banner (``warn_deprecated_feature``).

    fedsynth runs its simulation in-process on purpose (``flwr run`` would need a Flower app
    folder and a SuperLink), so the banner says nothing the user can act on. Only that one
    record is dropped; every other Flower warning still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("DEPRECATED FEATURE")
                    and "`run_simulation` function is deprecated" in str(record.args))


@contextmanager
def _flower_logging() -> Iterator[None]:
    """While the simulation runs, Flower logs at fedsynth's level (``fedsynth --log-level``,
    WARNING by default) and without the ``run_simulation`` banner; both are restored after."""
    flower = logging.getLogger("flwr")
    level, previous = logging.getLogger("fedsynth").getEffectiveLevel(), flower.level
    banner = _RunSimulationDeprecation()
    flower.setLevel(level)
    flower.addFilter(banner)
    update_console_handler(level=min(level, logging.INFO))
    try:
        yield
    finally:
        flower.removeFilter(banner)
        flower.setLevel(previous)
        update_console_handler(level=logging.INFO)


class SimulationFailed(RuntimeError):
    """The coordinator job did not return (its own exception is chained)."""


def run_in_simulation(
    job: Callable[[Grid, Context], T],
    client_app: ClientApp,
    num_parties: int,
    *,
    cpus_per_party: float = 1.0,
    ray_address: str | None = None,
) -> T:
    """Run ``job`` as the ServerApp's main against ``num_parties`` simulated SuperNodes.

    ``ray_address``: an existing Ray cluster to run the simulated SuperNodes on (Ray's
    ``address``, e.g. ``HOST:6379``); Flower's Ray backend passes its ``init_args`` to
    ``ray.init``, and its actor pool then has one actor per ``cpus_per_party`` of the cluster's
    CPUs. None: a fresh Ray instance on this machine. Every node of the cluster needs the same
    Python environment (fedsynth installed); what the ClientApp holds travels to the actors with
    every message, except objects wrapped in :class:`Shared` (sent once).

    Returns the job's return value; an exception inside the job is re-raised here
    (Flower's engine would otherwise only log it and return normally).
    """
    outcome: dict[str, object] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            outcome["value"] = job(grid, context)
        except BaseException as exc:  # re-raised in the caller's thread below
            outcome["error"] = exc

    with _flower_logging():
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_parties,
            backend_config={
                "client_resources": {"num_cpus": cpus_per_party, "num_gpus": 0.0},
                "init_args": {
                    "logging_level": "ERROR",
                    "log_to_driver": False,
                    **({"address": ray_address} if ray_address else {}),
                },
            },
        )
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    if "value" not in outcome:
        raise SimulationFailed("the coordinator job never ran (see Flower's log above)")
    return outcome["value"]  # type: ignore[return-value]
