"""Schema discovery's mechanisms, guard and schema, without Flower (the secure sum's noise is
drawn as the organisations' shares would be: Skellam of the round's mu, summed with their counts).

The end-to-end run over real Flower and SecAgg+ is ``tests/test_discover_simulate.py``.
"""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fedsynth.client.app import guarded_share
from fedsynth.client.guard import Guard, GuardPolicy, GuardRefused
from fedsynth.client.organisation import Organisation, RequestRefused
from fedsynth.common.accounting import skellam_event
from fedsynth.common.discovery import DiscoveryError, DiscoverySettings, agreed_columns, local_kinds, local_vector
from fedsynth.common.discovery import heavy_hitters as hh
from fedsynth.common.discovery import protocol
from fedsynth.common.discovery import quantiles as qu
from fedsynth.common.noise import sample_skellam
from fedsynth.common.rounds import round_event
from fedsynth.common.schema import Schema
from fedsynth.common.secure_sum import NoisySumSpec
from fedsynth.server.discovery import DiscoveryPlan, reachable_lengths, run_rounds


def plain_noisy_sum(parties, rng):
    """Every organisation's counts summed, plus the aggregate Skellam noise of the round."""

    def noisy_sum(spec, request, what):
        total = sum(local_vector(p, request) for p in parties)
        return total + sample_skellam(rng, spec.mu, spec.dim), spec.mu

    return noisy_sum


#: Canaries, each held by 3 rows of the first organisation: one shares no prefix with a common
#: value, one extends a common value's prefix, one is a prefix of a common value (its END cell
#: is the only cell that tells it apart).
CANARIES = ("Canary-7f3a", "Married-AF", "Divorce")


def canary_parties(rng) -> list[pd.DataFrame]:
    """Five organisations; the first holds 3 rows of each canary."""
    parties = []
    for i in range(5):
        values = rng.choice(["Married", "Never-married", "Divorced"], 2000, p=[0.5, 0.3, 0.2]).astype(object)
        if i == 0:
            values[: 3 * len(CANARIES)] = np.repeat(CANARIES, 3)
        parties.append(pd.DataFrame({"status": values, "age": rng.integers(18, 91, 2000).astype(str)}))
    return parties


def test_a_canary_held_by_three_rows_never_appears_and_common_categories_always_do():
    plan = DiscoveryPlan(epsilon=0.1, delta=1e-6, min_survivors=4, settings=DiscoverySettings(max_bytes=16))
    kinds = {"status": "categorical", "age": "integer"}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        found = run_rounds(kinds, plan, plain_noisy_sum(canary_parties(rng), rng)).schema
        categories = found["columns"][0]["categories"]
        assert not set(CANARIES) & set(categories)
        assert {"Married", "Never-married", "Divorced"} <= set(categories)
        assert categories[-1] == protocol.OTHER
        assert found["provenance"]["epsilon_spent"] <= 0.1


def test_the_value_threshold_releases_a_value_of_three_rows_with_probability_at_most_delta():
    for mu in (0.5, 20.0, 5_000.0, 2e5):
        for delta in (1e-5, 1e-8):
            threshold = hh.value_threshold(mu, delta)
            assert stats.skellam(mu, mu).sf(threshold - hh.RARE_ROWS) <= delta  # P(3 + noise > threshold)
            assert stats.skellam(mu, mu).sf(threshold - hh.RARE_ROWS - 1) > delta  # the least such threshold


