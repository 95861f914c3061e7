"""What federating costs the generator: one job, in-process, with each federated ingredient taken away.

Runs the generator phase of a job (``server.job.run_job_with``, the CLI's job code, generator
labels) on coded Adult split over ``--parties`` organisations, with an in-process aggregator
instead of Flower (``server.central.CentralAggregator``, which draws every organisation's noise
from one seeded generator: the variants of one seed share their draws wherever their paths agree,
so their differences are the variants', not the noise's). Per seed:

* ``federated``: every secure sum sized against collusion as the Flower federation sizes it
  (``NoisySumSpec.against_collusion``: the sum carries ``n / (2t - n)`` times the planned noise
  when all ``n`` survive, so that any ``2t - n`` honest shares carry it), the organisations'
  profile and the organisation column: what ``fedsynth simulate`` runs;
* ``no collusion margin``: the same without that margin (what a federation that trusted its
  coordinator not to collude with ``n - t`` organisations would add; not offered by fedsynth);
* ``no profile``: without the profile and the organisation column
  (``GeneratorSettings(organisation_column=False)``, an option of the job);
* ``central``: one curator holding every row, the same generator code (``heterogeneity.central``).

It prints the heterogeneity benchmark's figures (2-way and 3-way TVD at the columns' own codes,
the label's 14 pairs, TSTR AUC with HGB, epsilon spent) and each variant's TVD2 over
``federated``'s of the same seed.

    python benchmarks/federation_cost.py [--seeds 0,1] [--parties 10] [--split dirichlet:0.5] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from common import add_data_root, data_root
from heterogeneity import Dataset, Options, Scorer, central, job, load_adult

from fedsynth.client.organisation import Organisation
from fedsynth.common.generator import GeneratorSettings
from fedsynth.server.central import CentralAggregator
from fedsynth.server.job import run_job_with
from fedsynth.simulations.split import split_table

VARIANTS = ("federated", "no collusion margin", "no profile", "central")
FIGURES = ("tvd2", "tvd3", "tvd2_label_pairs", "auc_hgb", "spent")


class CollusionSized(CentralAggregator):
    """The in-process aggregator with every round's noise sized as ``server.secure_sum`` sizes it."""

    def noisy_sum(self, spec, request, **kwargs):  # noqa: ANN001, ANN003, ANN201
        return super().noisy_sum(spec.against_collusion(self.num_clients), request, **kwargs)


def federated(ds: Dataset, seed: int, parties: int, split: str, variant: str) -> tuple[np.ndarray, pd.DataFrame, float]:
    """One job over ``parties`` organisations in-process; its rows' codes, frame and epsilon spent."""
    settings = replace(GeneratorSettings(), organisation_column=variant != "no profile")
    aggregator = CentralAggregator if variant == "no collusion margin" else CollusionSized
    with tempfile.TemporaryDirectory() as tmp:
        config = job(ds, 1.0, parties, Path(tmp) / "release", settings, Options(seed=seed), split)
        tables = split_table(ds.train, parties, split, ds.skew, seed=seed)
        orgs = [Organisation(f"org-{i:02d}", lambda _s, t=t: t, accepts=config.schema) for i, t in enumerate(tables)]
        release = run_job_with(lambda ledger: aggregator(orgs, ledger, seed=seed), config, lambda _m: None)
        frame = config.schema.conform(config.schema.read_csv(release.path / "synthetic.csv"))
        spent = json.loads((release.path / "privacy.json").read_text())["epsilon"]
    return config.schema.encode(frame), frame, spent


def run(root: Path, seed: int, parties: int, split: str, variant: str) -> dict:
    """One variant's figures, in a child process of its own (``main``)."""
    ds = load_adult(root, False)
    scorer = Scorer(ds)
    if variant == "central":
        with tempfile.TemporaryDirectory() as tmp:
            config = job(ds, 1.0, 2, Path(tmp), replace(GeneratorSettings(), organisation_column=False),
                         Options(seed=seed), "central")
            codes, frame, info = central(config, ds.train, ds.by_column)
        spent = info["spent"]
    else:
        codes, frame, spent = federated(ds, seed, parties, split, variant)
    return {**scorer.score(codes, frame), "spent": spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--parties", type=int, default=10)
    parser.add_argument("--split", default="dirichlet:0.5")
    add_data_root(parser)
    args = parser.parse_args()
    root = data_root(args.data_root, ["adult"], "federation_cost.py")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"Adult (coded): {args.parties} organisations, {args.split}, epsilon 1, delta 1e-9, generator labels")
    print(f"{'variant':<22}{'seed':>5}" + "".join(f"{f:>18}" for f in FIGURES) + f"{'TVD2 / federated':>18}")
    results = {variant: [] for variant in VARIANTS}
    # A process per job: JAX compiles programs for every new model structure, and one process
    # running many jobs once failed with "LLVM compilation error: Cannot allocate memory".
    spawn = multiprocessing.get_context("spawn")
    for seed in seeds:
        for variant in VARIANTS:
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
                row = child.submit(run, root, seed, args.parties, args.split, variant).result()
            results[variant].append(row)
            ratio = row["tvd2"] / results["federated"][-1]["tvd2"]
            print(f"{variant:<22}{seed:>5}" + "".join(f"{row[f]:>18.4f}" for f in FIGURES) + f"{ratio:>18.3f}", flush=True)
    print("mean over seeds")
    for variant, rows in results.items():
        means = {f: float(np.mean([r[f] for r in rows])) for f in FIGURES}
        ratio = np.mean([r["tvd2"] / base["tvd2"] for r, base in zip(rows, results["federated"], strict=True)])
        print(f"{variant:<22}{'':>5}" + "".join(f"{means[f]:>18.4f}" for f in FIGURES) + f"{ratio:>18.3f}")


if __name__ == "__main__":
    sys.exit(main())
