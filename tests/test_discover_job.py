"""``discover = SHARE``: schema discovery as the first phase of a job, over real Flower and SecAgg+.

The plan shows the phase before anything runs; the release's ``privacy.json`` accounts it under
``per_phase`` ``schema``, and its schema is the discovered one, with its provenance.
"""

import json

import numpy as np
import pandas as pd
import pytest

from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.schema import Schema, load_schema
from fedsynth.server.job import JobConfig, preflight
from fedsynth.simulations.main import simulate
from fedsynth.simulations.split import split_table

#: The job's schema names the columns, their kinds and the label; its lists and bounds are guesses
#: that discovery replaces ("cat" alone, ages 0..10).
GIVEN = Schema.from_dict({"name": "pets", "label": "pet", "na_values": ["?"], "columns": [
    {"name": "pet", "kind": "categorical", "categories": ["cat"]},
    {"name": "age", "kind": "integer", "lower": 0, "upper": 10, "bins": 2, "missing": True},
]})
SMALL = GeneratorSettings(rounds=1, per_round=1, fit_iters=50, final_iters=100, score_sample=5_000)


def table(rows: int = 6000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"pet": rng.choice(["cat", "dog", "eel"], rows, p=[0.5, 0.3, 0.2]).astype(object),
                          "age": rng.integers(20, 60, rows).astype(str).astype(object)})
    frame.loc[: rows // 10, "age"] = "?"
    frame.loc[3:5, "pet"] = "rarebird"
    return frame


def config(out, discover=0.3) -> JobConfig:
    return JobConfig(schema=GIVEN, parties=3, epsilon=3.0, delta=1e-6, out=out, min_survivors=3, generator=SMALL,
                     labels="generator", discover=discover)


def test_the_plan_shows_the_discovery_phase_before_anything_runs(tmp_path):
    plan = preflight(config(tmp_path / "r"))
    assert plan.summary()["schema"]["epsilon"] == pytest.approx(0.9)
    assert "schema" in plan.noise_multipliers() and 0.995 * 3.0 <= plan.epsilon_planned <= 3.0  # the rest fills it
    assert "schema" not in preflight(config(tmp_path / "r", discover=0.0)).summary()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("discover-job") / "release"
    parties = split_table(table(), 3, "iid", None, 0)
    return simulate(config(out), parties, progress=lambda _m: None)


def test_the_release_accounts_the_discovery_phase_and_uses_the_discovered_schema(release):
    statement = json.loads((release.path / "privacy.json").read_text())
    assert set(statement["per_phase"]) == {"schema", "generator"}
    assert statement["epsilon"] <= 3.0
    assert [e["phase"] for e in statement["events"]][0] == "schema"
    schema = load_schema(release.path / "schema.yaml")
    assert schema.provenance["phase"] == "schema" and schema.label == "pet"
    assert set(schema["pet"].categories) == {"cat", "dog", "eel", "other"}
    assert schema["age"].lower <= 20 and schema["age"].upper >= 59 and schema["age"].missing
    synthetic = pd.read_csv(release.path / "synthetic.csv", dtype=str, keep_default_na=False)
    missing = {"?"} if schema["pet"].missing else set()  # the noisy missing count may give pet a spare code
    assert set(synthetic["pet"]) <= {"cat", "dog", "eel", "other"} | missing


def test_the_rest_of_the_job_takes_what_the_discovery_left_of_epsilon(release):
    """Composition is sub-additive: the rest planned at its stand-alone share (2.1 of 3) and the
    discovery's rounds would compose well below 3; the rest is planned up to the whole."""
    statement = json.loads((release.path / "privacy.json").read_text())
    assert 0.995 * 3.0 <= statement["plan"]["epsilon_planned"] <= 3.0
    assert statement["epsilon"] <= 3.0
