"""Empirical privacy audit of the marginal generator (issue 15, item 4).

What runs: the generator's own code (``server.generator.fit_generator``: 1-way marginals,
select-and-measure rounds with votes, noisy scores and measurements, refits in between)
behind ``server.central.CentralAggregator``, one curator holding all rows and adding the whole
Skellam noise, at the noise the job's planner (``server.job.plan_job``) gives for the target
epsilon. In a federation each measurement is the sum of the organisations' counts plus their
Skellam shares, and a sum of Skellam shares is Skellam with the planned mu: the coordinator
sees the same distribution as here. Not covered: SecAgg+ and Flower (a whole simulation takes
30-60 s, too slow for hundreds of runs; they do not change what is released), the
organisations' profile round (absent with one curator), the row cap, sampling of rows and the
teacher. The final model fit runs 10 iterations only: it is post-processing of measurements
already made, and the attack reads the measurements.

Data: four columns of the bundled Adult sample (``fedsynth/data/adult.csv``: sex, race,
relationship, Y; 120 cells, no schema rule involves them), 5,000 rows, delta 1e-6.

Canary: the combination of values that is rarest in the data (first in column order on ties),
added ``k`` times (``--groups``; k > 1 audits group privacy, against the claim for a group of
k identical records, computed by the same accountant with every sensitivity times k). Worlds:
``--runs`` runs without the canary, and as many with each group size, all with distinct seeds.

Attack: the strongest practical attacker of the release reads ``measurements.json`` (every
noisy marginal; released rows are post-processing of it, so an attack on rows can do no
better) and knows every other record (the worst case DP protects against). Every measured
marginal has one cell the canary falls into; the score is the likelihood-ratio statistic for a
shift in those cells, ``sum_i (y_i - c_i) / sigma_i^2 / sqrt(sum_i 1 / sigma_i^2)`` (``y_i``
the noisy count, ``c_i`` the count without the canary, ``sigma_i`` the measurement's noise),
about N(0, 1) without the canary. The attack says "in" when the score passes a threshold from
the fixed grid 0, 0.5, ..., 5; the best of the 11 thresholds is kept, Bonferroni-corrected
(``common.audit``).

Printed per epsilon and group size: the claimed epsilon (accountant, at the plan), the
empirical epsilon's 95% interval (its lower end the audit's lower bound, 97.5% one-sided),
the point estimate from the observed rates, the ceiling (the most these many runs could show
against a mechanism exactly meeting the claim), lower bound / claim, the threshold and its
error counts, runs per world and seconds. The script exits 1 if a lower bound passes its claim.

    python benchmarks/audit.py [--epsilons 1,4] [--runs 300] [--groups 1,4] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.client.organisation import Organisation
from fedsynth.common.accounting import CombinedAccountant, Ledger
from fedsynth.common.audit import AuditResult, audit, group_event, sample_ceiling
from fedsynth.common.generator import GeneratorSettings, Measurement
from fedsynth.common.schema import Schema, load_schema
from fedsynth.server.central import CentralAggregator
from fedsynth.server.generator import fit_generator
from fedsynth.server.job import JobConfig, JobPlan, plan_job

DATA = Path(__file__).resolve().parents[1] / "fedsynth" / "data"
COLUMNS = ["relationship", "race", "sex", "Y"]
DELTA = 1e-6
THRESHOLDS = np.arange(0.0, 5.01, 0.5)
SETTINGS = GeneratorSettings(max_size=2, organisation_column=False, final_iters=10, score_sample=20_000)


@dataclass(frozen=True)
class Row:
    epsilon: float
    group: int
    claimed: float
    spent: float  # the ledger's epsilon for one record, the largest over the runs
    lower: float
    upper: float
    estimate: float
    ceiling: float
    threshold: float
    false_positives: int
    false_negatives: int
    runs: int  # per world
    seconds: float  # the runs of this world with the canary, plus the shared runs without


def small_adult() -> tuple[Schema, pd.DataFrame]:
    full = load_schema(DATA / "adult.schema.yaml")
    spec = full.to_dict()
    spec["columns"] = [c for c in spec["columns"] if c["name"] in COLUMNS]
    spec["rules"] = []  # no rule involves these columns
    schema = Schema.from_dict(spec)
    table = full.read_csv(DATA / "adult.csv")[list(schema.domain())]
    return schema, table


def rarest_record(schema: Schema, table: pd.DataFrame) -> pd.DataFrame:
    """The value combination with the fewest rows (first in code order among ties), as one row."""
    domain = schema.domain()
    codes = schema.encode(table)
    flat = np.ravel_multi_index(codes.T, tuple(domain.values()))
    cell = int(np.argmin(np.bincount(flat, minlength=int(np.prod(list(domain.values()))))))
    record = np.array(np.unravel_index(cell, tuple(domain.values()))).reshape(1, -1)
    return schema.decode(record, np.random.default_rng(0))[list(domain)]


def job_plan(schema: Schema, epsilon: float, rows: int) -> JobPlan:
    """The central plan: two nominal organisations only to pass JobConfig's t < parties; t = 1."""
    with tempfile.TemporaryDirectory() as tmp:
        config = JobConfig(schema=schema, parties=2, epsilon=epsilon, delta=DELTA, out=Path(tmp) / "r",
                           min_survivors=1, rows=rows, labels="generator", generator=SETTINGS)
        return plan_job(config)


