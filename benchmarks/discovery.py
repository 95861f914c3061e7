"""A job on a discovered schema against the same job on the hand-written schema, in one run,
with the floor that differential privacy itself sets (the oracles).

On raw Adult (mixed types, missing values): ``--data sample`` the bundled 5,000-row sample
(``fedsynth/data/adult.csv``), ``--data full`` the whole 32,561-row training split
(``fedsynth/data/adult-full.csv.gz``); split ``--split`` (iid, dirichlet:ALPHA on the label, ...)
into ``--parties`` organisations, at ``--epsilon`` in total. Jobs (``--jobs``, each in Flower's
simulation engine with real SecAgg+ and the generator's labels, no teacher):

* ``hand``: the hand-written public schema (``fedsynth/data/adult.schema.yaml``) at all of epsilon;
* ``hand-rest``: the same at the epsilon a discovery leaves, ``(1 - share) epsilon``;
* ``oracle-any``: the hand-written schema with every category held by fewer than ``k_any`` real
  rows lumped into ``other``, at ``(1 - share) epsilon`` (rules naming a lumped value dropped);
* ``oracle-central``: the same with every category below ``tau_central`` lumped;
* ``discovered``: ``discover = share``: the first phase discovers categories, bounds, bins and
  missing values from the organisations' rows, the later phases run on that schema with what
  remains (a number column whose noisy grid clears no floor keeps the hand-written bounds, and a
  column the hand-written schema allows missing values in keeps them: both public).

The oracles' thresholds (``eps = share * epsilon``, the job's ``delta``; exact arithmetic in
:func:`any_mechanism_rows` and :func:`central_histogram_rows`):

* ``k_any``, for ANY ``(eps, delta)``-DP discovery that knows no value in advance (it outputs a
  value no row holds with probability 0). Group privacy over the ``n`` rows (add/remove) that hold
  a value ``v``: ``P[v released] <= e^(n eps) * 0 + delta * (e^(n eps) - 1) / (e^eps - 1) =: p(n)``.
  ``p(n) < 1/2`` exactly when ``n < k_any = ln(1 + (e^eps - 1) / (2 delta)) / eps`` (109 rows at
  eps 0.1, delta 1e-6). This is a lower bound on what any mechanism must leave out, and a loose
  one (it grants every column the whole of eps). From it, rigorously: the expected share of a
  column's rows whose value is not listed is at least ``m_c = sum_v n_v / N * (1 - min(1, p(n_v)))``,
  and on any schema a release's TVD on a marginal containing column ``c`` is at least the share
  of rows whose ``c`` value is not listed (the release puts no mass there), so the expected mean
  2-way TVD of ANY such discovery followed by ANY job is at least ``mean over pairs (a, b) of
  max(m_a, m_b)`` (Jensen: E max >= max E), printed as the "TVD floor".
* ``tau_central``, what the best known one-shot mechanism achieves with a trusted curator that sees
  the values (a stability histogram; federated SecAgg cannot run it, as its vector's layout would
  name the values): one Skellam histogram of every text column's values at once (a row adds 1 to one
  cell per column: L1 = k, L2 = sqrt(k) for ``k`` text columns), its noise the least at which it
  costs ``(eps, delta / 2)`` (RDP, ``common.accounting``), a value released when its noisy count
  exceeds ``tau_central = 3 + b - 1``, ``b`` the exact Skellam tail point at ``delta / (2 k)``: a
  value held by at most 3 rows clears it with probability at most ``delta / (2 k)``, so the at most
  ``k`` cells one row alone creates add at most ``delta / 2`` (``(eps, delta)`` in all), and the
  project's rule that a 3-row value never appears holds. A value below ``tau_central`` rows is
  released with probability below one half (the noise is symmetric).

Prints each job's wall time, epsilon spent, and mean TVD over every 2-way marginal of the real
table, all releases encoded on one evaluation schema: the hand-written one with an ``other``
category in each text column and every number clipped to its bounds (a discovered ``other`` value
matches no real value, so it counts as error); then each text column's share of rows whose value
the discovered schema (and each oracle) does not list.

    python benchmarks/discovery.py [--data sample|full] [--split iid] [--epsilon 1] [--share 0.1] [--parties 5] [--seed 0] [--jobs hand,hand-rest,oracle-any,oracle-central,discovered]
    python benchmarks/discovery.py --data acs [--share 0.1] [--jobs hand,discovered] [--data-root DIR] [--sdnist-root DIR] [--sdnist-cache DIR]

``--data acs`` runs the hand-written ACS MA2019 schema (``tests/data/acs_ma2019.schema.yaml``, on
``ma2019.csv`` under the data root) against ``discover = share``, scored by SDNist 2.4's own
k-marginal (``sdnist.py``; :func:`acs_main`).
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from common import acs_massachusetts, add_data_root, data_root
from sdnist import SdnistUnavailable, add_sdnist_options, sdnist_scores
from fedsynth.cli import bundled
from fedsynth.common.accounting import noise_for_epsilon, skellam_event
from fedsynth.common.discovery import heavy_hitters as hh
from fedsynth.common.metrics import all_cliques, marginal, mean_tvd, total_variation
from fedsynth.common.schema import Schema, SchemaError, load_schema
from fedsynth.common.secagg_graph import default_min_survivors
from fedsynth.server.job import JobConfig
from fedsynth.simulations.main import simulate
from fedsynth.simulations.split import split_table


DATA = {"sample": "adult.csv", "full": "adult-full.csv.gz", "acs": "ma2019.csv"}
JOBS = ("hand", "hand-rest", "oracle-any", "oracle-central", "discovered")


def any_mechanism_rows(epsilon: float, delta: float) -> int:
    """k_any: below it, any (epsilon, delta)-DP discovery that knows no value in advance releases
    a value with probability below 1/2 (group privacy; module docstring)."""
    return math.ceil(math.log1p(math.expm1(epsilon) / (2.0 * delta)) / epsilon)


def release_bound(rows: int, epsilon: float, delta: float) -> float:
    """p(n): the most probability with which such a discovery releases a value held by ``rows`` rows."""
    if rows * epsilon > 700:
        return 1.0
    return min(1.0, delta * math.expm1(rows * epsilon) / math.expm1(epsilon))


def central_histogram_rows(epsilon: float, delta: float, columns: int) -> float:
    """tau_central: the release threshold of a trusted curator's one-shot Skellam stability
    histogram of ``columns`` text columns at (epsilon, delta) (module docstring)."""
    sigma = noise_for_epsilon(lambda s: skellam_event(s * s / 2.0, float(columns), math.sqrt(columns)), epsilon, delta / 2.0)
    return hh.value_threshold(sigma**2 / 2.0, delta / (2.0 * columns))


def lumped(schema: Schema, table: pd.DataFrame, rows: float) -> Schema:
    """The schema with every category held by fewer than ``rows`` real rows moved into ``other``;
    a rule that names a moved value is dropped."""
    data = schema.to_dict()
    columns = []
    for column in data["columns"]:
        if column["kind"] == "categorical":
            counts = table[column["name"]].value_counts()
            kept = [v for v in column["categories"] if counts.get(v, 0) >= rows]
            column = {**column, "categories": [*kept, "other"], "other": "other"}
        columns.append(column)
    rules = []
    for rule in data.get("rules", []):
        try:
            Schema.from_dict({**data, "columns": columns, "rules": [rule]})
            rules.append(rule)
        except SchemaError:
            continue
    return Schema.from_dict({**data, "columns": columns, "rules": rules})


def missed_share(schema: Schema, table: pd.DataFrame) -> dict[str, float]:
    """Per text column: the share of all rows whose (present) value the schema does not list."""
    return {c.name: float((table[c.name].notna() & ~table[c.name].isin(c.categories)).mean())
            for c in schema.columns if c.categories}


def rare_share(table: pd.DataFrame, text_columns: list[str], rows: float) -> dict[str, float]:
    """Per text column: the share of all rows whose value fewer than ``rows`` rows hold."""
    return {c: float(sum(n for n in table[c].value_counts() if n < rows) / len(table)) for c in text_columns}


def expected_missed_share(table: pd.DataFrame, text_columns: list[str], epsilon: float, delta: float) -> dict[str, float]:
    """m_c: the least expected share of rows whose value any such discovery leaves unlisted."""
    return {c: float(sum(n * (1.0 - release_bound(int(n), epsilon, delta)) for n in table[c].value_counts()) / len(table))
            for c in text_columns}


def tvd_floor(missed: dict[str, float], columns: list[str]) -> float:
    """Mean over 2-way marginals of max(missed[a], missed[b]): no release on a schema that leaves
    those shares unlisted scores below it."""
    return sum(max(missed.get(a, 0.0), missed.get(b, 0.0)) for a, b in itertools.combinations(columns, 2)) / math.comb(len(columns), 2)


def per_marginal_tvd(real, synthetic, domain, cliques) -> dict[tuple[str, ...], float]:
    """TVD of each 2-way marginal."""
    columns = list(domain)
    return {cl: total_variation(marginal(real, columns, domain, cl), marginal(synthetic, columns, domain, cl)) for cl in cliques}


def raised_to_floor(per_marginal: dict[tuple[str, ...], float], missed: dict[str, float]) -> float:
    """The mean TVD of a job whose every marginal scores as ``per_marginal`` says, except that none
    scores below the share of rows its columns leave unlisted (an estimate, not a bound: it assumes
    the job does no better than ``per_marginal`` anywhere else)."""
    return sum(max(tvd, *(missed.get(c, 0.0) for c in cl)) for cl, tvd in per_marginal.items()) / len(per_marginal)


def evaluation_schema(schema: Schema) -> Schema:
    """The hand-written schema, taking any value: ``other`` in text columns, numbers clipped."""
    columns = []
    for column in schema.to_dict()["columns"]:
        if column["kind"] == "categorical":
            column = {**column, "categories": [*column["categories"], "other"], "other": "other"}
        else:
            column = {**column, "out_of_range": "clip"}
        columns.append({**column, "missing": True})
    return Schema.from_dict({"name": "evaluation", "na_values": list(schema.na_values), "columns": columns})


def run(config: JobConfig, parties, evaluation: Schema, real, cliques, table) -> dict:
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        release = simulate(replace(config, out=Path(tmp) / "release"), parties, progress=lambda _m: None)
        synthetic = evaluation.read_csv(release.path / "synthetic.csv")
        used = load_schema(release.path / "schema.yaml")
        return {
            "seconds": time.time() - started,
            "epsilon": release.statement["epsilon"],
            "per_phase": {p: v["epsilon"] for p, v in release.statement["per_phase"].items()},
            "tvd2": mean_tvd(real, evaluation.encode(synthetic), evaluation.domain(), cliques),
            "per_marginal": per_marginal_tvd(real, evaluation.encode(synthetic), evaluation.domain(), cliques),
            "categories": {c.name: len(c.categories) for c in used.columns if c.categories},
            "missed": missed_share(used, table),
            "kept": (used.provenance or {}).get("kept_from_given_schema", []),
            "discovery": {k: (used.provenance or {}).get(k) for k in ("epsilon_spent", "rounds", "noise_std", "text_lengths")},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--share", type=float, default=0.1, help="discovery's share of epsilon")
    parser.add_argument("--parties", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=sorted(DATA), default="full")
    parser.add_argument("--split", default="iid", help="iid, dirichlet:ALPHA (on the label Y), by-column:COL")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {', '.join(JOBS)}")
    add_data_root(parser)
    add_sdnist_options(parser)
    args = parser.parse_args()
    if args.data == "acs":
        try:
            acs_main(args)
        except SdnistUnavailable as exc:
            parser.exit(2, f"discovery.py: {exc}\n")
        return
    jobs = [j for j in args.jobs.split(",") if j]
    if set(jobs) - set(JOBS):
        parser.error(f"--jobs: unknown {', '.join(sorted(set(jobs) - set(JOBS)))}; use {', '.join(JOBS)}")
    schema = load_schema(bundled("adult.schema.yaml"))
    table = schema.read_csv(bundled(DATA[args.data]))
    evaluation = evaluation_schema(schema)
    real = evaluation.encode(table)
    cliques = all_cliques(evaluation.domain(), 2)
    parties = split_table(table, args.parties, args.split, "Y", args.seed)
    delta, share_epsilon = 1e-6, args.share * args.epsilon
    texts = [c.name for c in schema.columns if c.categories]
    k_any = any_mechanism_rows(share_epsilon, delta)
    tau = central_histogram_rows(share_epsilon, delta, len(texts))
    base = JobConfig(schema=schema, parties=args.parties, epsilon=args.epsilon, delta=delta, out=Path("unused"),
                     min_survivors=default_min_survivors(args.parties), rows=len(table), seed=args.seed,
                     labels="generator")
    rest = replace(base, epsilon=args.epsilon * (1.0 - args.share))
    configs = {
        "hand": ("hand-written schema", base),
        "hand-rest": (f"hand-written, epsilon {rest.epsilon:g}", rest),
        "oracle-any": (f"oracle: any mechanism (< {k_any} rows lumped)", replace(rest, schema=lumped(schema, table, k_any))),
        "oracle-central": (f"oracle: central histogram (< {tau:.0f} lumped)", replace(rest, schema=lumped(schema, table, tau))),
        "discovered": (f"discovered schema (discover = {args.share:g})", replace(base, discover=args.share)),
    }
    print(f"Adult ({DATA[args.data]}): {len(table):,} rows, {args.parties} organisations ({args.split}), "
          f"epsilon {args.epsilon:g} in all, delta {delta:g}, discovery share {args.share:g} (epsilon {share_epsilon:g}); "
          f"mean TVD over {len(cliques)} 2-way marginals\n")
    header = f"{'job':<48}{'spent':>7}{'time s':>8}{'tvd2':>8}{'vs hand':>9}"
    print(header)
    print("-" * len(header))
    results = {}
    for job in jobs:
        name, config = configs[job]
        results[job] = run(config, parties, evaluation, real, cliques, table)
        ratio = f"{results[job]['tvd2'] / results['hand']['tvd2']:>9.3f}" if "hand" in results else ""
        print(f"{name:<48}{results[job]['epsilon']:>7.3f}{results[job]['seconds']:>8.0f}{results[job]['tvd2']:>8.4f}{ratio}", flush=True)
    columns = list(evaluation.domain())
    any_missed = expected_missed_share(table, texts, share_epsilon, delta)
    central_missed = rare_share(table, texts, tau)
    print(f"\nshare of rows whose value is not listed, per text column (k_any = {k_any} rows, tau_central = {tau:.0f} rows):")
    print(f"  any mechanism, expected at least: {_shares(any_missed)}; TVD floor {tvd_floor(any_missed, columns):.4f}")
    print(f"  central histogram (median):       {_shares(central_missed)}; TVD floor {tvd_floor(central_missed, columns):.4f}")
    if "hand" in results:
        hand = results["hand"]
        for name, missed in (("any mechanism", any_missed), ("central histogram", central_missed)):
            raised = raised_to_floor(hand["per_marginal"], missed)
            print(f"  the hand-written job with each marginal raised to the {name}'s floor: {raised:.4f} "
                  f"({raised / hand['tvd2']:.3f} of the hand-written job)")
    if "discovered" in results:
        found = results["discovered"]
        print(f"  discovered:                       {_shares(found['missed'])}; TVD floor {tvd_floor(found['missed'], columns):.4f}")
        print(f"\nper phase (discovered job): {found['per_phase']}")
        print(f"categories listed, hand-written: { {c.name: len(c.categories) for c in schema.columns if c.categories} }")
        print(f"categories listed, discovered:   {found['categories']}")
        print(f"bounds kept from the hand-written schema (no grid block cleared the noise): {found['kept']}")
        print(f"discovery: {found['discovery']}")


def acs_main(args: argparse.Namespace) -> None:
    """``--data acs``: the hand-written ACS MA2019 schema (with its rules and fine grids) against
    ``discover = share`` (no rules; the fine grids kept), scored by SDNist 2.4's own k-marginal
    (``--jobs``: of them, ``hand`` and ``discovered``).

    SDNist drops from its evaluation every column holding a value outside the data dictionary,
    which a discovered ``other`` is; so, for SDNist only, a synthetic ``other`` is written as the
    first code of the hand-written (public) list that the discovered schema does not list: the
    mass lands on a real code, which can only flatter the discovered job.
    """
    folder = data_root(args.data_root, ["acs"], "discovery.py") / "acs"
    schema, table, _ = acs_massachusetts(folder)
    parties = split_table(table, args.parties, args.split, schema.label or "SEX", args.seed)
    base = JobConfig(schema=schema, parties=args.parties, epsilon=args.epsilon, delta=1e-6, out=Path("unused"),
                     min_survivors=default_min_survivors(args.parties), rows=len(table), seed=args.seed,
                     labels="generator")
    print(f"ACS MA2019 ({folder / 'ma2019.csv'}): {len(table):,} rows, {args.parties} organisations ({args.split}), "
          f"epsilon {args.epsilon:g} in all; SDNist 2.4 k-marginal (0..1000)\n")
    header = f"{'job':<44}{'spent':>7}{'time s':>8}{'k-marg':>8}{'vs hand':>9}{'pmse':>9}"
    print(header)
    print("-" * len(header))
    hand_score = None
    jobs = {"hand": ("hand-written schema", base),
            "discovered": (f"discovered schema (discover = {args.share:g})", replace(base, discover=args.share))}
    for name, config in (jobs[j] for j in args.jobs.split(",") if j in jobs):
        started = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            release = simulate(replace(config, out=Path(tmp) / "release"), parties, progress=lambda _m: None)
            used = load_schema(release.path / "schema.yaml")
            synthetic = pd.read_csv(release.path / "synthetic.csv", dtype=str, keep_default_na=False)
            path = Path(tmp) / "scored.csv"
            with_codes(synthetic, used, schema).to_csv(path, index=False)
            seconds = time.time() - started
            scores = sdnist_scores(path, folder, args.sdnist_root, args.sdnist_cache)
        hand_score = hand_score or (scores.k_marginal if config is base else None)
        ratio = f"{scores.k_marginal / hand_score:>9.3f}" if hand_score else f"{'':>9}"
        print(f"{name:<44}{release.statement['epsilon']:>7.3f}{seconds:>8.0f}{scores.k_marginal:>8.1f}"
              f"{ratio}{scores.pmse:>9.4f}", flush=True)
        missed = missed_share(used, table)
        print(f"  rows whose value the schema does not list: {_shares(missed)}")
        print(f"  {(used.provenance or {}).get('noise_std', '')} rules {len(used.rules)}, "
              f"fine grids {[c.name for c in used.columns if c.fine is not None]}")


def with_codes(synthetic: pd.DataFrame, used: Schema, hand: Schema) -> pd.DataFrame:
    """The release with each text column's ``other`` written as the first hand-written code the
    used schema does not list (SDNist would drop a column holding ``other``)."""
    out = synthetic.copy()
    codes = {c.name: c.categories for c in hand.columns}
    for column in used.columns:
        if column.categories and column.other is not None and column.name in out and codes.get(column.name):
            unlisted = [v for v in codes[column.name] if v not in column.categories]
            if unlisted:
                out[column.name] = out[column.name].replace(column.other, unlisted[0])
    return out


def _shares(missed: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.1%}" for name, share in missed.items())


if __name__ == "__main__":
    main()
