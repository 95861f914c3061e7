"""The 1-way round's share of the generator's budget (``common.generator.one_way_scale``): the rule,
its optimality, the plan every guard judges, and the noise a run actually adds and records."""

import numpy as np
import pandas as pd
import pytest
from central_fit import fit_three
from scipy.optimize import minimize_scalar

from fedsynth.common.accounting import CombinedAccountant, plan_noise
from fedsynth.common.generator import GeneratorSettings, generator_event, one_way_scale
from fedsynth.common.schema import Schema


def test_the_scale_is_the_cube_root_of_the_workload_weighted_cells_ratio_and_never_below_one():
    # 3 columns: a 1-way vector bounds 2 pairs; a 2-way candidate holds 1 pair, a 3-way 3.
    assert one_way_scale([2, 2, 2], [[4, 8]], columns=3) == pytest.approx(2.0)  # (32 / (2 x 2))^(1/3)
    assert one_way_scale([3, 5], [[9, 12], [3, 3, 12]], columns=3) == pytest.approx(3.0)  # mean(108, 324) / 8 = 27
    assert one_way_scale([100], [[10, 2]], columns=15) == 1.0  # 1-way vectors weigh more: no less noise than sigma
    assert one_way_scale([], [[10, 2]], 3) == 1.0 and one_way_scale([10], [], 3) == 1.0 and one_way_scale([4], [[4]], 1) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_the_scale_minimises_the_workload_l1_error_at_a_fixed_zcdp_budget(seed):
    rng = np.random.default_rng(seed)
    columns = int(rng.integers(4, 30))
    ones = rng.integers(2, 100, columns + int(rng.integers(0, 4))).tolist()  # some fine grids too
    rounds = [rng.integers(2, 20, int(rng.integers(2, 4))).tolist() for _ in range(int(rng.integers(5, 40)))]
    one_way_weight = (columns - 1) * sum(ones)
    round_weight = sum(len(r) * (len(r) - 1) / 2 * np.prod(r) for r in rounds)
    budget = 0.01  # zCDP rho of all the count vectors together

    def l1(log_ratio: float) -> float:
        """Workload-weighted L1 error (up to sqrt(2/pi)) when 1-way noise is exp(log_ratio) x the rounds'."""
        ratio = np.exp(log_ratio)
        # len(ones) / (2 (r s)^2) + len(rounds) / (2 s^2) = budget
        sigma = np.sqrt((len(ones) / ratio**2 + len(rounds)) / (2 * budget))
        return one_way_weight * ratio * sigma + round_weight * sigma

    best = np.exp(minimize_scalar(l1, bounds=(-5, 5), method="bounded", options={"xatol": 1e-8}).x)
    assert one_way_scale(ones, rounds, columns) == pytest.approx(max(best, 1.0), rel=1e-4)


WIDE = {f"c{i}": 5 + i for i in range(15)}


def test_the_plan_charges_the_one_way_round_at_its_own_noise_and_never_overshoots():
    settings = GeneratorSettings().resolved(WIDE, 1.0, organisations=5)
    assert settings.one_way_scale > 1.5  # candidates of ~1000 cells (and 2 or 3 pairs) against 1-way vectors of ~12 (14 pairs)
    plan = plan_noise({"g": lambda s: generator_event(s, 15, settings)}, {"g": 1.0}, 1.0, 1e-9)
    sigma = plan.noise_multipliers["g"]
    event = generator_event(sigma, 15, settings)
    one_way = event.events[0]
    assert one_way.count == 15 and one_way.event.mu == pytest.approx((settings.one_way_scale * sigma) ** 2 / 2)
    assert CombinedAccountant().compose(event).epsilon(1e-9).epsilon <= 1.0
    # Equal noise (the rule off) leaves the rounds noisier for the same epsilon.
    equal = GeneratorSettings(one_way_scale=1.0).resolved(WIDE, 1.0, organisations=5)
    assert plan_noise({"g": lambda s: generator_event(s, 15, equal)}, {"g": 1.0}, 1.0, 1e-9).noise_multipliers["g"] > 1.1 * sigma


def test_a_scale_below_one_is_refused():
    with pytest.raises(ValueError, match="one_way_scale"):
        GeneratorSettings(one_way_scale=0.5)


SCHEMA = Schema.from_dict({"name": "t", "columns": [
    {"name": "a", "kind": "categorical", "categories": [str(i) for i in range(6)]},
    {"name": "b", "kind": "categorical", "categories": [str(i) for i in range(8)]},
    {"name": "c", "kind": "categorical", "categories": ["x", "y"]},
]})


def test_a_run_adds_and_records_the_planned_one_way_noise_within_its_epsilon(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 3000)
    table = pd.DataFrame({"a": a.astype(str), "b": ((a + rng.integers(0, 2, a.size)) % 8).astype(str),
                          "c": np.where(rng.random(a.size) < 0.3, "x", "y")})
    model, plan, ledger = fit_three(SCHEMA, table, tmp_path)
    settings, sigma = plan.generator.settings, plan.generator.sigma
    assert settings.one_way_scale == pytest.approx(one_way_scale([6, 8, 2], [[6, 8], [6, 2], [8, 2], [6, 8, 2]], 3))
    ones = [m for m in model.measurements if len(m.clique) == 1]
    pairs = [m for m in model.measurements if len(m.clique) > 1 and m.clique[0] != "__organisation__"]
    assert len(ones) == 3 and pairs
    # Every organisation survives (3 of t = 2): each vector carries 3/2 of the planned variance.
    assert all(m.sigma == pytest.approx(settings.one_way_sigma(sigma) * np.sqrt(1.5)) for m in ones)
    assert all(m.sigma == pytest.approx(sigma * np.sqrt(1.5)) for m in pairs)
    assert ledger.epsilon().epsilon <= plan.epsilon_planned <= 1.0
