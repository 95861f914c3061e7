"""Federated evaluation: the union's noisy marginals, paid for in phase 'evaluation', judged by
every guard, recorded in the ledger and privacy.json, and close to the true union TVD."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedsynth.cli import bundled, main
from fedsynth.client.guard import Guard, GuardPolicy, GuardRefused
from fedsynth.common.accounting import Ledger
from fedsynth.common.evaluation import evaluation_event, noise_band, noisy_total, synthetic_marginals
from fedsynth.common.metrics import total_variation
from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.rounds import read_plan
from fedsynth.common.schema import load_schema
from fedsynth.server.job import JobConfig, plan_job
from fedsynth.simulations.main import simulate
from fedsynth.simulations.split import split_table

SCHEMA = load_schema(bundled("adult.schema.yaml"))
SMALL = GeneratorSettings(rounds=1, per_round=2, fit_iters=100, final_iters=200, score_sample=20_000)


def config(out: Path) -> JobConfig:
    # The whole bundled table: simulation time does not grow with rows, and the noise band of a
    # TVD shrinks as 1/rows, so the comparison with the true TVD below is a sharp one.
    return JobConfig(
        schema=SCHEMA, parties=3, epsilon=8.0, delta=1e-6, out=out, min_survivors=3, generator=SMALL,
        labels="generator", evaluate=0.5, evaluate_pairs=3,
    )


@pytest.fixture(scope="module")
def table():
    return SCHEMA.read_csv(bundled("adult.csv"))


@pytest.fixture(scope="module")
def parties(table):
    return split_table(table, 3, "iid", SCHEMA.label, seed=0)


@pytest.fixture(scope="module")
def release(parties, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation") / "release"
    return simulate(config(out), parties, progress=lambda _m: None)


@pytest.mark.slow  # one Flower simulation, shared by the three tests that read its release
def test_the_evaluation_round_is_in_the_ledger_and_privacy_json(release):
    statement = json.loads((release.path / "privacy.json").read_text())
    ledger = Ledger(release.path / "ledger.jsonl", cap_epsilon=8.0, delta=1e-6)
    evaluation = [e for e in ledger.entries if e.phase == "evaluation"]
    assert len(evaluation) == 1 and evaluation[0].mechanism.startswith("evaluation counts of 18 public marginals")
    assert evaluation[0].metadata["survivors"] == ["party-0", "party-1", "party-2"]
    # The ledger's event is the plan's function at the survivors' actual noise (3 of t=2 shares).
    cliques = [tuple(m["clique"]) for m in statement["evaluation"]["marginals"]]
    recorded, planned = evaluation[0].dp_event(), evaluation_event(math.sqrt(2 * evaluation[0].metadata["mu"]), cliques, None)
    assert recorded.count == planned.count == 18
    assert recorded.event.mu == pytest.approx(planned.event.mu, rel=1e-12)
    assert (recorded.event.l1_sensitivity, recorded.event.l2_sensitivity) == (1.0, 1.0)
    assert set(statement["per_phase"]) == {"generator", "evaluation"}
    assert 0 < statement["per_phase"]["evaluation"]["epsilon"] < statement["epsilon"] <= 8.0
    assert statement["plan"]["budget_split"] == {"generator": 0.5, "evaluation": 0.5}
    assert statement["plan"]["evaluation"]["marginals"] == [list(c) for c in cliques]


def test_every_guard_judges_the_evaluation_phase(tmp_path):
    # A share large enough that the evaluation's noise is the job's least: a floor just above it
    # then refuses the evaluation phase and no other.
    plan = plan_job(replace(config(tmp_path / "unused"), evaluate=0.7))
    assert plan.evaluation.sigma < plan.generator.sigma
    event, t, multipliers = read_plan({"schema": "", **plan.guard_request()})
    z = multipliers["evaluation"]
    assert z == pytest.approx(plan.evaluation.sigma) and t == 3
    assert evaluation_event(plan.evaluation.sigma, plan.evaluation.cliques, None) in event.events
    strict = GuardPolicy(ledger=tmp_path / "org.jsonl", epsilon_cap=8.0, delta=1e-6,
                         min_noise_multiplier=z * 1.01, min_survivors=2)
    with pytest.raises(GuardRefused, match="min-noise-multiplier.*evaluation phase"):
        Guard("org-a", strict).admit_job(plan.guard_request())
    small_cap = GuardPolicy(ledger=tmp_path / "org-b.jsonl", epsilon_cap=7.0, delta=1e-6,
                            min_noise_multiplier=0.0, min_survivors=2)
    with pytest.raises(GuardRefused, match="epsilon-cap"):  # the evaluation's cost counts in the job's
        Guard("org-b", small_cap).admit_job(plan.guard_request())


@pytest.mark.slow
def test_published_figures_are_close_to_the_true_union_tvd(release, table):
    summary = json.loads((release.path / "privacy.json").read_text())["evaluation"]
    domain = SCHEMA.domain()
    cliques = [tuple(m["clique"]) for m in summary["marginals"]]
    real = synthetic_marginals(SCHEMA.encode(table), domain, cliques)  # the union: every party's rows
    synthetic = synthetic_marginals(SCHEMA.encode(SCHEMA.read_csv(release.path / "synthetic.csv")), domain, cliques)
    true_tvd = np.array([total_variation(r, s) for s, r in zip(synthetic, real)])
    published = np.array([m["tvd"] for m in summary["marginals"]])
    bands = np.array([m["noise_band"] for m in summary["marginals"]])
    assert np.all(np.abs(published - true_tvd) <= bands)
    assert bands[:15].mean() < 0.03 and bands[15:].max() < 0.2  # informative, not vacuous
    assert abs(summary["one_way"]["mean_tvd"] - true_tvd[:15].mean()) < 0.02
    assert summary["noisy_rows"] == pytest.approx(len(table), abs=30)


@pytest.mark.slow
def test_the_report_shows_every_evaluated_marginal_with_its_band(release, tmp_path):
    assert main(["report", str(release.path), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    evaluation = release.statement["evaluation"]
    assert '<section id="federated-evaluation">' in page
    for marginal in evaluation["marginals"]:
        assert f"<td>{' x '.join(marginal['clique'])}</td>" in page


def test_an_evaluation_share_out_of_range_is_refused(tmp_path, capsys):
    code = main(["simulate", "--evaluate", "1.5", "--out", str(tmp_path / "out")])
    assert code == 2 and "evaluate (the evaluation's share of epsilon) must be in [0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_organisation_evaluates_the_release_against_its_own_rows(release, parties, tmp_path, capsys):
    own = tmp_path / "party-0.csv"
    parties[0].to_csv(own, index=False, na_rep="?")
    out = tmp_path / "evaluation"
    code = main(["evaluate", str(release.path), "--real", str(own), "--schema", str(bundled("adult.schema.yaml")),
                 "--out", str(out), "--attacks", "100"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads((out / "evaluation.json").read_text())
    assert f"quality score {result['fidelity']['quality_score']:.3f}" in printed
    assert f"TSTR (Y): AUC {result['tstr']['synthetic']['auc']:.3f}" in printed and "singling out" in printed
    assert result["real"]["rows"] == len(parties[0]) and result["synthetic_rows"] == release.rows
    assert 0.8 < result["fidelity"]["quality_score"] < 1.0  # a DP release at epsilon 8: close, not a copy
    page = (out / "evaluation.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "Privacy-risk probes" in page


@pytest.mark.parametrize("sigma", [1.0, 10.0, 40.0])
def test_the_noise_band_holds_for_skellam_noise(sigma):
    rng = np.random.default_rng(0)
    counts = rng.multinomial(5_000, rng.dirichlet(np.ones(100)))
    synthetic = rng.multinomial(5_000, rng.dirichlet(np.ones(100))).astype(float)
    mu = sigma**2 / 2
    for _ in range(200):
        noisy = counts + rng.poisson(mu, 100) - rng.poisson(mu, 100)  # Skellam(mu, mu): variance sigma^2
        band = noise_band(sigma, 100, noisy_total([noisy]))
        error = abs(total_variation(np.clip(noisy, 0, None), synthetic) - total_variation(counts, synthetic))
        assert error <= band