def run_once(schema: Schema, plan: JobPlan, table: pd.DataFrame, seed: int) -> tuple[list[Measurement], float]:
    """One generator run on ``table``: every measurement it released and the ledger's epsilon."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.jsonl", cap_epsilon=1e6, delta=DELTA)
        agg = CentralAggregator([Organisation("pooled", lambda _schema: table, accepts=schema)], ledger, seed=seed)
        model = fit_generator(agg, schema, plan.generator, np.random.default_rng(seed), lambda _m: None)
        return list(model.measurements), ledger.epsilon().epsilon


def canary_cells(schema: Schema, canary: pd.DataFrame, clique: Sequence[str]) -> int:
    """Index of the canary's cell in the flattened marginal of ``clique``."""
    domain = schema.domain()
    code = dict(zip(domain, schema.encode(canary)[0], strict=True))
    return int(np.ravel_multi_index(tuple(int(code[c]) for c in clique), tuple(domain[c] for c in clique)))


def score(schema: Schema, canary: pd.DataFrame, base: pd.DataFrame, measurements: list[Measurement]) -> float:
    """The likelihood-ratio score of a shift in the canary's cells (module docstring)."""
    codes = schema.encode(base)
    columns = list(schema.domain())
    canary_codes = schema.encode(canary)[0]
    total, weight = 0.0, 0.0
    for m in measurements:
        idx = [columns.index(c) for c in m.clique]
        without = int(np.all(codes[:, idx] == canary_codes[idx], axis=1).sum())
        total += (float(m.noisy[canary_cells(schema, canary, m.clique)]) - without) / m.sigma**2
        weight += 1.0 / m.sigma**2
    return total / np.sqrt(weight)


def world(
    schema: Schema, plan: JobPlan, base: pd.DataFrame, canary: pd.DataFrame, copies: int, runs: int, label: str
) -> tuple[np.ndarray, float, float]:
    """Scores of ``runs`` runs on ``base`` plus ``copies`` canaries; the largest epsilon spent; seconds."""
    table = pd.concat([base] + [canary] * copies, ignore_index=True)
    scores, spent, start = [], 0.0, time.perf_counter()
    for r in range(runs):
        measurements, eps = run_once(schema, plan, table, seed=100_000 * copies + r)
        scores.append(score(schema, canary, base, measurements))
        spent = max(spent, eps)
        if (r + 1) % 25 == 0 or r + 1 == runs:
            print(f"  {label}: {r + 1}/{runs} runs, {time.perf_counter() - start:.0f} s, "
                  f"score mean {np.mean(scores):.2f} sd {np.std(scores):.2f}", file=sys.stderr, flush=True)
    return np.array(scores), spent, time.perf_counter() - start


def claimed_epsilon(plan: JobPlan, group: int) -> float:
    return CombinedAccountant().compose(group_event(plan.event, group)).epsilon(DELTA).epsilon


