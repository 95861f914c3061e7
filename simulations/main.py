"""``fedsynth simulate``: a whole federation on one machine, from one table to a release."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import tempfile
import time
from pathlib import Path

from fedsynth.client.app import build_client_app, org_name
from fedsynth.client.guard import Guard, GuardPolicy
from fedsynth.client.organisation import Organisation
from fedsynth.common.accounting import BudgetError, BudgetExceeded
from fedsynth.common.schema import Schema, SchemaError, load_schema
from fedsynth.common.secure_sum import SecureRangeError
from fedsynth.common.teacher import TeacherSettings
from fedsynth.server.job import JobConfig, parse_budget_split, preflight, run_job
from fedsynth.server.release import Release
from fedsynth.server.secure_sum import JobRefused, RoundAborted
from fedsynth.simulations.engine import run_in_simulation
from fedsynth.simulations.split import SplitError, split_table


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def simulation_app(parties: list, config: JobConfig, guards: Path):
    """ClientApp whose node ``partition-id`` = i holds ``parties[i]``, behind its own privacy guard.

    Every organisation's guard judges the job at pre-flight and every round before its vector is
    computed, as a deployed daemon's would; its ledger lives under ``guards`` for this job, its
    cap is the job's epsilon.
    """

    def make_org(context) -> Organisation:
        name = org_name(context)
        policy = GuardPolicy(
            ledger=guards / f"{name}.jsonl",
            epsilon_cap=config.epsilon,
            delta=config.delta,
            min_noise_multiplier=0.0,
            min_survivors=max(2, config.min_survivors),
        )
        table = parties[int(context.node_config["partition-id"])]
        return Organisation(name, lambda _schema: table, guard=Guard(name, policy))

    return build_client_app(make_org)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Refuse an address where no Ray head answers (Ray itself would retry for minutes).

    ``HOST:PORT`` (a head's GCS address) or ``ray://HOST:PORT`` (Ray Client).
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray-address {address!r}: expected HOST:PORT of a Ray head, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(
            f"--ray-address {address}: no Ray head answers there ({exc.strerror or exc}); start one with "
            f"`ray start --head --port={port}` on {host}, or leave the option out to run on this machine"
        ) from None


def simulate(config: JobConfig, parties: list, progress=say, ray_address: str | None = None) -> Release:
    """Run ``config`` over the given party tables in Flower's simulation engine (on the Ray
    cluster at ``ray_address``, or a fresh local Ray instance)."""
    logging.getLogger("flwr").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="fedsynth-guards-") as guards:
        return run_in_simulation(
            lambda grid, context: run_job(grid, context, config, progress),
            simulation_app(parties, config, Path(guards)),
            config.parties,
            ray_address=ray_address,
        )


def config_from_args(args: argparse.Namespace, schema: Schema) -> JobConfig:
    t = args.min_survivors if args.min_survivors is not None else max(2, args.parties - 1)
    return JobConfig(
        schema=schema,
        parties=args.parties,
        epsilon=args.epsilon,
        delta=args.delta,
        out=args.out,
        min_survivors=t,
        max_rows=args.max_rows,
        rows=args.rows,
        seed=args.seed,
        ledger=args.ledger,
        cap=args.cap,
        teacher=TeacherSettings(model=args.teacher, steps=args.teacher_steps, sampling_rate=args.teacher_rate),
        labels=args.labels,
        budget_split=parse_budget_split(args.budget_split),
    )


def run_simulate(args: argparse.Namespace) -> int:
    """The CLI entry: validate and plan first (refusing before any data moves), then run."""
    started = time.time()
    try:
        if args.ray_address is not None:
            check_ray_address(args.ray_address)
        schema = load_schema(args.schema)
        config = config_from_args(args, schema)
        plan = preflight(config)
        say(
            f"plan: epsilon {config.epsilon:g}, delta {config.delta:g}, {config.parties} parties, "
            f"t={config.min_survivors}; every marginal measured with noise std "
            f"{plan.generator.sigma:.1f} counts"
            + (f"; teacher DP-SGD noise multiplier {plan.teacher.noise_multiplier:.2f}" if plan.teacher else "")
        )
        table = schema.read_csv(args.data)
        schema.validate(table, strict=True)
        parties = split_table(table, config.parties, args.split, schema.label, args.seed)
        say(f"split {args.data.name} into {config.parties} parties ({args.split})")
        release = simulate(config, parties, ray_address=args.ray_address)
    except (BudgetError, BudgetExceeded, SchemaError, SecureRangeError, SplitError, JobRefused, RoundAborted, ValueError) as exc:
        say(f"fedsynth simulate: {exc}")
        say("nothing was released")
        return 2
    print_summary(release, time.time() - started)
    return 0


def print_summary(release: Release, seconds: float) -> None:
    s = release.statement
    print(f"release written to {release.path}/ in {seconds:.0f} s")
    print(f"  synthetic.csv, synthetic.parquet: {release.rows:,} rows")
    labels = s["plan"]["labels"]
    source = "the generator's own" if labels == "generator" else f"the distilled student's ({labels})"
    print(f"  label column: {source}")
    print(
        f"  privacy.json: ({s['epsilon']:.3f}, {s['delta']:g})-DP per record "
        f"[{s['accountant']} accountant; planned {s['plan']['epsilon_planned']:.3f}], "
        f"{len(s['events'])} mechanisms over {len(s['organisations'])} organisations"
    )
    for phase, spend in s["per_phase"].items():
        print(f"    {phase}: epsilon {spend['epsilon']:.3f} alone")
