"""Run a coordinator job against N simulated organisations in Flower's simulation engine."""

from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

import logging  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import TypeVar  # noqa: E402

from flwr.app import Context  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from flwr.supercore.logger import update_console_handler  # noqa: E402

T = TypeVar("T")


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
    Python environment (fedsynth installed); the organisations' tables travel to the actors
    with the ClientApp.

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
