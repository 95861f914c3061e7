"""Shared setup of the benchmarks: the benchmark datasets from the project's shared folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.common.schema import Schema

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def adult_discretised(seed: int = 0) -> tuple[Schema, pd.DataFrame, pd.DataFrame]:
    """The private-pgm Adult (14 integer-coded columns), split 80/20 with ``seed``.

    Its schema is the published domain file: every column categorical with codes 0..k-1.
    """
    folder = SHARED / "adult"
    domain = json.loads((folder / "adult-domain.json").read_text())
    schema = Schema.from_dict(
        {
            "name": "adult-discretised",
            "label": "income>50K",
            "na_values": [],
            "columns": [
                {"name": c, "kind": "categorical", "categories": [str(i) for i in range(k)]}
                for c, k in domain.items()
            ],
        }
    )
    table = pd.read_csv(folder / "adult.csv", dtype=str)[list(domain)]
    order = np.random.default_rng(seed).permutation(len(table))
    cut = int(0.8 * len(table))
    train = table.iloc[order[:cut]].reset_index(drop=True)
    test = table.iloc[order[cut:]].reset_index(drop=True)
    return schema, train, test
