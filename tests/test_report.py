"""The report's pieces without a release: plain-words privacy text, fidelity arithmetic, the HTML toolkit."""

import math

import numpy as np
import pytest
from dp_accounting import ComposedDpEvent
from matplotlib import pyplot as plt

from fedsynth.common import html
from fedsynth.common.accounting import CombinedAccountant, Ledger, gaussian_event
from fedsynth.common.generator import Measurement
from fedsynth.common.marginals import expected_noise_l1, marginal
from fedsynth.common.shares import share_gaps, vanishing_groups
from fedsynth.server.report import cumulative_epsilon, marginal_fits, privacy_paragraphs

DOMAIN = {"a": 3, "b": 4}


def statement(epsilon=0.8, planned=1.0, colluders=1, phases=None, survivors=3):
    return {
        "epsilon": epsilon, "delta": 2e-6, "unit_of_privacy": "one record of any organisation",
        "accountant": "pld", "federation_epsilon": epsilon, "federation_cap": 1.0,
        "contribution_bounding": "no row cap in this job's plan",
        "trust": {"min_honest_survivors_t": 2, "organisations_n": 3, "tolerated_colluding_organisations": colluders},
        "plan": {"epsilon_planned": planned},
        "per_phase": phases or {"generator": {"epsilon": 0.7}, "teacher": {"epsilon": 0.35}},
        "survivors_per_round": {"1": ["o"] * survivors, "2": ["o"] * survivors},
    }


def test_privacy_text_states_the_statements_numbers_in_plain_words():
    text = " ".join(privacy_paragraphs(statement()))
    assert "(0.8, 2e-06)-differentially private" in text
    assert f"factor e^0.8 = {math.exp(0.8):.3g}" in text  # 2.23
    assert f"at most {100 * math.exp(0.8) / (1 + math.exp(0.8)):.1f}% sure" in text  # 69.0%
    assert "t = 2 of the n = 3 organisations" in text and "up to 1 organisation may drop out" in text
    assert "Up to 1 organisation may collude with the coordinator and epsilon stays at most the planned 1" in text
    assert "below the planned 1" in text and "Here all 3 survived every round" in text
    assert "Here at least 2 survived" in " ".join(privacy_paragraphs(statement(survivors=2)))
    assert "generator 0.7, teacher 0.35: together 1.05, more than the total 0.8" in text


def test_privacy_text_says_nothing_of_a_spend_below_plan_or_sub_additivity_when_neither_applies():
    text = " ".join(privacy_paragraphs(statement(epsilon=1.0, colluders=0, phases={"generator": {"epsilon": 1.0}})))
    assert "below the planned" not in text and "do not add up" not in text
    assert "No organisation may collude with the coordinator" in text


