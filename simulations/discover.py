"""``fedsynth schema discover``: a public schema from a federation's rows, by DP discovery.

In simulation, like ``fedsynth simulate``: one table is split into organisations, each behind
its own privacy guard (cap: the discovery's epsilon), and the coordinator runs the discovery
rounds (``server.discovery``) over real SecAgg+ in Flower's simulation engine. Each
organisation's local column configuration (names and kinds, never values) is drafted from its
own rows (``common.discovery.local_kinds``), as its data steward would write it, and held as
its agreed schema (``common.discovery.skeleton_schema``: names and kinds only). The schema is
written only when the whole discovery succeeded, with its provenance and the federation's
ledger beside it (``SCHEMA.ledger.jsonl``); on any error nothing is written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..client.app import build_client_app, org_name
from ..client.guard import Guard, GuardPolicy
from ..client.organisation import Organisation
from ..common.accounting import BudgetError, BudgetExceeded, Ledger
from ..common.discovery import DiscoveryError, DiscoverySettings, local_kinds, skeleton_schema
from ..common.identity import simulated_federation
from ..common.secagg_graph import default_min_survivors
from ..common.schema import Schema, SchemaError
from ..common.schema.io import read_text_table
from ..server.discovery import DiscoveryPlan, discover
from ..server.secure_sum import Federation, JobRefused, RoundAborted
from .engine import Shared, run_in_simulation
from .split import SplitError, split_table


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def discovery_app(parties: Sequence[pd.DataFrame], configs: Sequence[Mapping[str, str]], plan: DiscoveryPlan,
                  guards: Path):
    """ClientApp whose node ``partition-id`` = i holds ``parties[i]`` with configuration ``configs[i]``."""

    def make_org(context) -> Organisation:
        name = org_name(context)
        i = int(context.node_config["partition-id"])
        policy = GuardPolicy(ledger=guards / f"{name}.jsonl", epsilon_cap=plan.epsilon, delta=plan.delta,
                             min_noise_multiplier=0.0, min_survivors=max(2, plan.min_survivors))
        table = tables[i]
        agreed = Schema.from_dict(skeleton_schema(f"{name}-columns", configs[i], plan.na_values))
        return Organisation(name, lambda _schema: table.get(), accepts=agreed, guard=Guard(name, policy))

    tables = [Shared(party) for party in parties]
    return build_client_app(make_org, identities=simulated_federation(len(parties)))


def discover_in_simulation(parties: Sequence[pd.DataFrame], configs: Sequence[Mapping[str, str]], plan: DiscoveryPlan,
                           ledger: Path, guards: Path, progress=say) -> dict:
    """The discovered schema mapping over ``parties`` (federation ledger ``ledger``, guards' under ``guards``)."""
    federation_ledger = Ledger(ledger, cap_epsilon=plan.epsilon, delta=plan.delta)

    def job(grid, context) -> dict:
        with Federation(grid, context, len(parties), federation_ledger) as fed:
            return discover(fed, plan, progress).schema

    return run_in_simulation(job, discovery_app(parties, configs, plan, guards), len(parties))


def run_discover(args: argparse.Namespace) -> int:
    """The CLI entry: exit 2 with one clear message, and nothing written, on any bad input."""
    try:
        if args.out.exists() or not args.out.parent.is_dir():
            raise ValueError(f"--out {args.out}: name a new file in an existing folder (it is never overwritten)")
        plan = DiscoveryPlan(
            epsilon=args.epsilon, delta=args.delta, min_survivors=args.min_survivors or default_min_survivors(args.parties),
            name=args.name or args.out.stem, na_values=tuple(args.na_values),
            settings=DiscoverySettings(**{k: v for k, v in (("max_bytes", args.max_bytes), ("bins", args.bins)) if v is not None}),
        )
        if not 2 * args.parties < 3 * plan.min_survivors <= 3 * args.parties:
            raise ValueError(f"--min-survivors {plan.min_survivors} of --parties {args.parties}: authenticated SecAgg+ "
                             f"needs 2n/3 < t <= n (e.g. t = {default_min_survivors(args.parties)})")
        table = read_text_table(args.data, plan.na_values)
        parties = split_table(table, args.parties, args.split, None, args.seed)
        configs = [local_kinds(party, plan.na_values) for party in parties]
        say(f"split {args.data.name} into {args.parties} organisations ({args.split}); discovery may spend "
            f"epsilon {plan.epsilon:g} (delta {plan.delta:g})")
        with tempfile.TemporaryDirectory(prefix="fedsynth-discover-") as tmp:
            ledger = Path(tmp) / "ledger.jsonl"
            found = discover_in_simulation(parties, configs, plan, ledger, Path(tmp) / "guards")
            schema = Schema.from_dict(found, source="the discovered schema")
            schema.save(args.out)
            kept = args.out.with_name(args.out.name + ".ledger.jsonl")
            shutil.copyfile(ledger, kept)
            shutil.copyfile(ledger.with_name(ledger.name + ".head"), kept.with_name(kept.name + ".head"))
    except (DiscoveryError, BudgetError, BudgetExceeded, SchemaError, SplitError, JobRefused, RoundAborted,
            ValueError, OSError) as exc:
        say(f"fedsynth schema discover: {exc}")
        say("nothing was written")
        return 2
    spent = schema.provenance["epsilon_spent"]
    print(f"schema written to {args.out}: {len(schema.columns)} columns, epsilon {spent:.4f} spent over "
          f"{schema.provenance['rounds']} secure rounds (ledger: {args.out.name}.ledger.jsonl)")
    return 0
