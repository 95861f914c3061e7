"""The DP teacher and distilled student against the generator's own labels, in one run.

On the private-pgm Adult (80/20 split, seed 0, delta 1e-9, synthetic rows = train rows),
10 parties with Dirichlet-0.5 label skew in Flower's simulation engine with real SecAgg+,
at each epsilon:
* TSTR AUC (HistGradientBoosting, one-hot logistic regression, trained on the release,
  tested on the real holdout) of the release labelled by the student (``sample`` and
  ``argmax``, one run, budget split generator=0.7,teacher=0.3) and of the release with the
  generator's own labels (``generator``, all budget to the generator), next to TRTR;
* the federated teacher's own holdout AUC against a central Opacus DP-SGD teacher (same
  model, same steps, full batches, Gaussian noise for the same epsilon share) on the pooled
  train split, and their ratio;
* the wall time of one federated DP-SGD step (median over the run's teacher rounds, from
  the ledger's timestamps) relative to one local non-private full-batch step on the pooled
  train split measured in the same process.

    python benchmarks/labeller_utility.py [--epsilons 1,3] [--parties 10] [--split dirichlet:0.5] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import add_data_root, adult_discretised, data_root
from opacus import PrivacyEngine
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from fedsynth.common.student import relabel
from fedsynth.common.metrics import tstr_auc
from fedsynth.common.teacher import Features, TeacherSettings, build_model, predict_proba
from fedsynth.server.job import JobConfig, plan_job
from fedsynth.server.release import load_labeller
from fedsynth.simulations.main import simulate
from fedsynth.simulations.split import split_table

DELTA = 1e-9
LABEL, POSITIVE = "income>50K", "1"


def holdout_auc(model, features: Features, schema, test) -> float:
    proba = predict_proba(model, features.x(schema.encode(test)))
    positive = schema[LABEL].categories.index(POSITIVE)
    return float(roc_auc_score(test[LABEL] == POSITIVE, proba[:, positive]))


def central_opacus_teacher(config: JobConfig, train, features: Features, schema) -> torch.nn.Module:
    """Opacus DP-SGD on the pooled rows: same model and steps, Gaussian noise for the same share."""
    settings = config.teacher
    plan = plan_job(config)
    share = plan.split["teacher"] / sum(plan.split.values())
    codes = schema.encode(train)
    data = TensorDataset(features.x(codes), features.y(codes))
    model = build_model(settings, features, config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    loader = DataLoader(data, batch_size=len(data))
    engine = PrivacyEngine(accountant="rdp")
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model, optimizer=optimizer, data_loader=loader, target_epsilon=config.epsilon * share,
        target_delta=DELTA, epochs=settings.steps, max_grad_norm=settings.clip, poisson_sampling=True,
    )
    for _ in range(settings.steps):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model._module


def local_step_seconds(settings: TeacherSettings, features: Features, codes: np.ndarray, reps: int = 20) -> float:
    x, y = features.x(codes), features.y(codes)
    model = build_model(settings, features, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def federated_step_seconds(release: Path) -> float:
    ledger = [json.loads(line) for line in (release / "ledger.jsonl").read_text().splitlines()]
    stamps = [datetime.datetime.fromisoformat(e["time"]) for e in ledger if e["phase"] == "teacher"]
    return float(np.median([(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epsilons", default="1,3")
    parser.add_argument("--parties", type=int, default=10)
    parser.add_argument("--split", default="dirichlet:0.5")
    parser.add_argument("--teacher", default="logreg", choices=("logreg", "mlp"))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    add_data_root(parser)
    args = parser.parse_args()
    root = data_root(args.data_root, ["adult"], "labeller_utility.py")
    schema, train, test = adult_discretised(seed=0, folder=root / "adult")
    features = Features(schema.domain(), LABEL)
    trtr = {m: tstr_auc(train, test, LABEL, POSITIVE, m) for m in ("hgb", "logreg")}
    print(f"Adult: {len(train):,} train / {len(test):,} test rows; {args.parties} parties {args.split}; "
          f"TRTR AUC hgb {trtr['hgb']:.3f}, logreg {trtr['logreg']:.3f}; delta {DELTA:g}\n")
    parties_tables = split_table(train, args.parties, args.split, LABEL, seed=0)
    rows = []
    for eps in (float(e) for e in args.epsilons.split(",")):
        base = JobConfig(schema=schema, parties=args.parties, epsilon=eps, delta=DELTA, out=Path("unused"),
                         min_survivors=args.parties - 1, rows=len(train), seed=0,
                         teacher=TeacherSettings(model=args.teacher))
        with tempfile.TemporaryDirectory() as tmp:
            started = time.time()
            taught = simulate(replace(base, out=Path(tmp) / "taught"), parties_tables, progress=lambda _m: None)
            taught_seconds = time.time() - started
            started = time.time()
            plain = simulate(replace(base, out=Path(tmp) / "plain", labels="generator"), parties_tables,
                             progress=lambda _m: None)
            plain_seconds = time.time() - started
            models = load_labeller(taught.path, features)
            sampled = schema.read_csv(taught.path / "synthetic.csv")
            argmax = schema.decode(
                relabel(schema.encode(sampled), features, models["student"], "argmax", np.random.default_rng(0)),
                np.random.default_rng(0),
            )
            fed_step = federated_step_seconds(taught.path)
            generator_labelled = schema.read_csv(plain.path / "synthetic.csv")
        central = central_opacus_teacher(base, train, features, schema)
        releases = {"student sample": sampled, "student argmax": argmax,
                    "generator labels": generator_labelled}
        row = {"epsilon": eps, "spent_taught": taught.statement["epsilon"], "spent_plain": plain.statement["epsilon"],
               "seconds_taught": taught_seconds, "seconds_plain": plain_seconds,
               "teacher_auc": holdout_auc(models["teacher"], features, schema, test),
               "central_opacus_teacher_auc": holdout_auc(central, features, schema, test),
               "federated_step_s": fed_step,
               "local_step_s": local_step_seconds(base.teacher, features, schema.encode(train))}
        row["teacher_vs_central"] = row["teacher_auc"] / row["central_opacus_teacher_auc"]
        row["step_vs_local"] = row["federated_step_s"] / row["local_step_s"]
        for name, table in releases.items():
            row[name] = {m: tstr_auc(table, test, LABEL, POSITIVE, m) for m in ("hgb", "logreg")}
        rows.append(row)
        print(f"epsilon {eps:g}: spent {row['spent_taught']:.3f} (teacher run, {taught_seconds:.0f} s), "
              f"{row['spent_plain']:.3f} (generator-only run, {plain_seconds:.0f} s)")
        print(f"  {'labels':<20}{'TSTR hgb':>10}{'TSTR lr':>9}{'vs TRTR hgb':>13}")
        for name in releases:
            print(f"  {name:<20}{row[name]['hgb']:>10.3f}{row[name]['logreg']:>9.3f}"
                  f"{row[name]['hgb'] / trtr['hgb']:>13.3f}")
        print(f"  teacher holdout AUC {row['teacher_auc']:.3f} vs central Opacus DP-SGD "
              f"{row['central_opacus_teacher_auc']:.3f} (ratio {row['teacher_vs_central']:.3f})")
        print(f"  one federated DP-SGD step {row['federated_step_s']:.2f} s vs one local non-private step "
              f"{row['local_step_s'] * 1000:.1f} ms (ratio {row['step_vs_local']:.0f}x)\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"trtr": trtr, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
