"""The ``fedsynth`` command line: the composition root of the package.

Each subcommand imports its implementation lazily, so ``fedsynth schema ...`` does not
start Flower or torch. This module is the only one that imports ``fedsynth.simulations``.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path


def bundled(name: str) -> Path:
    """Path of a file shipped in ``fedsynth/data`` (the default dataset and its schema)."""
    return Path(str(resources.files("fedsynth") / "data" / name))


def _schema_draft(args: argparse.Namespace) -> int:
    from fedsynth.common.schema import run_draft

    return run_draft(args.data, args.out, args.na_values)


def _schema_validate(args: argparse.Namespace) -> int:
    from fedsynth.common.schema import run_validate

    return run_validate(args.data, args.schema)


def _simulate(args: argparse.Namespace) -> int:
    from fedsynth.simulations.main import run_simulate

    return run_simulate(args)


def _client(args: argparse.Namespace) -> int:
    from fedsynth.client.daemon import run_daemon

    return run_daemon(args.config, args.check)


def _coordinator(args: argparse.Namespace) -> int:
    from fedsynth.server.coordinator import serve

    return serve(args.config)


def _job(args: argparse.Namespace) -> int:
    from fedsynth.server.operator import run_job_command

    return run_job_command(args)


def add_simulate_options(sim: argparse.ArgumentParser) -> None:
    sim.add_argument("--data", type=Path, default=bundled("adult.csv"),
                     help="CSV table to split into parties (default: bundled Adult sample)")
    sim.add_argument("--schema", type=Path, default=bundled("adult.schema.yaml"),
                     help="public schema of the table (default: the bundled one)")
    sim.add_argument("--parties", type=int, default=3, help="number of organisations")
    sim.add_argument("--split", default="iid",
                     help="iid | dirichlet:ALPHA (label skew) | by-column:COL")
    sim.add_argument("--epsilon", type=float, default=1.0, help="total privacy budget")
    sim.add_argument("--delta", type=float, default=1e-6, help="total delta")
    sim.add_argument("--min-survivors", type=int, default=None,
                     help="t: organisations that must survive each round (default: parties - 1, "
                     "at least 2)")
    sim.add_argument("--max-rows", type=int, default=None,
                     help="public cap on rows per organisation: each draws a uniform subsample of at most "
                     "this many rows (counts then cost a replaced row's sensitivity; default: no cap)")
    sim.add_argument("--rows", type=int, default=None,
                     help="synthetic rows to release (default: the noisy row count the generator paid for)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the split and the sampling")
    sim.add_argument("--out", type=Path, default=Path("release"), help="release directory")
    sim.add_argument("--ledger", type=Path, default=None,
                     help="the federation's privacy ledger, shared by its jobs (default: a fresh "
                     "one inside the release)")
    sim.add_argument("--cap", type=float, default=None,
                     help="the federation's total epsilon cap over all its jobs (default: --epsilon)")
    sim.add_argument("--labels", choices=("sample", "argmax", "generator"), default="sample",
                     help="label column of the release: drawn from the distilled student's "
                     "probabilities (sample), its most likely class (argmax), or the generator's own "
                     "(generator: no teacher is trained, all budget goes to the generator)")
    sim.add_argument("--budget-split", default="generator=0.7,teacher=0.3",
                     help="shares of the budget per phase, e.g. generator=0.7,teacher=0.3")
    sim.add_argument("--teacher", choices=("logreg", "mlp"), default="logreg",
                     help="the DP teacher's model (federated DP-SGD)")
    sim.add_argument("--teacher-steps", type=int, default=30, help="DP-SGD steps of the teacher")
    sim.add_argument("--teacher-rate", type=float, default=1.0,
                     help="Poisson sampling rate of each DP-SGD step (1 = full batches, the default: "
                     "see fedsynth.common.teacher)")
    sim.add_argument("--ray-address", default=None,
                     help="run the simulated organisations on this existing Ray cluster (HOST:PORT of its "
                     "head; every node needs fedsynth installed); default: a fresh Ray instance on this machine")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsynth",
        description="Federated, differentially private synthetic tabular data.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate",
        help="run a whole federation on one machine and write a release",
        description="Split a table into parties, run the federation in Flower's simulation "
        "engine with real SecAgg+, and write a release directory.",
    )
    add_simulate_options(sim)
    sim.set_defaults(func=_simulate)

    client = sub.add_parser(
        "client",
        help="run an organisation's daemon (a Flower SuperNode with fedsynth's ClientApp)",
        description="Check the organisation's config file, its local table against the schema it "
        "accepts and its privacy guard's ledger, then run flower-supernode with fedsynth's ClientApp "
        "(see fedsynth.client.daemon for the file).",
    )
    client.add_argument("--config", type=Path, required=True, help="the organisation's daemon config (TOML)")
    client.add_argument("--check", action="store_true", help="only check the config and the table, then exit")
    client.set_defaults(func=_client)

    coordinator = sub.add_parser(
        "coordinator",
        help="serve the coordinator's gRPC API and run jobs on the SuperLink",
        description="Serve protos/coordinator.proto (submit, follow, fetch jobs; read the federation "
        "ledger), running each job on the SuperLink (see fedsynth.server.coordinator for the file).",
    )
    coordinator.add_argument("--config", type=Path, required=True, help="the coordinator's config (TOML)")
    coordinator.set_defaults(func=_coordinator)

    job = sub.add_parser("job", help="submit and follow jobs on a coordinator service")
    from fedsynth.server.operator import add_job_commands

    add_job_commands(job)
    job.set_defaults(func=_job)

    schema = sub.add_parser("schema", help="draft or validate a public schema")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    draft = schema_sub.add_parser(
        "draft", help="draft a schema from a data file (the draft itself is private!)"
    )
    draft.add_argument("data", type=Path, help="CSV file to draft from")
    draft.add_argument("-o", "--out", type=Path, default=Path("schema.draft.yaml"))
    draft.add_argument(
        "--na-values", nargs="*", default=[], help="tokens that mean missing (e.g. '?' or 'N')"
    )
    draft.set_defaults(func=_schema_draft)
    validate = schema_sub.add_parser("validate", help="check a data file against a schema")
    validate.add_argument("data", type=Path)
    validate.add_argument("--schema", type=Path, required=True)
    validate.set_defaults(func=_schema_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
