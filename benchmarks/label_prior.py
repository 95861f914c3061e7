"""The student labeller on one release: what its matched class prior and its share of the
generator's labels do to the release's labels.

The student is distilled from the DP teacher and, with weight ``generator_weight``, from the labels
the generator drew for the synthetic rows; its class prior is then matched to the label's shares
among those rows (``common.student``). This script takes a kept release whose labels are the
student's (``heterogeneity.py --labels sample --keep DIR``), draws rows from its model as
``Release.sample`` does, and labels them, ``--seeds`` times each: with the teacher's own
probabilities (what the student was distilled from before its prior was matched; the same
ranking), with a student distilled from the teacher alone (``generator_weight`` 0, the student
before 2026-12-07), with one distilled as the job now does (both re-distilled here on the rows the
job distils on, so the two differ only in the weight) and with the generator's own label column.
It prints the heterogeneity benchmark's TVD over 2-way marginals (all of them, the label's pairs,
the others), TSTR (HGB) and the share of the positive class, and the two students' ratios.

    python benchmarks/label_prior.py --release DIR [--seeds 2] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import add_data_root, data_root
from heterogeneity import LABEL, LOADERS, POSITIVE, Scorer

from fedsynth.common.student import StudentSettings, distil, relabel
from fedsynth.server.generator import sample_rows, synthetic_codes
from fedsynth.server.release import Release

FIGURES = ("tvd2", "tvd2_label_pairs", "tvd2_other_pairs", "auc_hgb", "positive_share")
STUDENTS = ("student, teacher alone", "student, and generator")


def students(release: Release) -> dict:
    """Students distilled from the release's teacher on the rows its job distilled on (its
    ``rows`` and ``seed``, ``job.toml``), from the teacher alone and as the job does now."""
    job = tomllib.loads((release.path / "job.toml").read_text())
    codes = synthetic_codes(release.model(), release.schema, job["rows"], job["seed"])
    teacher, now = release.labeller["teacher"], StudentSettings()
    return {name: distil(teacher, release.features, codes, settings, job["seed"])
            for name, settings in ((STUDENTS[0], replace(now, generator_weight=0.0)), (STUDENTS[1], now))}


def labellers(release: Release) -> dict:
    """``name -> relabel(codes, rng)`` (None: the generator's own label column)."""
    features = release.features

    def by(model):  # noqa: ANN001, ANN202
        return lambda codes, rng: relabel(codes, features, model, "sample", rng)

    return {"teacher's probabilities": by(release.labeller["teacher"]),
            **{name: by(student) for name, student in students(release).items()}, "generator's labels": None}


def scores(release: Release, scorer: Scorer, label, seeds: int) -> list[dict]:  # noqa: ANN001
    """The scorer's figures for ``seeds`` samples of the real table's size, labelled by ``label``."""
    ds, out = scorer.dataset, []
    for seed in range(seeds):
        rows = sample_rows(release.model(), release.schema, len(ds.train), np.random.default_rng(seed), label)
        frame = ds.schema.conform(rows)
        out.append({**scorer.score(ds.schema.encode(frame), frame),
                    "positive_share": float((frame[LABEL].astype(str) == POSITIVE).mean())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, required=True, help="an Adult release labelled by its student")
    parser.add_argument("--seeds", type=int, default=2)
    add_data_root(parser)
    args = parser.parse_args()
    ds = LOADERS["adult"](data_root(args.data_root, ["adult"], "label_prior.py"), False)
    scorer, release = Scorer(ds), Release.load(args.release)
    if release.labeller is None:
        sys.exit(f"label_prior.py: {args.release} has no labeller.pt (its labels are the generator's)")
    real = float((ds.train[LABEL].astype(str) == POSITIVE).mean())
    print(f"{ds.title}: {args.release}; {len(ds.train):,} rows per sample, {args.seeds} seeds; mean (each seed); "
          f"the real positive share {real:.4f}")
    print(f"{'labels':<26}" + "".join(f"{f:>30}" for f in FIGURES))
    results = {name: scores(release, scorer, label, args.seeds) for name, label in labellers(release).items()}
    for name, rows in results.items():
        cells = [f"{np.mean([r[f] for r in rows]):.4f} ({' '.join(f'{r[f]:.4f}' for r in rows)})" for f in FIGURES]
        print(f"{name:<26}" + "".join(f"{c:>30}" for c in cells))
    for figure in ("tvd2", "tvd2_label_pairs", "auc_hgb"):
        base, new = (np.mean([r[figure] for r in results[name]]) for name in STUDENTS)
        print(f"{figure} {STUDENTS[1]} / {STUDENTS[0]}: {new / base:.3f}")


if __name__ == "__main__":
    sys.exit(main())