def test_round_zero_lengths_cut_the_text_rounds_and_the_rounds_spend_the_plan():
    rng = np.random.default_rng(6)
    parties = [pd.DataFrame({"pet": rng.choice(["cat", "dog", "eel"], 3000)}) for _ in range(5)]
    plan = DiscoveryPlan(epsilon=0.2, delta=1e-6, min_survivors=4)
    found = run_rounds({"pet": "categorical"}, plan, plain_noisy_sum(parties, rng)).schema
    assert found["provenance"]["text_lengths"] == {"pet": 3}
    assert found["provenance"]["rounds"] == 1 + 4  # round 0, then prefixes of 0 .. 3 bytes
    assert 0.8 * 0.2 < found["provenance"]["epsilon_spent"] <= 0.2  # planned by RDP, spent by the ledger's accountant
    assert set(found["columns"][0]["categories"]) == {"cat", "dog", "eel", "other"}
    assert hh.longest_heavy_length(np.array([0, 0, 50, 0, 9, 0]), 10.0) == 2
    assert hh.longest_heavy_length(np.array([0, 0, 5, 0, 9, 99]), 10.0) == 0  # "longer" never counts


def test_lengths_no_releasable_value_can_reach_are_not_explored():
    rng = np.random.default_rng(3)
    common = rng.choice(["cat", "dog"], 15_000)
    common[:600] = "a-rather-long-pet"  # its length's cell clears the strict floor, not the reach bar
    parties = [pd.DataFrame({"pet": part}) for part in np.array_split(common, 5)]
    plan = DiscoveryPlan(epsilon=0.2, delta=1e-6, min_survivors=4)
    found = run_rounds({"pet": "categorical"}, plan, plain_noisy_sum(parties, rng)).schema
    assert found["provenance"]["text_lengths"] == {"pet": 3}
    block = np.zeros(hh.MAX_BYTES + 2)
    block[[3, 17]] = [14_400, 300]
    floors = {"pet": 100.0}
    assert hh.longest_heavy_length(block, floors["pet"]) == 17
    spent = skellam_event(2000.0**2 / 2, 1.0, 1.0)
    assert reachable_lengths(plan, spent, {"pet": block}, floors, 1.0) == {"pet": 3}
    block[17] = 600  # a value of 600 rows may clear the value threshold of rounds down to 17 bytes
    assert reachable_lengths(plan, spent, {"pet": block}, floors, 1.0) == {"pet": 17}


