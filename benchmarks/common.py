"""Shared setup of the benchmarks: the benchmark datasets from the project's shared folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.common.schema import Schema, load_schema

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ACS_SCHEMA = Path(__file__).resolve().parents[1] / "tests" / "data" / "acs_ma2019.schema.yaml"


def adult_discretised(seed: int = 0, folder: Path = SHARED / "adult") -> tuple[Schema, pd.DataFrame, pd.DataFrame]:
    """The private-pgm Adult (14 integer-coded columns) in ``folder``, split 80/20 with ``seed``.

    Its schema is the published domain file: every column categorical with codes 0..k-1.
    """
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


def acs_massachusetts(folder: Path = SHARED / "acs") -> tuple[Schema, pd.DataFrame, pd.DataFrame]:
    """The NIST ACS excerpt for Massachusetts in ``folder``: its hand-written public schema
    (``tests/data/acs_ma2019.schema.yaml``), the 2019 rows and the 2018 rows (as text, N = missing)."""
    schema = load_schema(ACS_SCHEMA)
    return schema, schema.read_csv(folder / "ma2019.csv"), schema.read_csv(folder / "ma2018.csv")
