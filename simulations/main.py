"""``fedsynth simulate``: a whole federation on one machine, from one table to a release."""

from __future__ import annotations

import argparse
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

from ..client.app import build_client_app, org_name
from ..client.guard import Guard, GuardPolicy
from ..client.organisation import Organisation
from ..common.accounting import BudgetError, BudgetExceeded
from ..common.discovery import DiscoveryError
from ..common.identity import simulated_federation
from ..common.progress import ProgressReporter
from ..common.schema import Schema, SchemaError, load_schema
from ..common.secagg_graph import SecAggGraph
from ..common.secure_sum import SecureRangeError
from ..server.job import JobConfig, preflight, run_job
from ..server.jobspec import JOB_OPTIONS, default_labels, job_config
from ..server.evaluation import headline
from ..server.release import Release
from ..server.secure_sum import JobRefused, RoundAborted
from .engine import Shared, run_in_simulation
from .split import SplitError, split_table


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def simulation_app(parties: list, config: JobConfig, guards: Path):
    """ClientApp whose node ``partition-id`` = i holds ``parties[i]``, behind its own privacy guard.

    Every organisation's guard judges the job at pre-flight and every round before its vector is
    computed, as a deployed daemon's would; its ledger lives under ``guards`` for this job, its
    cap is the job's epsilon. Each signs its SecAgg+ keys with a signing key made for this run,
    under the run's roster (``common.identity.simulated_federation``).
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
        table = tables[int(context.node_config["partition-id"])]
        return Organisation(name, lambda _schema: table.get(), accepts=config.schema, guard=Guard(name, policy))

    tables = [Shared(party) for party in parties]

    return build_client_app(make_org, identities=simulated_federation(config.parties))


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
    with tempfile.TemporaryDirectory(prefix="fedsynth-guards-") as guards:
        return run_in_simulation(
            lambda grid, context: run_job(grid, context, config, progress),
            simulation_app(parties, config, Path(guards)),
            config.parties,
            ray_address=ray_address,
        )


def config_from_args(args: argparse.Namespace, schema: Schema) -> JobConfig:
    """The job that ``fedsynth simulate``'s (resolved) options describe."""
    values = {o.name: getattr(args, o.dest) for o in JOB_OPTIONS}
    return job_config(values, schema=schema, out=args.out, ledger=args.ledger, cap=args.cap)


def run_simulate(args: argparse.Namespace) -> int:
    """The CLI entry: validate and plan first (refusing before any data moves), then run."""
    started = time.time()
    try:
        if args.ray_address is not None:
            check_ray_address(args.ray_address)
        schema = load_schema(args.schema)
        refuse_draft(schema, args.schema)
        if args.labels is None and default_labels(schema) == "generator":
            say(f"schema '{schema.name}' names no label column, so the release's columns all "
                "come from the generator (--labels generator; all budget to the generator)")
        config = config_from_args(args, schema)
        plan = preflight(config)
        say(
            f"plan: epsilon {config.epsilon:g}, delta {config.delta:g}, {config.parties} parties, "
            f"t={config.min_survivors}, SecAgg+ {graph_words(plan.graph)}; every marginal measured with noise std "
            f"{plan.generator.sigma:.1f} counts"
            + (f"; teacher DP-SGD noise multiplier {plan.teacher.noise_multiplier:.2f}" if plan.teacher else "")
            + (f"; first, schema discovery with epsilon {plan.discovery.epsilon:g} (the marginals' noise is "
               "re-planned on the discovered schema)" if plan.discovery else "")
        )
        table = schema.read_csv(args.data)
        schema.validate(table, strict=True)
        parties = split_table(table, config.parties, args.split, schema.label, args.seed)
        say(f"split {args.data.name} into {config.parties} parties ({args.split})")
        with ProgressReporter() as progress:  # a bar on a terminal, plain lines otherwise
            release = simulate(config, parties, progress, ray_address=args.ray_address)
    except (BudgetError, BudgetExceeded, DiscoveryError, SchemaError, SecureRangeError, SplitError, JobRefused, RoundAborted,
            ValueError, OSError) as exc:
        say(f"fedsynth simulate: {exc}")
        say("nothing was released")
        return 2
    print_summary(release, time.time() - started)
    return 0


def refuse_draft(schema: Schema, path: Path) -> None:
    """A draft schema (read from private data) never runs a job: name the line to delete."""
    if not schema.draft:
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    number = next((i + 1 for i, line in enumerate(lines) if re.match(r'\s*"?draft"?\s*[:=]', line)), None)
    where = f"line {number} of {path}" if number else f"the 'draft' key of {path}"
    raise SchemaError(
        f"{path}: schema '{schema.name}' is a DRAFT read from private data (draft: true). Review every "
        f"bound, bin and category list with the data steward, replace them with public knowledge, then "
        f"delete {where} (`{lines[number - 1].strip() if number else 'draft: true'}`)"
    )


def graph_words(graph: SecAggGraph) -> str:
    if graph.complete:
        return "complete graph"
    return f"neighbourhoods of {graph.num_shares} at Shamir threshold {graph.threshold}"


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
    if "evaluation" in s:
        print(f"  federated evaluation: {headline(s['evaluation'])}")
    print(f"  a readable report (HTML, no privacy cost): fedsynth report {release.path}")