def audit_epsilon(schema: Schema, base: pd.DataFrame, canary: pd.DataFrame, epsilon: float, runs: int,
                  groups: Sequence[int]) -> list[Row]:
    plan = job_plan(schema, epsilon, len(base))
    out, spent, out_seconds = world(schema, plan, base, canary, 0, runs, f"eps {epsilon:g} without canary")
    rows = []
    for k in groups:
        into, _, seconds = world(schema, plan, base, canary, k, runs, f"eps {epsilon:g} with {k} canary")
        claimed = claimed_epsilon(plan, k)
        result: AuditResult = audit(out, into, THRESHOLDS, DELTA)
        ceiling = sample_ceiling(claimed, DELTA, runs, runs, len(THRESHOLDS))
        rows.append(Row(epsilon, k, claimed, spent, result.lower, result.upper, result.estimate, ceiling,
                        result.threshold, result.false_positives, result.false_negatives, runs,
                        out_seconds + seconds))
    return rows


def table(rows: list[Row]) -> str:
    head = (f"{'target':>6} {'k':>2} {'claimed':>8} {'eps_lb':>7} {'95% interval':>16} {'estimate':>8} "
            f"{'ceiling':>7} {'lb/claim':>8} {'thr':>4} {'FP':>4} {'FN':>4} {'runs':>5} {'seconds':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        interval = f"[{r.lower:.2f}, {r.upper:.2f}]"
        lines.append(
            f"{r.epsilon:>6g} {r.group:>2} {r.claimed:>8.3f} {r.lower:>7.3f} {interval:>16} {r.estimate:>8.3f} "
            f"{r.ceiling:>7.3f} {r.lower / r.claimed:>8.3f} {r.threshold:>4.1f} {r.false_positives:>4} "
            f"{r.false_negatives:>4} {r.runs:>5} {r.seconds:>8.0f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epsilons", default="1,4", help="target epsilons, comma-separated (default 1,4)")
    parser.add_argument("--runs", type=int, default=300, help="runs per world (default 300)")
    parser.add_argument("--groups", default="1,4", help="canary copies k to audit, comma-separated (default 1,4)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    groups = [int(k) for k in args.groups.split(",")]
    if args.runs < 1 or any(k < 1 for k in groups) or any(e <= 0 for e in epsilons):
        parser.error("--runs and every group size must be at least 1, every epsilon positive")

    schema, base = small_adult()
    canary = rarest_record(schema, base)
    rows_with_canary = int((base == canary.iloc[0]).all(axis=1).sum())
    print("Empirical privacy audit of the marginal generator (fedsynth.server.generator.fit_generator)")
    print("run by one curator through server.central.CentralAggregator, Skellam noise at the planned mu;")
    print("SecAgg+/Flower, the profile round, row sampling and the teacher are not covered (see --help).")
    print(f"data: fedsynth/data/adult.csv, columns {', '.join(schema.domain())} ({len(base)} rows), delta {DELTA:g}")
    print(f"canary: {canary.iloc[0].to_dict()} ({rows_with_canary} such rows in the data), added k times")
    print(f"attack: LR score over the canary's cells in every released measurement; thresholds "
          f"{THRESHOLDS[0]:g}..{THRESHOLDS[-1]:g} step 0.5, best kept, Bonferroni over {len(THRESHOLDS)}")
    rows: list[Row] = []
    for epsilon in epsilons:
        rows += audit_epsilon(schema, base, canary, epsilon, args.runs, groups)
    print()
    print(table(rows))
    print()
    print("claimed: the accountant's epsilon at delta for the plan (for k records: every sensitivity times k);")
    print("eps_lb: the empirical lower bound (97.5% one-sided; the low end of the 95% interval);")
    print("ceiling: the most these runs could show against a mechanism exactly meeting the claim;")
    print("seconds: the world with the canary plus the shared world without it.")
    spent = {r.epsilon: r.spent for r in rows}
    print("spent (the ledger's epsilon for one record, largest over the runs): "
          + ", ".join(f"{s:.4f} at target {e:g}" for e, s in spent.items()))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    broken = [r for r in rows if r.lower > r.claimed]
    for r in broken:
        print(f"VIOLATION: target {r.epsilon:g}, k = {r.group}: lower bound {r.lower:.3f} > claim {r.claimed:.3f}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
