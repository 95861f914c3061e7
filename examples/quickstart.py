"""fedsynth from Python: simulate a federation, resample for free, label rows, read the privacy summary.

Run it from the repository root (it writes ``quickstart-release/`` in the current folder, or in
the folder given as its one argument)::

    .venv/bin/python examples/quickstart.py [OUT_DIR]

1. Three organisations hold parts of the bundled Adult sample (split at random here; in real life
   each holds its own table). ``FederatedSynthesizer.fit`` runs the whole job in Flower's
   simulation engine with real SecAgg+: a DP marginal generator, a DP-SGD teacher, a student.
2. ``Release.sample`` draws as many further rows as wanted from the release's own noisy marginals:
   post-processing, so the privacy ledger does not change.
3. ``Release.label`` labels other rows with the released student (again post-processing).
4. ``Release.privacy`` is the privacy statement in brief; ``privacy.json`` holds all of it.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import fedsynth
from fedsynth.cli import bundled


def split_into_organisations(table: pd.DataFrame, parties: int, seed: int) -> list[pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(table))
    return [table.iloc[part].reset_index(drop=True) for part in np.array_split(order, parties)]


def main(out_dir: Path) -> None:
    schema_path = bundled("adult.schema.yaml")
    table = pd.read_csv(bundled("adult.csv"), dtype=str, keep_default_na=False)
    organisations = split_into_organisations(table, parties=3, seed=0)

    # 1. one job over three organisations: generator, DP-SGD teacher, student (defaults otherwise)
    synth = fedsynth.FederatedSynthesizer(schema_path, epsilon=1.0, delta=1e-6, seed=0)
    release = synth.fit(organisations, out=out_dir / "quickstart-release", progress=lambda _message: None)
    print(f"released {release.rows:,} rows to {release.path}")

    # 2. free resampling: reload the release folder, draw 20,000 rows, check the ledger is unchanged
    ledger = release.path / "ledger.jsonl"
    before = hashlib.sha256(ledger.read_bytes()).hexdigest()
    loaded = fedsynth.Release.load(release.path)
    more = loaded.sample(20_000, seed=1)
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == before, "resampling must not touch the ledger"
    print(f"sampled {len(more):,} more rows for free; label shares: "
          f"{more[loaded.schema.label].value_counts(normalize=True).round(3).to_dict()}")

    # 3. label rows the job never saw with the released student
    unlabelled = table.drop(columns=[loaded.schema.label]).head(5)
    print("student's labels for 5 rows:", list(loaded.label(unlabelled, seed=2)[loaded.schema.label]))

    # 4. the privacy statement in brief
    summary = loaded.privacy
    print(f"({summary['epsilon']:.3f}, {summary['delta']:.2g})-DP per record [{summary['accountant']}] over "
          f"{summary['organisations']} organisations; per phase: "
          + ", ".join(f"{phase} {eps:.3f}" for phase, eps in summary["per_phase"].items()))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("."))
