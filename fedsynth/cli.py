"""The ``fedsynth`` command line: the composition root of the package.

Each subcommand imports its implementation lazily, so ``fedsynth schema ...`` does not
start Flower or torch (the job definition, ``server.jobspec``, imports neither). This module
and ``fedsynth.api`` (the Python API, the other composition root) are the only ones that
import ``fedsynth.simulations``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

from . import __version__
from .server.jobspec import JOB_OPTIONS, JobFileError, Option, add_arguments, defaults, given, read_job_file

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def bundled(name: str) -> Path:
    """Path of a file shipped in ``fedsynth/data`` (the default dataset and its schema)."""
    return Path(str(resources.files("fedsynth") / "data" / name))


def _schema_draft(args: argparse.Namespace) -> int:
    from .common.schema import run_draft

    return run_draft(args.data, args.out, args.na_values)


def _schema_validate(args: argparse.Namespace) -> int:
    from .common.schema import run_validate

    return run_validate(args.data, args.schema)


def _schema_discover(args: argparse.Namespace) -> int:
    from .simulations.discover import run_discover

    return run_discover(args)


def _simulate(args: argparse.Namespace) -> int:
    from .simulations.main import run_simulate

    try:
        resolved = resolve_simulate_options(args)
    except JobFileError as exc:
        print(f"fedsynth simulate: {exc}", file=sys.stderr)
        return 2
    return run_simulate(resolved)


def _deploy_local(args: argparse.Namespace) -> int:
    """Split the table as ``simulate`` does, then run the job on a loopback deployment."""
    from .common.schema import SchemaError, load_schema
    from .server.deploy_local import DeployError, Ports, deploy_local
    from .simulations.split import SplitError, split_table

    own = {**defaults(deploy_options()), **given(args, deploy_options())}
    options = {**defaults(JOB_OPTIONS), **given(args, JOB_OPTIONS)}
    try:
        schema = load_schema(own["schema"])
        table = schema.read_csv(own["data"])
        schema.validate(table, strict=True)
        parts = split_table(table, options["parties"], own["split"], schema.label, options["seed"])
        tables = {f"org-{i}": part for i, part in enumerate(parts)}
        ports = Ports(own["superlink-port"], own["coordinator-port"], own["first-node-port"])
        release = deploy_local(tables, Path(own["schema"]).resolve(), options, Path(own["out"]), ports)
    except KeyboardInterrupt:
        print("fedsynth deploy local: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    except (DeployError, SchemaError, SplitError, ValueError, OSError) as exc:
        print(f"fedsynth deploy local: {exc}", file=sys.stderr)
        return 2
    print(f"release fetched to {release}/")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .server.release import run_sample

    return run_sample(args.release, args.rows, args.out, args.seed, args.where)


def _client(args: argparse.Namespace) -> int:
    from .client.daemon import run_daemon

    return run_daemon(args.config, args.check)


def _superlink(args: argparse.Namespace) -> int:
    from .server.link import run_superlink

    return run_superlink(args.flags)


def _coordinator(args: argparse.Namespace) -> int:
    from .server.coordinator import serve

    return serve(args.config)


def _evaluate(args: argparse.Namespace) -> int:
    from .client.evaluate import run_evaluate

    return run_evaluate(args)


def _job(args: argparse.Namespace) -> int:
    from .server.operator import run_job_command

    return run_job_command(args)


def _report(args: argparse.Namespace) -> int:
    from .server.report import run_report

    return run_report(args)


def simulation_options() -> tuple[Option, ...]:
    """``fedsynth simulate``'s own options (the data and the federation it simulates); the job's
    options (``server.jobspec.JOB_OPTIONS``) come after them."""
    return (
        Option("data", Path, bundled("adult.csv"), "CSV or Parquet (*.parquet) table to split into parties",
               default_text="the bundled Adult sample"),
        Option("schema", Path, bundled("adult.schema.yaml"), "public schema of the table",
               default_text="the bundled Adult schema"),
        Option("split", str, "iid", "how the table is split into parties: iid | dirichlet:ALPHA (label "
               "skew) | by-column:COL (each value of COL to one party; with parties a multiple of its values, each "
               "value's rows shared by parties / values)"),
        Option("out", Path, Path("release"), "release directory"),
        Option("ledger", Path, None, "the federation's privacy ledger, shared by its jobs",
               default_text="a fresh one inside the release"),
        Option("cap", float, None, "the federation's total epsilon cap over all its jobs", default_text="--epsilon"),
        Option("ray-address", str, None, "HOST:PORT of an existing Ray cluster's head to run the simulation on "
               "(Flower's Ray backend joins it)", default_text="a fresh Ray instance on this machine"),
    )


def deploy_options() -> tuple[Option, ...]:
    """``fedsynth deploy local``'s own options; the job's options come after them."""
    data, schema, split = simulation_options()[:3]
    return (
        data, schema, split,
        Option("out", Path, Path("deployment"), "a new folder for certificates, configs, ledgers, logs and the "
               "release (in release/)"),
        Option("superlink-port", int, 9092, "SuperLink port on 127.0.0.1"),
        Option("coordinator-port", int, 7000, "coordinator service port on 127.0.0.1"),
        Option("first-node-port", int, 9094, "Runtime API port of the first organisation's SuperNode (+1 for each next)"),
    )


def add_simulate_options(sim: argparse.ArgumentParser) -> None:
    sim.add_argument("--config", type=Path, default=None,
                     help="a job file (TOML) whose keys are these options' names (e.g. a release's "
                     "job.toml); options given on the command line override it")
    add_arguments(sim, (*simulation_options(), *JOB_OPTIONS))


def resolve_simulate_options(args: argparse.Namespace) -> argparse.Namespace:
    """Every simulate option's value: the command line over ``--config``'s file over the defaults."""
    options = (*simulation_options(), *JOB_OPTIONS)
    from_file = read_job_file(args.config, options) if args.config is not None else {}
    values = {**defaults(options), **from_file, **given(args, options)}
    return argparse.Namespace(**{**vars(args), **{o.dest: values[o.name] for o in options}})


def add_discover_options(parser: argparse.ArgumentParser) -> None:
    """``fedsynth schema discover``'s options (defaults of ``common.discovery.DiscoverySettings``)."""
    parser.add_argument("--data", type=Path, required=True, help="CSV or Parquet table to split into organisations")
    parser.add_argument("--parties", type=int, default=3, help="number of organisations (default 3)")
    parser.add_argument("--split", default="iid", help="iid | dirichlet:ALPHA | by-column:COL (default iid)")
    parser.add_argument("--epsilon", type=float, required=True, help="what discovery may spend")
    parser.add_argument("--delta", type=float, default=1e-6, help="delta of the discovery (default 1e-6)")
    parser.add_argument("--min-survivors", type=int, default=None,
                        help="t (default: one dropout tolerated, never 3t <= 2n; t = n for 3 organisations)")
    parser.add_argument("--out", type=Path, required=True, help="the schema file to write (.yaml or .json)")
    parser.add_argument("--name", default=None, help="the schema's name (default: the file's stem)")
    parser.add_argument("--na-values", nargs="*", default=[], help="tokens that mean missing (e.g. '?')")
    parser.add_argument("--max-bytes", type=int, default=None,
                        help="longest discoverable category, in UTF-8 bytes (default 32); round 0 measures the "
                        "values' lengths and only lengths that clear the noise get rounds, one per byte")
    parser.add_argument("--bins", type=int, default=None, help="quantile bins per numeric column (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")


