"""The deployment ServerApp (``fedsynth.server.app:app``), configured by Flower run-config.

Run-config keys (all public; ``flwr run <app> <federation> --run-config 'k=v ...'``):
``schema`` (path of the public schema on the coordinator), ``out`` (release directory),
``parties``, ``epsilon``, ``delta``, ``min-survivors`` (0 = parties - 1), ``max-rows``, ``rows`` (0 = the
paid-for noisy count), ``seed``, ``rounds`` and ``per-round`` (generator shape),
``timeout`` (seconds a round waits for organisations; 0 = Flower's default), ``labels``
(sample | argmax | generator), ``budget-split`` (e.g. ``generator=0.7,teacher=0.3``),
``teacher`` (logreg | mlp) and ``teacher-steps``.
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.schema import load_schema
from fedsynth.common.teacher import TeacherSettings
from fedsynth.server.job import JobConfig, parse_budget_split, run_job


def config_from_run_config(run_config: dict) -> JobConfig:
    """A job from Flower run-config values (see the module docstring).

    Flower passes every key with the app's default, so "unset" is 0 (or "" for ``schema``).
    """
    if not str(run_config.get("schema", "")):
        raise ValueError("run-config 'schema' is required: the path of the job's public schema")
    parties = int(run_config["parties"])
    rows = int(run_config.get("rows", 0))
    timeout = float(run_config.get("timeout", 0))
    defaults, teacher = GeneratorSettings(), TeacherSettings()
    return JobConfig(
        schema=load_schema(Path(str(run_config["schema"]))),
        parties=parties,
        epsilon=float(run_config["epsilon"]),
        delta=float(run_config["delta"]),
        out=Path(str(run_config["out"])),
        min_survivors=int(run_config.get("min-survivors", 0)) or max(2, parties - 1),
        max_rows=int(run_config.get("max-rows", 1_000_000)),
        rows=rows or None,
        seed=int(run_config.get("seed", 0)),
        generator=GeneratorSettings(
            rounds=int(run_config.get("rounds", defaults.rounds)),
            per_round=int(run_config.get("per-round", defaults.per_round)),
        ),
        timeout=timeout or None,
        teacher=TeacherSettings(
            model=str(run_config.get("teacher", teacher.model)),
            steps=int(run_config.get("teacher-steps", teacher.steps)),
        ),
        labels=str(run_config.get("labels", "sample")),
        budget_split=parse_budget_split(str(run_config.get("budget-split", "generator=0.7,teacher=0.3"))),
    )


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = config_from_run_config(dict(context.run_config))
    release = run_job(grid, context, config, progress=lambda message: log(INFO, "%s", message))
    log(
        INFO,
        "release written to %s: %d rows, epsilon %.4f (delta %g)",
        release.path,
        release.rows,
        release.statement["epsilon"],
        release.statement["delta"],
    )
