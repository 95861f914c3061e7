"""Shared setup of the benchmarks: the public benchmark datasets, from a data root.

Every benchmark that reads real data takes ``--data-root DIR`` (:func:`add_data_root`): a folder
with ``adult/`` and ``acs/`` as :data:`DATASETS` lists them. Without it, the benchmarks look in
``shared/data`` beside the repository when that folder exists; a dataset whose files are absent
stops the benchmark with exit status 2 and says where to download it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.common.schema import Schema, load_schema

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
ACS_SCHEMA = Path(__file__).resolve().parents[1] / "tests" / "data" / "acs_ma2019.schema.yaml"

#: Each public dataset: the files a benchmark reads (under the data root) and where to get them.
DATASETS = {
    "adult": (
        ("adult/adult.csv", "adult/adult-domain.json"),
        "UCI Adult (https://archive.ics.uci.edu/dataset/2/adult, CC BY 4.0) in the discretised form of the "
        "private-pgm/AIM papers: download data/adult.csv and data/adult-domain.json from "
        "https://github.com/ryan112358/private-pgm (folder data/) into DATA_ROOT/adult/",
    ),
    "acs": (
        ("acs/ma2019.csv", "acs/ma2018.csv"),
        "NIST CRC Diverse Communities Data Excerpts (ACS 2018/2019, Massachusetts): download ma2019.csv and "
        "ma2018.csv from https://github.com/usnistgov/SDNist, folder "
        "nist diverse communities data excerpts/massachusetts (BenchmarkData/ACSDataExcerpts/massachusetts in "
        "older versions), into DATA_ROOT/acs/",
    ),
}


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """The ``--data-root`` option every benchmark on real data takes."""
    default = DEFAULT_DATA_ROOT if DEFAULT_DATA_ROOT.is_dir() else None
    parser.add_argument(
        "--data-root", "--data-dir", dest="data_root", type=Path, default=default,
        help="folder holding adult/ and acs/ (default: shared/data beside the repository, when it exists)",
    )


def data_root(root: Path | None, datasets: Sequence[str], program: str) -> Path:
    """``root`` once every file of ``datasets`` is there; otherwise exit 2 saying where to get them."""
    problems = []
    for key in datasets:
        files, source = DATASETS[key]
        missing = [name for name in files if root is None or not (root / name).is_file()]
        if missing:
            problems.append(f"dataset {key!r}: no {', '.join(missing)}"
                            f"{'' if root is None else f' under {root}'}. Get it: {source}")
    if problems:
        where = "no --data-root given and no shared/data beside the repository" if root is None else ""
        print(f"{program}: {where + '; ' if where else ''}" + "\n".join(problems)
              + "\nthen pass --data-root DATA_ROOT", file=sys.stderr)
        sys.exit(2)
    return root


def adult_discretised(seed: int, folder: Path) -> tuple[Schema, pd.DataFrame, pd.DataFrame]:
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


def acs_massachusetts(folder: Path) -> tuple[Schema, pd.DataFrame, pd.DataFrame]:
    """The NIST ACS excerpt for Massachusetts in ``folder``: its hand-written public schema
    (``tests/data/acs_ma2019.schema.yaml``), the 2019 rows and the 2018 rows (as text, N = missing)."""
    schema = load_schema(ACS_SCHEMA)
    return schema, schema.read_csv(folder / "ma2019.csv"), schema.read_csv(folder / "ma2018.csv")
