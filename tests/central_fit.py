"""A small generator fitted behind one curator (``CentralAggregator``) over three organisations'
parts of a table: what the generator tests of fine grids and group-constant columns share."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.client.organisation import Organisation
from fedsynth.common.accounting import Ledger
from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.schema import Schema
from fedsynth.server.central import CentralAggregator
from fedsynth.server.generator import fit_generator
from fedsynth.server.job import JobConfig, JobPlan, plan_job

#: One selection round of one marginal, short fits: enough to exercise every phase.
SMALL = GeneratorSettings(rounds=1, per_round=1, fit_iters=100, final_iters=300, score_sample=20_000)


def fit_three(schema: Schema, table: pd.DataFrame, tmp_path: Path):  # noqa: ANN201 (the model, its plan, its ledger)
    """The generator fitted at epsilon 1 on ``table`` split into three organisations."""
    config = JobConfig(schema, 3, 1.0, 1e-6, tmp_path / "out", 2, generator=SMALL, labels="generator")
    plan: JobPlan = plan_job(config)
    parts = np.array_split(np.arange(len(table)), 3)
    orgs = [Organisation(f"org-{i}", lambda _s, p=p: table.iloc[p].reset_index(drop=True), accepts=schema)
            for i, p in enumerate(parts)]
    ledger = Ledger(Path(tempfile.mkdtemp(dir=tmp_path)) / "ledger.jsonl", cap_epsilon=1.0, delta=1e-6)
    model = fit_generator(CentralAggregator(orgs, ledger, seed=0), schema, plan.generator, np.random.default_rng(0),
                          lambda _m: None)
    return model, plan, ledger
