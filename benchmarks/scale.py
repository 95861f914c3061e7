"""Scale benchmark (issue 16): bounded messages, a 1,000,000-row x 50-column federation, and
whole generator jobs at many organisations.

Four parts (``--parts``), each printing its figures next to a baseline from the same run:

* ``rounds``: one secure round against one plain round at each of ``--round-clients`` simulated
  organisations, sparse and complete SecAgg+ graphs side by side (``secure_sum_overhead.py``, run
  as it is: its table is this part's output).
* ``messages``: the generator on Adult (10 organisations, IID, epsilon 1, seed 0) with no bound
  on a round's candidate cells (every candidate every round, as before issue 16) and with each of
  ``--view-bounds`` (``GeneratorSettings.max_view_cells``; a bound that every candidate fits is
  the unbounded run and is not repeated), all through ``CentralAggregator``
  (the same organisation code and rounds as a federation, summed in-process: message sizes and
  the model do not depend on SecAgg+). Prints the most floats any organisation was sent in one
  round (the model's view), the 2-way TVD against the real rows, the wall
  time, and the ratios.
* ``data``: a synthetic public table of ``--rows`` rows and ``--columns`` columns (2 to 10
  values each; every column drawn from a Dirichlet(0.5) distribution given the previous one and
  the one before it: a known dependency structure) split IID over ``--data-orgs`` organisations,
  run through the generator with ``CentralAggregator`` (in-process: the Flower simulation engine
  would copy every organisation's table into its Ray actors). In a child process, so that its
  peak resident memory (``getrusage``) is its own; also the peak of one organisation's largest
  count round (``tracemalloc``: numpy's allocations), the floats per message against what every
  candidate would have cost, wall time per stage, and the 2-way TVD next to independent 1-way
  marginals (exact, no noise: what a model without the dependencies would reach).
* ``jobs``: ``fedsynth simulate --labels generator --epsilon 1`` (Flower simulation engine, real
  SecAgg+, t = n - 1) at each of ``--parties``, each in a child process with ``--job-timeout``;
  wall time, CPU time of every process of the job (Ray's workers and daemons too, which outlive
  the job's driver: the benchmark adopts and reaps them, ``process_cpu.py``) and that as a share
  of the machine's cores (CPU busy: CPU / (wall x cores)), the whole machine's busy share over the job from ``/proc/stat`` (what the
  job keeps busy, on an otherwise quiet machine: how much of the wall time computes rather than
  waits), and 2-way TVD of the release against the table, with wall time and TVD as
  ratios of the first party count. Adult: the bundled sample, or the private-pgm Adult under ``--data-root``.
  SecAgg+ with a complete graph costs O(n^2) per round: 100 organisations need the sparse
  graph of issue 16's item 1.

    python benchmarks/scale.py [--parts rounds,messages,data,jobs] [--parties 10,100] [--rows 1000000] \\
        [--columns 50] [--data-orgs 10] [--data-root DIR] [--view-bounds 262144,65536] [--job-timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import adult_discretised
from process_cpu import adopt_orphans, children_cpu_s, reap_orphans

from fedsynth.client.organisation import Organisation
from fedsynth.common.accounting import Ledger
from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.marginals import candidate_cliques, cells, total_cells
from fedsynth.common.metrics import all_cliques, mean_tvd
from fedsynth.common.schema import Schema, load_schema
from fedsynth.server.central import CentralAggregator
from fedsynth.server.generator import fit_generator, sample_rows
from fedsynth.server.job import JobConfig, plan_job
from fedsynth.simulations.split import split_table

REPO = Path(__file__).resolve().parents[1]
BUNDLED_DATA = REPO / "fedsynth" / "data" / "adult.csv"
BUNDLED_SCHEMA = REPO / "fedsynth" / "data" / "adult.schema.yaml"
UNBOUNDED = 2**62


class RecordingAggregator(CentralAggregator):
    """``CentralAggregator`` that notes the floats each round sends to each organisation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.floats_sent: list[int] = []

    def noisy_sum(self, spec, request, *, phase, mechanism, parameters=None, node_parameters=None):  # noqa: ANN001
        for arrays in self._arrays(parameters, node_parameters):
            self.floats_sent.append(sum(int(np.asarray(a).size) for a in arrays))
        return super().noisy_sum(
            spec, request, phase=phase, mechanism=mechanism, parameters=parameters, node_parameters=node_parameters
        )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def central_run(
    schema: Schema, parties: Sequence[pd.DataFrame], settings: GeneratorSettings, rows: int, out: Path,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """The generator over ``parties`` through ``RecordingAggregator`` (epsilon 1, seed 0)."""
    config = JobConfig(schema=schema, parties=len(parties), epsilon=1.0, delta=1e-9, out=out,
                       min_survivors=len(parties) - 1, rows=rows, seed=0, labels="generator", generator=settings)
    plan = plan_job(config)
    ledger = Ledger(out / "ledger.jsonl", cap_epsilon=config.epsilon, delta=config.delta)
    orgs = [Organisation(f"org-{i:03d}", lambda _s, t=table: t, accepts=schema) for i, table in enumerate(parties)]
    agg = RecordingAggregator(orgs, ledger, seed=0)
    started = time.time()
    model = fit_generator(agg, schema, plan.generator, np.random.default_rng(0), progress)
    fitted = time.time()
    frame = sample_rows(model, schema, rows, np.random.default_rng(0))
    return {
        "codes": schema.encode(frame),
        "fit_s": fitted - started,
        "sample_s": time.time() - fitted,
        "max_floats_sent": max(agg.floats_sent, default=0),
        "epsilon": ledger.epsilon().epsilon,
        "settings": plan.generator.settings,
        "orgs": orgs,
    }


# ---- messages


def adult(data_root: Path | None) -> tuple[Schema, pd.DataFrame]:
    if data_root is not None:
        schema, train, _test = adult_discretised(0, data_root / "adult")
        return schema, train
    schema = load_schema(BUNDLED_SCHEMA)
    return schema, schema.read_csv(BUNDLED_DATA)


def part_messages(args: argparse.Namespace) -> None:
    schema, table = adult(args.data_root)
    domain = schema.domain()
    parties = split_table(table, 10, "iid", schema.label, seed=0)
    real = schema.encode(table)
    pairs = all_cliques(domain, 2)
    every = candidate_cliques(domain, GeneratorSettings().max_size, GeneratorSettings().max_cells)
    needed = total_cells(domain, every)
    print(f"\n== messages: Adult ({len(table):,} rows, {len(domain)} columns), 10 organisations IID, epsilon 1, seed 0")
    print(f"   {len(every)} candidates, {needed:,} cells in all")
    print(f"{'bound (max_view_cells)':>24} {'max floats/message':>19} {'TVD2':>7} {'fit s':>7} {'floats ratio':>13} {'TVD2 ratio':>11}")
    baseline: tuple[int, float] | None = None
    for bound in [UNBOUNDED, *args.view_bounds]:
        label = "none (every candidate)" if bound == UNBOUNDED else f"{bound:,}"
        if bound != UNBOUNDED and bound >= needed:
            print(f"{label:>24}   every candidate fits: the run is the unbounded one")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            run = central_run(schema, parties, GeneratorSettings(max_view_cells=bound), len(table), Path(tmp))
        tvd2 = mean_tvd(real, run["codes"], domain, pairs)
        baseline = baseline or (run["max_floats_sent"], tvd2)
        print(f"{label:>24} {run['max_floats_sent']:>19,} {tvd2:>7.4f} {run['fit_s']:>7.1f} "
              f"{run['max_floats_sent'] / baseline[0]:>13.3f} {tvd2 / baseline[1]:>11.3f}")


# ---- data


def dependent_codes(rows: int, sizes: Sequence[int], seed: int) -> np.ndarray:
    """``rows`` rows whose column j is drawn given columns j-1 and j-2 (Dirichlet(0.5) tables)."""
    rng = np.random.default_rng(seed)
    codes = np.empty((rows, len(sizes)), dtype=np.int8)
    for j, k in enumerate(sizes):
        parents = [p for p in (j - 1, j - 2) if p >= 0]
        shape = [sizes[p] for p in parents]
        table = rng.dirichlet(np.full(k, 0.5), size=int(np.prod(shape, dtype=int)))
        parent = np.ravel_multi_index(tuple(codes[:, p] for p in parents), shape) if parents else np.zeros(rows, int)
        cumulative = np.cumsum(table, axis=1)
        codes[:, j] = np.minimum((rng.random(rows)[:, None] > cumulative[parent]).sum(axis=1), k - 1)
    return codes


def wide_schema(sizes: Sequence[int]) -> Schema:
    return Schema.from_dict({
        "name": f"synthetic-{len(sizes)}",
        "label": None,
        "na_values": [],
        "columns": [
            {"name": f"c{j:02d}", "kind": "categorical", "categories": [str(v) for v in range(k)]}
            for j, k in enumerate(sizes)
        ],
    })


def frame_of(schema: Schema, codes: np.ndarray) -> pd.DataFrame:
    """Categorical columns (one byte per cell), as an organisation's loader would hand them over."""
    return pd.DataFrame({
        c.name: pd.Categorical.from_codes(codes[:, j], categories=list(c.categories))
        for j, c in enumerate(schema.columns)
    })


def largest_count_peak_mb(org: Organisation, schema: Schema, settings: GeneratorSettings) -> float:
    """tracemalloc peak of one organisation counting the largest measure round of the plan."""
    domain = schema.domain()
    biggest = sorted(candidate_cliques(domain, settings.max_size, settings.max_cells), key=lambda cl: -cells(domain, cl))
    request = {"schema": schema.dumps("json"), "task": "marginals",
               "cliques": json.dumps([list(cl) for cl in biggest[: settings.per_round]])}
    tracemalloc.start()
    org.contribute(request, [], np.random.default_rng(0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def data_child(args: argparse.Namespace, queue: multiprocessing.Queue) -> None:
    sizes = [2 + (7 * j) % 9 for j in range(args.columns)]
    schema = wide_schema(sizes)
    domain = schema.domain()
    t0 = time.time()
    codes = dependent_codes(args.rows, sizes, seed=0)
    parts = np.array_split(np.random.default_rng(0).permutation(args.rows), args.data_orgs)
    parties = [frame_of(schema, codes[idx]) for idx in parts]
    made = time.time() - t0

    def progress(message: str) -> None:
        print(f"   [{time.time() - t0:6.0f} s, peak {peak_rss_mb():,.0f} MB] {message}", file=sys.stderr, flush=True)

    progress(f"data made and split ({made:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        run = central_run(schema, parties, GeneratorSettings(), args.rows, Path(tmp), progress)
    progress("generator fitted and rows sampled")
    org_peak = largest_count_peak_mb(run["orgs"][0], schema, run["settings"])
    pairs = all_cliques(domain, 2)
    score_rows = np.random.default_rng(1).choice(args.rows, size=min(args.rows, 200_000), replace=False)
    real = codes[score_rows].astype(np.int64)
    rng = np.random.default_rng(2)
    independent = np.column_stack([rng.choice(real[:, j], size=len(real)) for j in range(real.shape[1])])
    every = candidate_cliques(domain, run["settings"].max_size, run["settings"].max_cells)
    queue.put({
        "make_s": made,
        "fit_s": run["fit_s"],
        "sample_s": run["sample_s"],
        "peak_rss_mb": peak_rss_mb(),
        "org_count_peak_mb": org_peak,
        "org_table_mb": run["orgs"][0].table(schema.dumps("json")).codes.nbytes / 2**20,
        "max_floats_sent": run["max_floats_sent"],
        "every_candidate_floats": total_cells(domain, every) + len(every),
        "candidates": len(every),
        "tvd2": mean_tvd(real, run["codes"][score_rows].astype(np.int64), domain, pairs),
        "tvd2_independent": mean_tvd(real, independent, domain, pairs),
        "epsilon": run["epsilon"],
    })


def part_data(args: argparse.Namespace) -> None:
    print(f"\n== data: {args.rows:,} rows x {args.columns} columns over {args.data_orgs} organisations "
          "(CentralAggregator, in-process), epsilon 1")
    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(target=data_child, args=(args, queue))
    started = time.time()
    child.start()
    child.join()
    if child.exitcode != 0:
        print(f"   failed (exit code {child.exitcode})")
        return
    r = queue.get()
    print(f"   wall {time.time() - started:.0f} s: make data {r['make_s']:.0f} s, generator {r['fit_s']:.0f} s, "
          f"sample {r['sample_s']:.0f} s; epsilon spent {r['epsilon']:.3f}")
    print(f"   peak resident memory of the whole process (every organisation + coordinator): {r['peak_rss_mb']:,.0f} MB")
    print(f"   one organisation: table {r['org_table_mb']:.0f} MB of int64 codes; counting its largest round "
          f"peaks at {r['org_count_peak_mb']:.1f} MB (tracemalloc)")
    print(f"   max floats per message {r['max_floats_sent']:,} vs {r['every_candidate_floats']:,} for all "
          f"{r['candidates']:,} candidates (ratio {r['max_floats_sent'] / r['every_candidate_floats']:.4f})")
    print(f"   TVD2 {r['tvd2']:.4f} vs independent 1-way marginals {r['tvd2_independent']:.4f} "
          f"(ratio {r['tvd2'] / r['tvd2_independent']:.3f})")


# ---- jobs


def job_data(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    if args.data_root is None:
        return BUNDLED_DATA, BUNDLED_SCHEMA
    schema, train = adult(args.data_root)
    schema.save(tmp / "adult.schema.yaml")
    train.to_csv(tmp / "adult.csv", index=False)
    return tmp / "adult.csv", tmp / "adult.schema.yaml"


def one_job(parties: int, data: Path, schema_path: Path, out: Path, timeout: float) -> dict[str, Any] | None:
    command = [sys.executable, "-m", "fedsynth.cli", "simulate", "--parties", str(parties), "--labels", "generator",
               "--epsilon", "1", "--seed", "0", "--data", str(data), "--schema", str(schema_path), "--out", str(out)]
    started, cpu_before, machine_before = time.time(), children_cpu_s(), machine_cpu_s()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        reap_orphans()  # Ray's workers and daemons, adopted when the job's driver ended
    wall, cpu = time.time() - started, children_cpu_s() - cpu_before
    machine = [after - before for after, before in zip(machine_cpu_s(), machine_before)]
    if done.returncode != 0:
        print(done.stderr[-2000:])
        return {"wall_s": wall, "failed": done.returncode}
    schema = load_schema(schema_path)
    real = schema.encode(schema.read_csv(data))
    synthetic = schema.encode(schema.conform(schema.read_csv(out / "synthetic.csv")))
    domain = schema.domain()
    tvd2 = mean_tvd(real, synthetic, domain, all_cliques(domain, 2))
    return {"wall_s": wall, "cpu_s": cpu, "busy": cpu / (wall * (os.cpu_count() or 1)),
            "machine_busy": machine[0] / sum(machine), "tvd2": tvd2}


def machine_cpu_s() -> tuple[float, float]:
    """Busy and idle CPU seconds of the whole machine since boot (``/proc/stat``: user, nice,
    system, irq, softirq, steal against idle and iowait), in clock ticks."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal, idle + iowait


def part_jobs(args: argparse.Namespace) -> None:
    adopt_orphans()
    with tempfile.TemporaryDirectory() as tmp:
        data, schema_path = job_data(args, Path(tmp))
        print(f"\n== jobs: fedsynth simulate --labels generator --epsilon 1 on {data.name}, IID, t = n - 1")
        print(f"{'organisations':>14} {'wall s':>8} {'CPU s':>8} {'CPU busy':>9} {'machine busy':>13} {'TVD2':>7} "
              f"{'wall / first':>13} {'TVD2 / first':>13}")
        first: dict[str, Any] | None = None
        for n in args.parties:
            r = one_job(n, data, schema_path, Path(tmp) / f"release-{n}", args.job_timeout)
            if r is None:
                print(f"{n:>14} {'> ' + str(int(args.job_timeout)):>8} (timed out)")
                continue
            if "failed" in r:
                print(f"{n:>14} {r['wall_s']:>8.0f} failed (exit code {r['failed']})")
                continue
            first = first or r
            print(f"{n:>14} {r['wall_s']:>8.0f} {r['cpu_s']:>8.0f} {r['busy']:>9.0%} {r['machine_busy']:>13.0%} "
                  f"{r['tvd2']:>7.4f} "
                  f"{r['wall_s'] / first['wall_s']:>13.2f} {r['tvd2'] / first['tvd2']:>13.3f}")


def part_rounds(args: argparse.Namespace) -> None:
    """Per-round secure and plain times and their ratio (``secure_sum_overhead.py``'s table)."""
    overhead = Path(__file__).with_name("secure_sum_overhead.py")
    print(f"\n== rounds: secure vs plain per round at {args.round_clients} organisations", flush=True)
    subprocess.run([sys.executable, str(overhead), "--clients", args.round_clients], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="rounds,messages,data,jobs",
                        help="comma-separated: rounds, messages, data, jobs")
    parser.add_argument("--round-clients", default="20,50,100,200", help="organisations of the rounds part")
    parser.add_argument("--parties", default="10,100", help="organisations of each whole job (e.g. 10,20,100)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic table (data part)")
    parser.add_argument("--columns", type=int, default=50, help="columns of the synthetic table (data part)")
    parser.add_argument("--data-orgs", type=int, default=10, help="organisations holding the synthetic table")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding adult/adult.csv and adult/adult-domain.json (private-pgm Adult); "
                        "default: the bundled Adult sample")
    parser.add_argument("--view-bounds", default=f"{GeneratorSettings().max_view_cells},{2**16}",
                        help="max_view_cells values compared with no bound (messages part)")
    parser.add_argument("--job-timeout", type=float, default=1800.0, help="seconds allowed to each whole job")
    args = parser.parse_args()
    args.parties = [int(n) for n in args.parties.split(",")]
    args.view_bounds = [int(n) for n in args.view_bounds.split(",")]
    parts = args.parts.split(",")
    unknown = set(parts) - {"rounds", "messages", "data", "jobs"}
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; use rounds, messages, data, jobs")
    if args.data_root is not None and not (args.data_root / "adult" / "adult-domain.json").exists():
        parser.error(f"--data-root {args.data_root}: no adult/adult-domain.json there")
    for part in parts:
        {"rounds": part_rounds, "messages": part_messages, "data": part_data, "jobs": part_jobs}[part](args)


if __name__ == "__main__":
    main()
