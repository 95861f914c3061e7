"""``fedsynth schema discover`` end to end: real Flower simulation, real SecAgg+ with Skellam shares.

Every round is in the federation's ledger and in every organisation's guard ledger under phase
``schema``; organisations whose column configurations disagree get one clear error naming the
column and the organisations' counts, exit 2, and nothing is written.
"""

import json

import numpy as np
import pandas as pd
import pytest

from fedsynth.cli import main
from fedsynth.common.accounting import Ledger
from fedsynth.common.discovery import DiscoveryError, DiscoverySettings
from fedsynth.common.schema import load_schema
from fedsynth.server.discovery import DiscoveryPlan
from fedsynth.simulations.discover import discover_in_simulation
from fedsynth.simulations.split import split_table


def small_table(rows: int = 1800, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "pet": rng.choice(["cat", "dog", "eel"], rows, p=[0.5, 0.3, 0.2]).astype(object),
        "age": rng.integers(20, 60, rows).astype(str).astype(object),
    })
    table.loc[: rows // 10, "age"] = "?"
    table.loc[3:5, "pet"] = "rarebird"  # 3 rows: never released
    return table


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("discover")
    parties = split_table(small_table(), 3, "iid", None, 0)
    configs = [{"pet": "categorical", "age": "integer"}] * 3
    plan = DiscoveryPlan(epsilon=2.0, delta=1e-6, min_survivors=3, na_values=("?",),
                         settings=DiscoverySettings(max_bytes=4, bins=4))
    found = discover_in_simulation(parties, configs, plan, tmp / "ledger.jsonl", tmp / "guards", progress=lambda _m: None)
    return found, tmp


def test_the_discovered_schema_lists_the_common_values_and_the_bounds(run):
    found, _ = run
    pet, age = found["columns"]
    assert set(pet["categories"]) == {"cat", "dog", "eel", "other"} and pet["other"] == "other"
    assert age["missing"] is True and age["lower"] <= 20 and age["upper"] >= 59 and age["out_of_range"] == "clip"
    assert found["provenance"]["organisations"] == ["party-0", "party-1", "party-2"]
    assert 0 < found["provenance"]["epsilon_spent"] <= 2.0


def test_every_round_is_in_every_ledger_under_phase_schema(run):
    found, tmp = run
    rounds = found["provenance"]["rounds"]
    federation = Ledger(tmp / "ledger.jsonl", cap_epsilon=2.0, delta=1e-6)
    assert [e.phase for e in federation.entries] == ["schema"] * rounds
    for org in ("party-0", "party-1", "party-2"):
        guard = Ledger(tmp / "guards" / f"{org}.jsonl", cap_epsilon=2.0, delta=1e-6)
        assert [(e.phase, e.mechanism) for e in guard.entries] == [("schema", "discovery")] * rounds
        assert [e.metadata["dim"] for e in guard.entries] == [e.metadata["dim"] for e in federation.entries]


def test_organisations_whose_columns_disagree_are_refused_naming_the_column(tmp_path):
    parties = split_table(small_table(300), 3, "iid", None, 0)
    configs = [{"pet": "categorical", "age": "integer"}] * 2 + [{"pet": "categorical", "age": "numeric"}]
    plan = DiscoveryPlan(epsilon=1.0, delta=1e-6, min_survivors=3)
    with pytest.raises(DiscoveryError, match=r"column 'age': integer at 2 organisations \(party-0, party-1\); "
                                             r"numeric at 1 organisation \(party-2\)"):
        discover_in_simulation(parties, configs, plan, tmp_path / "ledger.jsonl", tmp_path / "guards")
    assert len(Ledger(tmp_path / "ledger.jsonl", cap_epsilon=1.0, delta=1e-6)) == 0


def test_the_command_exits_2_and_writes_nothing_when_kinds_disagree(tmp_path, capsys):
    table = small_table(300)
    table["region"] = np.where(np.arange(300) < 100, "north", "south")
    table.loc[table["region"] == "north", "age"] = "40.5"  # one organisation's rows read as numeric
    data = tmp_path / "t.csv"
    table.to_csv(data, index=False)
    out = tmp_path / "schema.yaml"
    code = main(["schema", "discover", "--data", str(data), "--parties", "2", "--split", "by-column:region",
                 "--epsilon", "1", "--out", str(out), "--na-values", "?"])
    err = capsys.readouterr().err
    assert code == 2
    assert "column 'age': " in err and "at 1 organisation" in err and "nothing was written" in err
    assert "40.5" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [data]


def test_the_command_refuses_a_threshold_colluders_could_get_round_before_reading_anything(tmp_path, capsys):
    out = tmp_path / "schema.yaml"
    code = main(["schema", "discover", "--data", str(tmp_path / "absent.csv"), "--parties", "3", "--min-survivors", "2",
                 "--epsilon", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--min-survivors 2 of --parties 3" in err and "2n/3 < t <= n" in err
    assert "nothing was written" in err and not out.exists()


def test_with_fewer_survivors_required_than_organisations_every_guard_admits_every_round(tmp_path):
    """4 organisations, t = 3: the sums carry 4/2 times the noise every guard records (its share
    against n - t colluders), so a filter composed at the survivors' noise would plan the last
    rounds past every guard's cap and see them refused."""
    parties = split_table(small_table(), 4, "iid", None, 0)
    plan = DiscoveryPlan(epsilon=1.0, delta=1e-6, min_survivors=3, na_values=("?",),
                         settings=DiscoverySettings(max_bytes=4, bins=4))
    found = discover_in_simulation(parties, [{"pet": "categorical", "age": "integer"}] * 4, plan,
                                   tmp_path / "ledger.jsonl", tmp_path / "guards", progress=lambda _m: None)
    provenance = found["provenance"]
    assert provenance["rounds"] > 2
    assert provenance["epsilon_spent"] < provenance["epsilon_guards"] <= 1.0
    assert provenance["epsilon_guards"] > 0.99  # the filter spends what the guards allow
    for org in ("party-0", "party-1", "party-2", "party-3"):
        guard = Ledger(tmp_path / "guards" / f"{org}.jsonl", cap_epsilon=1.0, delta=1e-6)
        assert len(guard) == provenance["rounds"]
        assert guard.epsilon().epsilon == pytest.approx(provenance["epsilon_guards"], abs=1e-6)