def add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", type=Path, help="the release directory")
    parser.add_argument("--out", type=Path, default=None, help="the HTML file (default: RELEASE/report.html)")
    parser.add_argument("--schema", type=Path, default=None,
                        help="the job's schema, when the release holds none (default: RELEASE/schema.yaml)")


def add_evaluate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", type=Path, help="the release directory (synthetic.csv, privacy.json)")
    parser.add_argument("--real", type=Path, required=True, help="this organisation's own rows (CSV)")
    parser.add_argument("--schema", type=Path, default=None,
                        help="the job's public schema (default: RELEASE/schema.yaml)")
    parser.add_argument("--control", type=Path, default=None,
                        help="rows of the same population that took no part in the job (CSV): the privacy probes' "
                        "control, without which their risk is against a random baseline")
    parser.add_argument("--out", type=Path, default=Path("evaluation"),
                        help="directory for evaluation.json and evaluation.html (default: ./evaluation)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the attacks, the real rows' split and the 3-way marginals")
    parser.add_argument("--attacks", type=int, default=None, help="attacks per privacy probe (default 500)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsynth",
        description="Federated, differentially private synthetic tabular data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                        help="how much fedsynth and Flower log (default: WARNING; INFO for the coordinator and "
                        "client services, whose logs are their operators' view)")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate",
        help="run a whole federation on one machine and write a release",
        description="Split a table into parties, run the federation in Flower's simulation "
        "engine with real SecAgg+, and write a release directory.",
    )
    add_simulate_options(sim)
    sim.set_defaults(func=_simulate)

    sample = sub.add_parser(
        "sample",
        help="sample more rows from a release (free: no privacy budget)",
        description="Refit a release's model from its noisy measurements and sample any number of rows "
        "that keep its schema's rules, labelled by its student when it has one. Post-processing of the "
        "release: no round, no ledger entry, no privacy budget.",
    )
    sample.add_argument("release", type=Path, help="a release folder (written by `fedsynth simulate --out`)")
    sample.add_argument("--rows", type=int, required=True, help="number of rows to sample")
    sample.add_argument("--out", type=Path, required=True, help="the file to write: FILE.csv or FILE.parquet")
    sample.add_argument("--seed", type=int, default=0, help="seed of the sampling (same seed, same rows; default 0)")
    sample.add_argument(
        "--where", action="append", default=[], metavar="COL=VALUE",
        help="sample only rows with this value (as the column's values are written, e.g. sex=Female): the model "
        "conditioned on it, still free; repeat for several columns",
    )
    sample.set_defaults(func=_sample)

    client = sub.add_parser(
        "client",
        help="run an organisation's daemon (a Flower SuperNode with fedsynth's ClientApp)",
        description="Check the organisation's config file, its local table against the schema it "
        "accepts and its privacy guard's ledger, then run flower-supernode with fedsynth's ClientApp "
        "(see fedsynth.client.daemon for the file).",
    )
    client.add_argument("--config", type=Path, required=True, help="the organisation's daemon config (TOML)")
    client.add_argument("--check", action="store_true", help="only check the config and the table, then exit")
    client.set_defaults(func=_client, service_log_level="INFO")

    superlink = sub.add_parser(
        "superlink",
        help="run Flower's SuperLink, each job's ServerApp forked from a warm process",
        description="Run flower-superlink with the flags after --, in process isolation, and beside it a "
        "process that has imported fedsynth's ServerApp and forks each job's ServerApp from itself "
        "(see fedsynth.server.link), e.g. fedsynth superlink -- --ssl-ca-certfile ca.crt ...",
    )
    superlink.add_argument("flags", nargs="*", help="flower-superlink's flags, after --")
    superlink.set_defaults(func=_superlink)

    coordinator = sub.add_parser(
        "coordinator",
        help="serve the coordinator's gRPC API and run jobs on the SuperLink",
        description="Serve protos/coordinator.proto (submit, follow, fetch jobs; read the federation "
        "ledger), running each job on the SuperLink (see fedsynth.server.coordinator for the file).",
    )
    coordinator.add_argument("--config", type=Path, required=True, help="the coordinator's config (TOML)")
    coordinator.set_defaults(func=_coordinator, service_log_level="INFO")

    deploy = sub.add_parser("deploy", help="run a real federation (SuperLink, coordinator, daemons)")
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True)
    local = deploy_sub.add_parser(
        "local",
        help="a whole federation on this machine over TLS on loopback: one job, its release, then stop",
        description="Make certificates, start a SuperLink with TLS and node authentication, the coordinator "
        "service and one organisation daemon per party (the table split as `simulate` splits it), submit the "
        "job, fetch its release, and stop everything it started (see fedsynth.server.deploy_local).",
    )
    add_arguments(local, (*deploy_options(), *JOB_OPTIONS))
    local.set_defaults(func=_deploy_local)

    job = sub.add_parser("job", help="submit and follow jobs on a coordinator service")
    from .server.operator import add_job_commands

    add_job_commands(job)
    job.set_defaults(func=_job)

    report = sub.add_parser(
        "report",
        help="write a release's self-contained HTML report (privacy, fidelity, job; no privacy cost)",
        description="Read a release directory alone and write one self-contained report.html: the privacy "
        "statement in plain words with the budget per round, the synthetic rows against the noisy "
        "measurements, and the job's definition, schema and versions (post-processing: no privacy cost).",
    )
    add_report_options(report)
    report.set_defaults(func=_report)

    evaluate = sub.add_parser(
        "evaluate",
        help="judge a release against this organisation's own rows (nothing leaves the machine)",
        description="Fidelity (column shapes, pair trends, 2/3-way TVD, TSTR) and privacy-risk probes "
        "(singling out, linkability, inference) of a release against local rows; writes evaluation.json "
        "and evaluation.html (see fedsynth.client.evaluate).",
    )
    add_evaluate_options(evaluate)
    evaluate.set_defaults(func=_evaluate)

    schema = sub.add_parser("schema", help="draft or validate a public schema")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    draft = schema_sub.add_parser(
        "draft", help="draft a schema from a data file (the draft itself is private!)"
    )
    draft.add_argument("data", type=Path, help="CSV or Parquet (*.parquet) file to draft from")
    draft.add_argument("-o", "--out", type=Path, default=Path("schema.draft.yaml"))
    draft.add_argument(
        "--na-values", nargs="*", default=[], help="tokens that mean missing (e.g. '?' or 'N')"
    )
    draft.set_defaults(func=_schema_draft)
    validate = schema_sub.add_parser("validate", help="check a data file against a schema")
    validate.add_argument("data", type=Path, help="CSV or Parquet (*.parquet) file to check")
    validate.add_argument("--schema", type=Path, required=True)
    validate.set_defaults(func=_schema_validate)
    discover = schema_sub.add_parser(
        "discover", help="discover a public schema from the organisations' rows, paid with epsilon (DP; simulation)",
        description="Split a table into organisations and run federated, differentially private discovery of "
        "categories, bounds, bins and missing values through SecAgg+ with Skellam noise; every round is in "
        "every organisation's ledger under phase 'schema'. The schema written needs no review.")
    add_discover_options(discover)
    discover.set_defaults(func=_schema_discover)
    return parser


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is at the time of the record."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def set_log_level(level: str, service: bool = False) -> None:
    """``--log-level``: fedsynth's loggers log at ``level``; Flower's follow it while a
    simulation runs (``fedsynth.simulations.engine``). A service's lines carry their time."""
    logger = logging.getLogger("fedsynth")
    logger.setLevel(level)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(("%(asctime)s " if service else "") + "%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    service = getattr(args, "service_log_level", None)
    set_log_level(args.log_level or service or "WARNING", service=service is not None)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
