"""How much of a release's error is its own sampling: one model, rows drawn two ways.

A release's rows are a sample of its model, and a sample of ``n`` rows scatters every count
around the model's by about ``sqrt(n p)``: independent draws of the real Adult table's own rows
are 0.0165 from it in mean 2-way TVD. The generator draws each column systematically within
each configuration of its parents (``common.generator.Conditional.draw``), so a configuration
held by ``m`` rows gets each value ``floor`` or ``ceil`` of ``m p``. This script takes a kept
release (``heterogeneity.py --keep DIR``), refits its model from ``measurements.json`` as
``Release.sample`` does, and scores rows drawn from that one model with independent draws per
row (the baseline: the sampler before, defined here only) and with the generator's own draws,
``--seeds`` times each, with the heterogeneity benchmark's scorer: TVD over 2-way and 3-way
marginals, TSTR (Adult), the own and SDNist's k-marginal, pmse and inconsistencies (ACS).

    python benchmarks/sampling_noise.py --dataset adult|acs --release DIR [--seeds 2] \
        [--data-root DIR] [--no-sdnist] [--sdnist-root DIR] [--sdnist-cache DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from common import add_data_root, data_root
from heterogeneity import LOADERS, Scorer, sdnist_judge
from sdnist import add_sdnist_options

from fedsynth.common import generator
from fedsynth.server.release import Release

FIGURES = ("tvd2", "tvd3", "auc_hgb", "k_marginal", "sdnist_k_marginal", "sdnist_pmse", "sdnist_violations",
           "rule_violations")


def independent_draw(self: generator.Conditional, parents: Sequence[np.ndarray], rows: int,
                     rng: np.random.Generator) -> np.ndarray:
    """The baseline: each row's value drawn on its own, given its parents."""
    k = np.ravel_multi_index(tuple(parents), self.shape) if self.parents else np.zeros(rows, dtype=np.int64)
    position = np.searchsorted(self.cdf, k + rng.random(rows), side="right")
    return np.clip(position - k * self.size, 0, self.size - 1)


def scores(release: Release, scorer: Scorer, seeds: int) -> list[dict]:
    """The scorer's figures for ``seeds`` samples of the real table's size."""
    ds, out = scorer.dataset, []
    for seed in range(seeds):
        frame = ds.schema.conform(release.sample(len(ds.train), seed=seed))
        out.append(scorer.score(ds.schema.encode(frame), frame))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(LOADERS))
    parser.add_argument("--release", type=Path, required=True, help="a release of that dataset (heterogeneity.py --keep)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--no-sdnist", action="store_true", help="skip SDNist's own scores (ACS)")
    add_data_root(parser)
    add_sdnist_options(parser)
    args = parser.parse_args()
    ds = LOADERS[args.dataset](data_root(args.data_root, [args.dataset], "sampling_noise.py"), False)
    judge = None if args.dataset != "acs" or args.no_sdnist else sdnist_judge(ds, args.sdnist_root, args.sdnist_cache)
    scorer, release = Scorer(ds, judge), Release.load(args.release)
    systematic = generator.Conditional.draw
    results = {}
    for name, draw in (("independent (baseline)", independent_draw), ("systematic (generator)", systematic)):
        generator.Conditional.draw = draw
        results[name] = scores(release, scorer, args.seeds)
    generator.Conditional.draw = systematic
    shown = [f for f in FIGURES if f in next(iter(results.values()))[0]]
    print(f"{ds.title}: {args.release}; {len(ds.train):,} rows per sample, {args.seeds} seeds; mean (each seed)")
    print(f"{'draws':<24}" + "".join(f"{f:>30}" for f in shown))
    for name, rows in results.items():
        cells = [f"{np.mean([r[f] for r in rows]):.4g} ({' '.join(f'{r[f]:.4g}' for r in rows)})" for f in shown]
        print(f"{name:<24}" + "".join(f"{c:>30}" for c in cells))
    base, new = (np.mean([r["tvd2"] for r in rows]) for rows in results.values())
    print(f"TVD2 systematic / independent: {new / base:.3f}")


if __name__ == "__main__":
    sys.exit(main())
