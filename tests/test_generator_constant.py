"""A top code with a fine cell of its own, and a column that is a function of a group column
(``constant_per``): counted jointly with the group in the 1-way round (the same plan), one value per
group in the synthetic rows.

The federation is ``server.central.CentralAggregator`` (``central_fit``), as in ``test_generator_fine``.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from central_fit import fit_three

from fedsynth.common.schema import Schema, SchemaError, load_schema
from fedsynth.common.schema.columns import bin_of
from fedsynth.common.schema.codec import fine_codes_of
from fedsynth.server.generator import one_way_cliques, sample_rows

ACS = Path(__file__).parent / "data" / "acs_ma2019.schema.yaml"
COLUMNS = [
    {"name": "region", "kind": "categorical", "categories": ["a", "b", "c"]},
    {"name": "density", "kind": "numeric", "lower": 1, "upper": 1000, "bins": [1, 100, 1000],
     "fine": [2, 5, 10, 20, 50, 200, 500], "constant_per": "region"},
    {"name": "ratio", "kind": "integer", "missing": True, "lower": 0, "upper": 501, "bins": [0, 100, 501],
     "fine": [50, 200, 400, 500, 501]},
]
SCHEMA = Schema.from_dict({"name": "places", "label": None, "na_values": ["N"], "columns": COLUMNS})
DENSITY = {"a": 30.0, "b": 60.0, "c": 300.0}  # a and b share a coarse bin, not a fine cell


def places(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(list(DENSITY), rows, p=[0.5, 0.3, 0.2])
    top = rng.random(rows) < 0.4  # the top code 501 ("above 5 x"), else 0..500
    ratio = np.where(top, 501, rng.integers(0, 501, rows))
    return pd.DataFrame({"region": region, "density": [str(DENSITY[r]) for r in region], "ratio": ratio.astype(str)})


def test_a_fine_grid_ending_at_the_upper_bound_gives_the_top_code_a_cell_of_its_own():
    ratio = SCHEMA["ratio"]
    assert ratio.fine_edges[-3:].tolist() == [500, 501, 502]
    assert fine_codes_of(ratio, np.array([499.0, 500.0, 501.0]), np.zeros(3, bool)).tolist() == [4, 5, 6]
    first, last = ratio.fine_integers
    assert (first[-2:].tolist(), last[-2:].tolist()) == ([500, 501], [500, 501])
    assert ratio.fine_bins[-2:].tolist() == [1, 1]  # both inside the last coarse bin [100, 501]
    codes = np.column_stack([np.zeros(1000, int), np.zeros(1000, int), np.ones(1000, int),
                             np.zeros(1000, int), np.full(1000, 6)])  # ratio: bin 1, fine cell 6
    values = SCHEMA.decode(codes, np.random.default_rng(0))["ratio"].to_numpy(dtype=float)
    assert (values == 501).all()
    # without the top edge, the last cell [500, 501] holds two integers, as before
    assert Schema.from_dict({"name": "p", "columns": [{**COLUMNS[2], "fine": [50, 200, 400, 500]}]})["ratio"].fine_edges[-1] == 501


@pytest.mark.parametrize(
    "change,problem",
    [({"constant_per": "nowhere"}, "must name another categorical"),
     ({"constant_per": "density"}, "must name another categorical")],
)
def test_constant_per_must_name_a_categorical_column(change, problem):
    with pytest.raises(SchemaError, match=f"column 'density'.*{problem}"):
        Schema.from_dict({"name": "s", "columns": [COLUMNS[0], {**COLUMNS[1], **change}]})


def test_a_rule_on_a_constant_per_column_is_refused():
    rule = {"name": "dense", "if": {"region": {"in": ["c"]}}, "then": {"density": {"min": 100}}}
    with pytest.raises(SchemaError, match="column 'density': a rule names it"):
        Schema.from_dict({"name": "s", "columns": COLUMNS[:2], "rules": [rule]})


def test_the_group_value_is_counted_jointly_and_each_group_gets_one_value(tmp_path):
    assert one_way_cliques(SCHEMA) == [("region",), ("density",), ("ratio",), ("region", "density:fine"), ("ratio:fine",)]
    assert Schema.from_dict(SCHEMA.to_dict()) == SCHEMA
    table = places(6_000, seed=0)
    model, plan, ledger = fit_three(SCHEMA, table, tmp_path)
    assert ledger.entries[0].event["count"] == len(SCHEMA.measured_domain())  # one vector each, as planned
    assert ledger.epsilon().epsilon <= plan.epsilon_planned <= 1.0
    assert ("region", "density:fine") in {m.clique for m in model.measurements}
    rows = sample_rows(model, SCHEMA, 6_000, np.random.default_rng(1))
    fine = SCHEMA["density"].fine_edges
    for region, real in DENSITY.items():
        values = rows.loc[rows["region"] == region, "density"].unique()
        assert len(values) == 1  # one value per group
        assert bin_of(fine, values) == bin_of(fine, np.array([real]))  # in the group's own fine cell
    ratio = rows["ratio"].dropna().to_numpy()
    assert 0.3 < (ratio == 501).mean() < 0.5 and (ratio == 500).mean() < 0.02


def test_the_shipped_acs_schema_keeps_density_per_puma_and_the_poverty_top_code_apart():
    schema = load_schema(ACS)
    assert schema["DENSITY"].constant_per == "PUMA"
    assert ("PUMA", "DENSITY:fine") in one_way_cliques(schema)
    assert schema["POVPIP"].fine_integers[0][-1] == schema["POVPIP"].fine_integers[1][-1] == 501