def test_the_release_threshold_releases_a_cell_as_often_as_its_skellam_tail_says():
    mu, rng, trials = 200.0, np.random.default_rng(1), 3000
    threshold = hh.release_threshold(mu, hh.SYMBOLS, false_positive=0.05)
    count = int(round(threshold)) - 10
    cells = np.zeros(hh.SYMBOLS, dtype=np.int64)
    cells[hh.END] = count  # the value b"" held by ``count`` rows
    released = sum("" in hh.extend([b""], cells + sample_skellam(rng, mu, hh.SYMBOLS), threshold, 8, 64)[1]
                   for _ in range(trials))
    expected = hh.release_probability(count, mu, threshold)
    assert 0.2 < expected < 0.8
    assert stats.binomtest(released, trials, expected).pvalue > 1e-3
    empty = sum(bool(hh.extend([b""], sample_skellam(rng, mu, hh.SYMBOLS), threshold, 8, 64)[0]
                     or hh.extend([b""], sample_skellam(rng, mu, hh.SYMBOLS), threshold, 8, 64)[1])
                for _ in range(trials // 2))
    assert stats.binomtest(empty, trials // 2, 2 * 0.05, alternative="greater").pvalue > 1e-3


def test_bounds_and_quantile_bins_come_from_the_noisy_grid():
    rng = np.random.default_rng(2)
    ages = rng.integers(18, 91, 20_000)
    noisy = qu.grid_counts(ages, qu.NUMBER_EDGES) + sample_skellam(rng, 50.0, len(qu.NUMBER_EDGES) - 1)
    lower, upper, edges = qu.bounds_and_edges(noisy, "integer", 10, 50.0, 1e-3)
    assert 15 <= lower <= 19 and 88 <= upper <= 100  # 90 lies in the grid's cell [86.6, 100)
    assert edges[0] == lower and edges[-1] == upper and edges == sorted(set(edges))
    mass = np.histogram(ages, bins=np.array(edges, dtype=float))[0] / len(ages)
    assert mass.max() < 0.2  # quantile bins: no bin holds twice its share
    assert qu.bounds_and_edges(np.zeros(len(noisy)), "integer", 10, 50.0, 1e-3) is None


def test_columns_that_disagree_name_the_column_and_the_organisations_counts_only():
    configs = {f"org-{i}": {"age": "integer", "town": "categorical"} for i in range(4)}
    configs["org-3"] = {"age": "numeric", "town": "categorical"}
    with pytest.raises(DiscoveryError) as caught:
        agreed_columns(configs)
    message = str(caught.value)
    assert "column 'age': integer at 3 organisations (org-0, org-1, org-2); numeric at 1 organisation (org-3)" in message
    assert "town" not in message
    configs["org-2"] = {"age": "integer"}
    with pytest.raises(DiscoveryError, match="column 'town': categorical at 3 organisations .*no such column"):
        agreed_columns(configs)


def test_local_kinds_and_vectors_count_one_cell_per_row_and_column():
    frame = pd.DataFrame({"town": ["Ayr", "Ayr", None, "Oban"], "n": ["1", "?", "3", "4"],
                          "day": ["2020-01-01", "2020-02-01", None, "2021-01-01"], "flag": ["true", "false", "true", ""]})
    kinds = local_kinds(frame, ["?"])
    assert kinds == {"town": "categorical", "n": "integer", "day": "datetime", "flag": "boolean"}
    request = protocol.first_request(list(kinds.items()), ["?"], 3)
    blocks = protocol.split(local_vector(frame, request), request)
    assert [int(b.sum()) for b in blocks.values()] == [4, 4, 4, 1]  # every row once; booleans: missing only
    assert [int(b[0]) for b in blocks.values()] == [1, 1, 1, 1]
    assert blocks["town"].tolist() == [1, 0, 0, 0, 2, 1]  # missing, then lengths 0..3 and longer: Ayr Ayr, Oban
    assert protocol.round_sensitivity(request) == (4.0, 2.0)
    first = protocol.request([("town", "categorical")], {"town": [b""]}, ["?"])
    assert local_vector(frame, first).sum() == 3 and len(local_vector(frame, first)) == hh.SYMBOLS
    later = protocol.request([("town", "categorical")], {"town": [b"A", b"O"]}, ["?"])
    assert local_vector(frame, later).sum() == 3 and protocol.round_sensitivity(later) == (1.0, 1.0)


def discovery_round(sigma=30.0, t=3, n=4):
    kinds = [("town", "categorical"), ("n", "integer")]
    request = protocol.first_request(kinds, [], 8)
    spec = NoisySumSpec(dim=protocol.dimension(request), mu=sigma**2 / 2, min_survivors=t, max_abs=1_000_000)
    return {**request, "round": 1, "num_clients": n, **spec.to_config()}, spec


def guard(tmp_path, **changes):
    policy = GuardPolicy(tmp_path / "ledger.jsonl", epsilon_cap=1.0, delta=1e-6, min_noise_multiplier=1.0, min_survivors=2)
    return Guard("org-a", replace(policy, **changes))


AGREED = Schema.from_dict({"name": "towns", "columns": [
    {"name": "town", "kind": "categorical", "categories": ["Ayr", "Oban"]},
    {"name": "n", "kind": "integer", "lower": 0, "upper": 10, "bins": 2}]})


def organisation(g, frame=None):
    frame = pd.DataFrame({"town": ["Ayr", "Oban", "Ayr"], "n": ["1", "2", "3"]}) if frame is None else frame
    return Organisation("org-a", lambda _s: frame, accepts=AGREED, guard=g)


def test_the_guard_records_a_discovery_round_under_phase_schema(tmp_path):
    g = guard(tmp_path)
    request, spec = discovery_round()
    share = guarded_share(organisation(g), request, [], np.random.default_rng(0))
    assert share.shape == (spec.dim,)
    (entry,) = g.ledger.entries
    assert (entry.phase, entry.mechanism) == ("schema", "discovery")
    assert entry.dp_event() == round_event(request, spec, g.accounted_mu(spec, 4))  # the 2t - n honest shares
    assert g.ledger.epsilon().epsilon > 0


@pytest.mark.parametrize(
    "change, rule",
    [({"sigma": 30.0, "t": 1}, "min-survivors"), ({"sigma": 1.2}, "min-noise-multiplier"),
     ({"sigma": 30.0, "t": 2, "n": 4}, "shamir-threshold"), ({"sigma": 3.0, "cap": 0.05}, "epsilon-cap")],
)
def test_the_guard_judges_a_discovery_round_like_every_other(tmp_path, change, rule):
    cap = change.pop("cap", 1.0)
    g = guard(tmp_path, epsilon_cap=cap, min_noise_multiplier=1.0 if rule != "epsilon-cap" else 0.0)
    request, _ = discovery_round(**change)
    with pytest.raises(GuardRefused, match=f"rule {rule}"):
        guarded_share(organisation(g), request, [], np.random.default_rng(0))
    assert len(g.ledger) == 0


def test_a_coordinator_that_lists_a_column_twice_or_mixes_prefixes_is_accounted_for_what_is_sent(tmp_path):
    g = guard(tmp_path, min_noise_multiplier=0.0)
    twice = protocol.request([("town", "categorical"), ("town", "categorical")], {"town": [b"A", b"", b"Oban"]}, [])
    spec = NoisySumSpec(dim=protocol.dimension(twice), mu=450.0, min_survivors=3, max_abs=1_000_000)
    request = {**twice, "round": 1, "num_clients": 4, **spec.to_config()}
    frame = pd.DataFrame({"town": ["Ayr", "Oban", "Ayr"]})
    per_block = protocol.split(local_vector(frame, request), request)
    assert all(block.sum() <= len(frame) for block in per_block.values())  # one cell per row and listed column
    guarded_share(organisation(g), request, [], np.random.default_rng(0))
    (entry,) = g.ledger.entries
    assert entry.dp_event() == skellam_event(g.accounted_mu(spec, 4), 2.0, 2.0**0.5)


def test_an_organisation_refuses_a_round_on_columns_it_did_not_configure(tmp_path):
    org = organisation(None)
    request = protocol.request([("town", "integer")], {}, [])
    with pytest.raises(RequestRefused, match="rule discovery-columns"):
        org.contribute(request, [], np.random.default_rng(0))


def test_unlisted_categories_map_to_other_and_are_counted_locally():
    schema = Schema.from_dict({"name": "s", "columns": [
        {"name": "town", "kind": "categorical", "categories": ["Ayr", "other"], "other": "other"},
        {"name": "n", "kind": "integer", "lower": 0, "upper": 10, "bins": [0, 5, 10], "out_of_range": "clip"}]})
    frame = pd.DataFrame({"town": ["Ayr", "Oban", "Tain"], "n": ["1", "12", "3"]})
    report = schema.validate(frame, strict=True)
    assert [(v.column, v.problem, v.count) for v in report.infos] == [("town", "mapped_to_other", 2), ("n", "clipped", 1)]
    assert schema.encode(frame)[:, 0].tolist() == [0, 1, 1]
    with pytest.raises(Exception, match="must be one of the listed categories"):
        Schema.from_dict({"name": "s", "columns": [{"name": "t", "kind": "categorical", "categories": ["a"], "other": "b"}]})


def test_a_discovered_schema_loads_with_its_provenance():
    rng = np.random.default_rng(3)
    plan = DiscoveryPlan(epsilon=0.5, delta=1e-6, min_survivors=4, settings=DiscoverySettings(max_bytes=16))
    found = run_rounds({"status": "categorical", "age": "integer"}, plan, plain_noisy_sum(canary_parties(rng), rng)).schema
    schema = Schema.from_dict(json.loads(json.dumps(found)))
    assert schema.provenance["phase"] == "schema" and 0 < schema.provenance["epsilon_spent"] <= 0.5
    assert not schema.draft
    age = schema["age"]  # ages 18..90, found through coarse blocks of the public grid at this budget
    assert age.out_of_range == "clip" and 0 <= age.lower <= 18 and 90 <= age.upper <= 150


def test_a_job_keeps_the_given_public_bounds_and_missing_flag_where_discovery_sees_too_little():
    rng = np.random.default_rng(4)
    parties = [pd.DataFrame({"age": rng.integers(18, 91, 50).astype(str)}) for _ in range(3)]
    plan = DiscoveryPlan(epsilon=0.05, delta=1e-6, min_survivors=2)
    given = {"age": {"name": "age", "kind": "integer", "lower": 0, "upper": 120, "bins": [0, 30, 60, 120], "missing": True}}
    found = run_rounds({"age": "integer"}, plan, plain_noisy_sum(parties, rng), given=given).schema
    (age,) = found["columns"]
    assert (age["lower"], age["upper"], age["bins"], age["missing"]) == (0, 120, [0, 30, 60, 120], True)
    assert found["provenance"]["kept_from_given_schema"] == ["age"]
    with pytest.raises(DiscoveryError, match="column 'age' \\(integer\\): no block of the public grid"):
        run_rounds({"age": "integer"}, plan, plain_noisy_sum(parties, rng)).schema


def test_a_discovered_schema_keeps_the_given_public_fine_grids_within_its_bounds():
    rng = np.random.default_rng(8)
    parties = [pd.DataFrame({"age": rng.integers(20, 80, 4000).astype(str), "pay": rng.integers(100, 900, 4000).astype(str)})
               for _ in range(5)]
    plan = DiscoveryPlan(epsilon=0.5, delta=1e-6, min_survivors=4)
    given = {"age": {"name": "age", "kind": "integer", "lower": 0, "upper": 120, "bins": 4, "fine": 1},
             "pay": {"name": "pay", "kind": "integer", "lower": 0, "upper": 10_000, "bins": 4, "fine": [1, 300, 600, 5_000]}}
    found = run_rounds({"age": "integer", "pay": "integer"}, plan, plain_noisy_sum(parties, rng), given=given).schema
    age, pay = found["columns"]
    assert age["fine"] == 1 and 100 < pay["lower"] < 300 and 600 < pay["upper"] < 5_000
    assert pay["fine"] == [300, 600]  # the points outside the discovered bounds fall away
    schema = Schema.from_dict({**found, "label": None})
    assert schema.columns[0].n_fine_values == age["upper"] - age["lower"]
    assert "fine" not in run_rounds({"age": "integer"}, plan, plain_noisy_sum(parties, rng)).schema["columns"][0]
    given["age"]["fine"] = 0.01  # too many cells within the discovered bounds: no fine grid
    assert "fine" not in run_rounds({"age": "integer"}, plan, plain_noisy_sum(parties, rng), given=given).schema["columns"][0]


def test_the_release_threshold_bounds_the_skellam_tail_and_zero_stays_a_bound():
    for mu in (0.5, 20.0, 5_000.0, 2e5):
        b = hh.release_threshold(mu, 100, 1e-3) + 1  # the least count that is released
        assert stats.skellam(mu, mu).sf(b - 1) <= 1e-3 / 100
    rng = np.random.default_rng(5)
    gains = np.where(rng.random(20_000) < 0.9, 0, rng.integers(100, 20_000, 20_000))
    noisy = qu.grid_counts(gains, qu.NUMBER_EDGES) + sample_skellam(rng, 50.0, len(qu.NUMBER_EDGES) - 1)
    lower, upper, edges = qu.bounds_and_edges(noisy, "integer", 10, 50.0, 1e-3)
    assert lower == 0 and upper > 1_000
    assert edges[:2] == [0, 1]  # zero, the atom nine rows in ten hold, is a bin of its own
    zeros = np.where(rng.random(20_000) < 0.95, 0, rng.integers(1, 10**6, 20_000))  # a tail the noise hides
    noisy = qu.grid_counts(zeros, qu.NUMBER_EDGES) + sample_skellam(rng, 5_000.0, len(qu.NUMBER_EDGES) - 1)
    assert qu.bounds_and_edges(noisy, "integer", 10, 5_000.0, 1e-3) == (0, 2, [0, 1, 2])  # the tail clips into [1, 2]
    hours = np.where(rng.random(20_000) < 0.5, 40, rng.integers(1, 100, 20_000))
    noisy = qu.grid_counts(hours, qu.NUMBER_EDGES) + sample_skellam(rng, 50.0, len(qu.NUMBER_EDGES) - 1)
    _, _, edges = qu.bounds_and_edges(noisy, "integer", 10, 50.0, 1e-3)
    assert 40 in edges and edges[edges.index(40) + 1] == 41


def discovered(agreed: Schema, **changes) -> Schema:
    """A schema as a discovery would write it from ``agreed`` (``changes`` per column)."""
    columns = []
    for column in agreed.to_dict()["columns"]:
        if column["kind"] == "categorical":
            column = {**column, "categories": ["Tain", "other"], "other": "other"}
        else:
            column = {**column, "lower": 1, "upper": 4, "bins": [1, 2, 4], "out_of_range": "clip"}
        columns.append({**column, **changes.get(column["name"], {})})
    return Schema.from_dict({**agreed.to_dict(), "name": "towns-discovered", "columns": columns,
                             "provenance": {"phase": "schema", "epsilon_spent": 0.1}})


def test_an_organisation_accepts_a_schema_discovered_from_its_agreed_one_and_no_other():
    org = organisation(None)
    found = discovered(AGREED)
    org.check({"schema": found.dumps("json")})
    assert org.table(found.dumps("json")).codes[:, 0].tolist() == [1, 1, 1]  # Ayr, Oban, Ayr: all other
    crafted = {
        "no other": discovered(AGREED, town={"other": None, "categories": ["Ayr", "Oban"]}),
        "no clip": discovered(AGREED, n={"out_of_range": "error"}),
        "another kind": discovered(AGREED, n={"kind": "numeric"}),
        "no provenance": Schema.from_dict({k: v for k, v in found.to_dict().items() if k != "provenance"}),
        "a rule": Schema.from_dict({**found.to_dict(), "rules": [
            {"name": "tain-small", "if": {"town": {"in": ["Tain"]}}, "then": {"n": {"max": 1}}}]}),
    }
    may_miss = Schema.from_dict({**AGREED.to_dict(), "columns": [
        {**c, "missing": True} for c in AGREED.to_dict()["columns"]]})
    assert protocol.discovered_from(may_miss, discovered(may_miss))
    assert not protocol.discovered_from(may_miss, discovered(may_miss, n={"missing": False}))
    for why, schema in crafted.items():
        with pytest.raises(RequestRefused, match="rule agreed-schema"):
            org.check({"schema": schema.dumps("json")})


def test_a_column_the_table_lacks_counts_as_empty_and_is_said_only_locally(tmp_path, caplog):
    org = organisation(guard(tmp_path), frame=pd.DataFrame({"town": ["Ayr", "Oban", "Ayr"]}))
    request, spec = discovery_round()
    share = guarded_share(org, request, [], np.random.default_rng(0))
    assert share.shape == (spec.dim,)
    counts = protocol.split(org.contribute(request, [], np.random.default_rng(0)), request)
    assert counts["n"].sum() == 0 and counts["town"].sum() == 3
    assert "column 'n' is not in the local table" in caplog.text