def test_cumulative_epsilon_ends_at_the_composed_total_and_never_decreases(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl", cap_epsilon=100.0, delta=1e-6)
    events = [gaussian_event(z) for z in (3.0, 5.0, 2.0, 8.0)]
    for i, event in enumerate(events):
        ledger.append("p", f"round {i}", event)
    spent = cumulative_epsilon(ledger.entries, 1e-6)
    total = CombinedAccountant().compose(ComposedDpEvent(events)).epsilon(1e-6).epsilon
    assert spent[-1] == pytest.approx(total, rel=1e-9)
    assert all(b > a for a, b in zip(spent, spent[1:]))
    first = CombinedAccountant().compose(events[0]).epsilon(1e-6).epsilon
    assert spent[0] == pytest.approx(first, rel=1e-9)


def _codes(rows=4_000, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, rows)
    return np.column_stack([a, (a + rng.integers(0, 2, rows)) % 4])


def test_a_synthetic_table_equal_to_the_measurement_has_no_error():
    codes = _codes()
    exact = [Measurement(cl, marginal(codes, list(DOMAIN), DOMAIN, cl).astype(float), 5.0) for cl in [("a",), ("a", "b")]]
    fits = marginal_fits(exact, codes, DOMAIN)
    assert [f.l1 for f in fits] == [0.0, 0.0] and [f.tvd for f in fits] == [0.0, 0.0]
    assert fits[1].noise_l1 == pytest.approx(expected_noise_l1(5.0, ("a", "b"), DOMAIN))


def test_a_measurement_with_noise_differs_by_about_its_noise_band():
    codes, rng, sigma = _codes(), np.random.default_rng(1), 20.0
    clique = ("a", "b")
    truth = marginal(codes, list(DOMAIN), DOMAIN, clique)
    l1 = [
        marginal_fits([Measurement(clique, truth + rng.normal(0, sigma, truth.size), sigma)], codes, DOMAIN)[0]
        for _ in range(200)
    ]
    band = l1[0].noise_l1
    # scaling to the noisy total removes a little of the noise: the mean lies just below the band
    assert 0.8 * band < np.mean([f.l1 for f in l1]) < 1.05 * band
    other = _codes(seed=2)[:, ::-1] % 3  # a different table is far outside it
    assert marginal_fits([Measurement(clique, truth.astype(float), sigma)], other, DOMAIN)[0].l1 > 5 * band


def test_html_escapes_text_and_formats_numbers():
    cell = html.table(["<b>"], [[1234567], [0.000123456], ["<script>"], [True]])
    assert "&lt;b&gt;" in cell and "&lt;script&gt;" in cell and "<script>" not in cell
    assert ">1,234,567<" in cell and ">0.0001235<" in cell and ">True<" in cell
    assert html.paragraph("a < b & c") == "<p>a &lt; b &amp; c</p>"
    doc = html.page("T & U", [html.section("Budget spent", html.paragraph("x"))])
    assert doc.startswith("<!DOCTYPE html>") and "<title>T &amp; U</title>" in doc
    assert '<section id="budget-spent">' in doc and "http" not in doc


def test_html_figure_embeds_a_png_and_closes_the_figure():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    number = fig.number
    out = html.figure(fig, 'a "line"')
    assert out.startswith('<figure><img src="data:image/png;base64,iVBOR')  # the PNG signature
    assert 'alt="a &quot;line&quot;"' in out
    assert number not in plt.get_fignums()


def test_a_small_group_missing_from_the_release_is_flagged_and_one_kept_is_not():
    """A category with 0.3% of the measured rows and none in the release: flagged; the same release
    with the group at its share, or a group the noise swamps, is not."""
    rng = np.random.default_rng(3)
    truth = np.array([6000.0, 3970.0, 30.0])  # the last group: 0.3%
    noisy = truth + rng.normal(0, 2.0, 3)
    dropped = np.array([6020.0, 3980.0, 0.0])
    (gap,) = share_gaps("race", noisy, 2.0, dropped)
    assert (gap.column, gap.code) == ("race", 2) and gap.measured == pytest.approx(0.003, abs=5e-4) and gap.released == 0
    assert gap.describe("Other").startswith(f"race = Other: {gap.measured:.2%} of the measured rows but 0.00% of the released rows")
    assert "nearly vanished" in gap.describe("Other")
    assert share_gaps("race", noisy, 2.0, truth) == []  # kept at its share: nothing to say
    assert share_gaps("race", noisy, 20.0, dropped) == []  # 30 rows under noise of std 20: not a group the data shows
    assert share_gaps("race", noisy, 2.0, dropped / 100) == []  # 100 released rows: sampling explains a missing 0.3%


def test_vanishing_groups_read_the_one_way_measurements():
    codes = np.column_stack([np.r_[np.zeros(6000), np.ones(4000)], np.zeros(10_000)]).astype(np.int64)
    measurements = [(("a",), np.array([6000.0, 3970.0, 30.0]), 1.0), (("a", "b"), np.zeros(12), 50.0),
                    (("b",), np.array([10_000.0, 0, 0, 0]), 1.0)]
    (gap,) = vanishing_groups(measurements, codes, DOMAIN)
    assert (gap.column, gap.code, gap.released) == ("a", 2, 0.0) and gap.measured == pytest.approx(0.003)
