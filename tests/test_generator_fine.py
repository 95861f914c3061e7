"""Numbers at their true resolution: a column's public fine grid, measured as one more 1-way
marginal (accounted like every count), tied to the coarse bins by structural zeros, and decoded
within each row's bin.

The federation is ``server.central.CentralAggregator`` (every organisation's vector and noise share
computed as its ClientApp would, summed in-process), as in ``test_generator_heterogeneity``.
"""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from central_fit import fit_three

from fedsynth.common.schema import Schema, SchemaError, fine_zeros, load_schema
from fedsynth.common.schema.columns import bin_of
from fedsynth.server.generator import sample_rows

ACS = Path(__file__).parent / "data" / "acs_ma2019.schema.yaml"
SCHEMA = Schema.from_dict(
    {
        "name": "people",
        "label": None,
        "na_values": ["N"],
        "columns": [
            {"name": "age", "kind": "integer", "lower": 0, "upper": 99, "bins": [0, 15, 30, 35, 65, 99], "fine": 1},
            {"name": "married", "kind": "categorical", "missing": True, "categories": ["yes", "no"]},
            {"name": "income", "kind": "numeric", "missing": True, "lower": 0, "upper": 100000,
             "bins": [0, 10000, 100000], "fine": [100, 1000, 3000, 30000, 60000]},
        ],
        "rules": [{"name": "child-unmarried", "if": {"age": {"max": 14}}, "then": {"married": "missing"}}],
    }
)


def people(rows: int, seed: int) -> pd.DataFrame:
    """Adults aged exactly 30 or 34 (never 31-33, inside the coarse bin 30-35), children under 15."""
    rng = np.random.default_rng(seed)
    adult = rng.random(rows) < 0.7
    age = np.where(adult, rng.choice([30, 34], rows), rng.integers(0, 15, rows))
    married = np.where(adult, rng.choice(["yes", "no"], rows), "N")
    income = np.where(adult, rng.choice([500.0, 50000.0], rows), np.nan)
    return pd.DataFrame({"age": age.astype(str), "married": married,
                         "income": pd.Series(income).map(lambda v: "N" if np.isnan(v) else str(v))})


TABLE = people(6_000, seed=0)


def fit(tmp_path: Path):
    return fit_three(SCHEMA, TABLE, tmp_path)


def test_the_fine_grid_is_cut_at_every_coarse_edge_and_tied_to_its_bins():
    age, income = SCHEMA["age"], SCHEMA["income"]
    assert age.n_fine_values == 99 and age.fine_bins[[0, 14, 15, 30, 34, 35, 98]].tolist() == [0, 0, 1, 2, 2, 3, 4]
    assert income.fine_edges.tolist() == [0, 100, 1000, 3000, 10000, 30000, 60000, 100000]
    assert income.fine_bins.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert SCHEMA.measured_domain() == {"age": 5, "married": 3, "income": 3, "age:fine": 99, "income:fine": 8}
    (cols, forbidden), _ = fine_zeros(SCHEMA)[1], None
    assert cols == ("income", "income:fine")
    allowed = {(b, c) for b in range(3) for c in range(8)} - {tuple(x) for x in forbidden.tolist()}
    assert allowed == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (1, 6), (2, 7)}  # missing with missing
    assert Schema.from_dict(SCHEMA.to_dict()) == SCHEMA  # round-trips through the schema file


@pytest.mark.parametrize(
    "kind,fine,problem",
    [("integer", 0, "positive width"), ("integer", 0.5, "whole number"), ("integer", [50, 20], "strictly increasing"),
     ("integer", [5, 200], "within [0, 99]"), ("numeric", 0.01, "at most 1000"), ("numeric", "1D", "positive width")],
)
def test_a_bad_fine_grid_names_the_column_and_the_fix(kind, fine, problem):
    with pytest.raises(SchemaError, match=f"column 'age'.*{re.escape(problem)}"):
        Schema.from_dict({"name": "s", "columns": [
            {"name": "age", "kind": kind, "lower": 0, "upper": 99, "bins": 5, "fine": fine}]})


def test_fine_codes_decode_within_their_bins_and_sampling_keeps_the_rules():
    """Random fine codes, consistent with the row's bin or not: every value stays in its coarse bin,
    in its fine cell where that lies in the bin, and rule-abiding sampling breaks no rule."""
    rng = np.random.default_rng(3)
    domain = SCHEMA.measured_domain()

    def draw(n: int, draw_rng: np.random.Generator) -> np.ndarray:
        return np.column_stack([draw_rng.integers(0, k, n) for k in domain.values()])

    codes = draw(20_000, rng)
    frame = SCHEMA.decode(codes, rng)
    for j, name in enumerate(["age", "income"]):
        column, fine = SCHEMA[name], codes[:, 3 + j]
        present = codes[:, SCHEMA.column_names.index(name)] < column.n_values
        values = frame[name].to_numpy(dtype=float, na_value=np.nan)
        assert np.isnan(values[~present]).all()
        bins = codes[present, SCHEMA.column_names.index(name)]
        assert (bin_of(column.edges, values[present]) == bins).all()  # within the bin, always
        inside = (fine[present] < column.n_fine_values) & (column.fine_bins[np.minimum(fine[present], column.n_fine_values - 1)] == bins)
        assert inside.sum() > 1000
        assert (bin_of(column.fine_edges, values[present][inside]) == fine[present][inside]).all()
    kept = SCHEMA.sample_valid(draw, 5_000, np.random.default_rng(0))
    assert len(kept) == 5_000 and SCHEMA.rule_violations(kept).to_numpy().sum() == 0


def test_the_fine_marginal_is_measured_accounted_and_shapes_the_release(tmp_path):
    model, plan, ledger = fit(tmp_path)
    first = ledger.entries[0]
    assert first.mechanism.startswith("1-way marginals and fine grids")
    assert first.event["count"] == len(SCHEMA.measured_domain())  # 3 columns + 2 fine grids
    assert ledger.epsilon().epsilon <= plan.epsilon_planned <= 1.0  # the plan counted them
    assert {("age:fine",), ("income:fine",)} <= {m.clique for m in model.measurements}
    rows = sample_rows(model, SCHEMA, 6_000, np.random.default_rng(1))
    assert SCHEMA.rule_violations(rows).to_numpy().sum() == 0
    ages = rows["age"].to_numpy(dtype=float, na_value=np.nan)
    in_bin = (ages >= 30) & (ages < 35)
    assert in_bin.sum() > 3000
    # Uniform decoding in the bin would put 60% at 31-33; the fine marginal puts nearly none there.
    assert np.isin(ages[in_bin], [30, 34]).mean() > 0.9
    incomes = rows["income"].dropna().to_numpy()
    assert ((incomes < 1000) | ((incomes >= 30000) & (incomes < 60000))).mean() > 0.9


def test_the_shipped_acs_schema_has_public_fine_grids_for_its_numbers():
    schema = load_schema(ACS)
    assert set(schema.fine_domain()) == {"AGEP:fine", "DENSITY:fine", "PINCP:fine", "POVPIP:fine", "PWGTP:fine", "WGTP:fine"}
    assert schema["AGEP"].n_fine_values == 99
    assert json.loads(schema.dumps("json"))["columns"][1]["fine"] == 1
