"""The selection vote against a coordinator that crafts its inputs (issue 20, attack 1).

main at b4f9281 let a coordinator send penalties of -2**62: the float scores then lost the
Gumbel noise and an error difference of at most 2 decided the vote (P[vote for A] 1 on a table,
0 on its neighbour, at an accounted epsilon of 0.5). Now the organisation computes its errors
exactly on a public grid and its penalties itself, draws the vote with an exact sampler, and
its guard refuses any input outside public bounds (``common.vote``, ``client.guard``).

* Golden values: the view's integer weights, exact errors worked out by hand, the clip, the
  grid rounding, the penalties, and a fixed-seed sequence of the sampler (which pins its
  integer arithmetic: any change in how it draws changes the sequence).
* The exact sampler's distribution: frequencies of Bernoulli(exp(-x)), chi-square tests of one
  draw and of a second draw given the first (with the power to reject twice the epsilon).
* The real path: requests built as the coordinator builds them, admitted by the guard through
  ``client.app.guarded_share`` (the ClientApp's own function) and drawn by
  ``Organisation.contribute`` (what ``guarded_share`` computes once the round is in the ledger;
  repeated 2,000 times without ledger entries). For crafted views and penalty stds (tuned to a
  near tie with the largest shift one row can cause, huge, tiny, denormal, 2**53), on a table
  D and D' = D minus one row, 2,000 draws each with a fixed seed: for every candidate, the
  events "voted" and "not voted" have Clopper-Pearson intervals (two-sided, 1 - 1e-4 each) on
  D and D'; the smallest privacy loss |log P_D[E] - log P_D'[E]| consistent with both
  intervals must be at most the round's epsilon (k draws at epsilon: k * epsilon). An
  epsilon-DP vote fails this with probability at most 1e-4 per event, far less at the loss of
  these cases. The same check applied to main's vote on the attack's request finds a loss of
  over 5 (the control: the test can fail).
* Inputs outside the public bounds (and main's two-array request) are refused with a fixed code
  before any data is read or anything recorded.
"""

import json
import math

import numpy as np
import pytest
from scipy import stats

from fedsynth.cli import bundled
from fedsynth.client.app import guarded_share
from fedsynth.client.guard import Guard, GuardPolicy, GuardRefused
from fedsynth.client.organisation import LocalTable, Organisation
from fedsynth.common.accounting import exponential_event
from fedsynth.common.marginals import (
    MAX_ERROR_ROWS,
    VIEW_BITS,
    cells,
    cliques_to_json,
    layout,
    local_errors,
    marginal,
    scores_on_grid,
    split_blocks,
    view_weights,
)
from fedsynth.common.schema import load_schema
from fedsynth.common.secure_sum import NoisySumSpec
from fedsynth.common.vote import (
    MAX_PENALTY_STD,
    MAX_VOTE_EPSILON,
    MAX_VOTE_K,
    VOTE_SENSITIVITY,
    bernoulli_exp,
    exponential_top_k,
    uniform_below,
    vote_penalties,
)

SCHEMA = load_schema(bundled("adult.schema.yaml"))
TABLE = SCHEMA.read_csv(bundled("adult.csv")).iloc[:400].reset_index(drop=True)
DOMAIN = SCHEMA.domain()
COLUMNS = list(DOMAIN)
B, A, C = ("sex", "race"), ("age", "sex"), ("race", "Y")  # 10, 26 and 10 cells
DRAWS = 2000
ALPHA = 1e-4  # each Clopper-Pearson interval is two-sided at 1 - ALPHA


# ---- golden values


def test_view_weights_are_integers_summing_to_the_grid_whatever_the_view():
    assert view_weights(np.array([1.0, 1.0])).tolist() == [2**23, 2**23]
    assert view_weights(np.array([1.0, 2.0, 1.0])).tolist() == [2**22, 2**23, 2**22]
    assert view_weights(np.array([1.0, 1.0, 1.0])).tolist() == [5592405, 5592405, 5592406]  # floor(k 2**24 / 3)
    assert view_weights(np.array([0.0, 5e-324, 0.0])).tolist() == [0, 2**24, 0]  # a denormal total
    assert view_weights(np.array([2.0**53, 5e-324])).tolist() == [2**24, 0]
    assert view_weights(np.array([1e300, 1e300])).tolist() == view_weights(np.array([1e-300, 1e-300])).tolist()
    rng = np.random.default_rng(0)
    for values in (rng.random(1000), rng.random(1000) ** 40 * 2.0**53, np.r_[np.zeros(999), 1e-310]):
        weights = view_weights(values)
        assert weights.dtype == np.int64 and weights.min() >= 0 and weights.sum() == 2**VIEW_BITS


def test_local_errors_are_exact_integers_worked_out_by_hand():
    # counts (3, 1) against a uniform model of 4 rows: |3 - 2| + |1 - 2| = 2 rows = 2**25 units.
    assert local_errors([np.array([3, 1])], [np.array([1.0, 1.0])]).tolist() == [2**25]
    assert local_errors([np.array([3, 1])], [np.array([1e300, 1e300])]).tolist() == [2**25]
    # (4, 0) against (1, 3) / 4: |4 - 1| + |0 - 3| = 6 rows.
    assert local_errors([np.array([4, 0])], [np.array([0.25, 0.75])]).tolist() == [6 * 2**24]
    # 2**33 rows all in one cell against a uniform model: 2**33 rows of error, clipped to 2**32.
    assert local_errors([np.array([2**33, 0])], [np.array([1.0, 1.0])]).tolist() == [MAX_ERROR_ROWS << VIEW_BITS]
    # Given the first column: (a0: 3 rows, a1: 1 row) x b against a model that is wrong on a
    # ((1, 3) / 4) but right on b given a (b0 always in a0, uniform in a1): only b given a counts,
    # weighted by the local a counts: |3 - 3| + |0 - 0| + |1 - 0.5| + |0 - 0.5| = 1 row.
    local, view = np.array([3, 0, 1, 0]), np.array([0.25, 0.0, 0.375, 0.375])
    assert local_errors([local], [view], [layout(("a", "b"), {"a": 2, "b": 2}, ["a"])]).tolist() == [2**24]
    assert local_errors([local], [view]).tolist() == [4 * 2**24]  # |3 - 1| + 0 + |1 - 1.5| + |0 - 1.5| = 4 rows
    # Only the first given column the candidate holds is given; a slice without mass is uniform.
    assert layout(("a", "b", "c"), {"a": 2, "b": 2, "c": 3}, ["c", "a"]) == ((2, 2, 3), (2,))
    assert layout(("a", "b"), {"a": 2, "b": 2}, ["c"]) == ((2, 2), ())
    assert local_errors([np.array([0, 0, 2, 2])], [np.array([1.0, 1.0, 0.0, 0.0])],
                        [layout(("a", "b"), {"a": 2, "b": 2}, ["a"])]).tolist() == [0]
    # The score grid: 2 rows are 8 steps; an eighth of a row (half a step) rounds up.
    assert scores_on_grid(np.array([2**25, 2**21, 2**21 - 1])).tolist() == [8, 1, 0]


def test_penalties_are_aims_on_the_grid_and_clipped():
    domain = {"a": 2, "b": 3}
    expected = round(math.sqrt(2 / math.pi) * 1.5 * 6 * 2**24)
    assert vote_penalties(1.5, [("a", "b")], domain).tolist() == [expected]
    assert vote_penalties(0.0, [("a", "b")], domain).tolist() == [0]
    assert vote_penalties(5e-324, [("a", "b")], domain).tolist() == [0]
    assert vote_penalties(MAX_PENALTY_STD, [tuple(COLUMNS)], DOMAIN).tolist() == [MAX_ERROR_ROWS << VIEW_BITS]


def test_the_sampler_is_pinned_by_a_fixed_seed():
    rng = np.random.default_rng(2026)
    bits = [bernoulli_exp(7, 10, rng) for _ in range(16)]
    assert bits == GOLDEN_BERNOULLI
    picks = [exponential_top_k(rng, [0, 40, 80, 100], 1.0, 20, 2, [("a",), ("b",), ("c",), ("d",)]) for _ in range(8)]
    assert picks == GOLDEN_PICKS
    assert [uniform_below(n, rng) for n in (1, 2, 3, 2**64 + 1)] == GOLDEN_UNIFORM


GOLDEN_BERNOULLI = [False, True, True, False, True, False, True, False, False, True, True, False, True, True, False, False]
GOLDEN_PICKS = [[2, 3], [3, 2], [2, 3], [1, 0], [3, 2], [2, 3], [0, 3], [2, 1]]
GOLDEN_UNIFORM = [0, 1, 1, 3030785861460723295]


# ---- the exact sampler's distribution


@pytest.mark.parametrize(("numerator", "denominator"), [(0, 1), (1, 3), (1, 1), (5, 2), (7, 2**20)])
def test_bernoulli_exp_has_probability_exp_minus_x(numerator, denominator):
    rng = np.random.default_rng(numerator * 31 + denominator)
    hits = sum(bernoulli_exp(numerator, denominator, rng) for _ in range(20_000))
    p = math.exp(-numerator / denominator)
    if p == 1.0:
        assert hits == 20_000
        return
    assert stats.binomtest(hits, 20_000, p).pvalue > 1e-3
    assert stats.binomtest(hits, 20_000, 0.8 * p).pvalue < 1e-6  # power: a fifth less


def test_uniform_below_is_uniform_beyond_64_bits():
    rng = np.random.default_rng(1)
    n = 3 * 2**70
    draws = [uniform_below(n, rng) * 6 // n for _ in range(12_000)]  # which sixth of [0, n)
    assert stats.chisquare(np.bincount(draws, minlength=6)).pvalue > 1e-3


def test_one_draw_follows_the_exponential_mechanism():
    rng = np.random.default_rng(3)
    scores, epsilon, sensitivity = [0, 10, 20, 25], 1.0, 5
    cands = [("a",), ("b",), ("c",), ("a", "b")]
    draws = np.array([exponential_top_k(rng, scores, epsilon, sensitivity, 1, cands)[0] for _ in range(10_000)])
    observed = np.bincount(draws, minlength=4)
    for eps, test in ((epsilon, lambda p: p > 1e-3), (2 * epsilon, lambda p: p < 1e-6)):  # power: twice epsilon
        p = np.exp(eps * np.array(scores) / (2 * sensitivity))
        assert test(stats.chisquare(observed, p / p.sum() * draws.size).pvalue)


def test_top_k_returns_distinct_indices_and_skips_contained_cliques():
    cands = [("a", "b"), ("a",), ("b", "c"), ("c",), ("a", "c")]
    scores = [10_000, 9_900, 5_000, 4_900, 0]  # huge margins: the order is certain
    picks = exponential_top_k(np.random.default_rng(0), scores, 1.0, 2, 3, cands)
    assert picks == [0, 2, 4]  # ("a",) lies in ("a","b"), ("c",) in ("b","c")


def test_the_second_draw_follows_the_mechanism_on_what_remains():
    """Second draw, given the first was index 0, follows the mechanism over the allowed indices."""
    rng = np.random.default_rng(5)
    cands = [("a", "b"), ("a",), ("c",), ("b", "c")]
    scores = [9, 3, 6, 8]
    seconds = []
    for _ in range(6_000):
        picks = exponential_top_k(rng, scores, 1.0, 1, 2, cands)  # weights exp(score / 2)
        if picks[0] == 0:
            seconds.append(picks[1])
    allowed = [2, 3]  # ("a",) is inside ("a","b")
    p = np.exp(np.array(scores)[allowed] / 2) / np.exp(np.array(scores)[allowed] / 2).sum()
    observed = [seconds.count(i) for i in allowed]
    assert sum(observed) == len(seconds) > 300
    assert stats.chisquare(observed, p * len(seconds)).pvalue > 1e-3


# ---- the real path: the guard admits, the organisation draws; privacy loss between neighbours


def guard_policy(folder) -> GuardPolicy:
    return GuardPolicy(folder / "ledger.jsonl", epsilon_cap=10.0, delta=1e-6, min_noise_multiplier=1.0, min_survivors=2)


def organisation(folder, table) -> Organisation:
    return Organisation("hospital-a", lambda _s: table, accepts=SCHEMA, guard=Guard("hospital-a", guard_policy(folder)),
                        cap_seed=7)


def vote_request(candidates, epsilon, k, penalty_std, **extra):
    spec = NoisySumSpec(dim=len(candidates), mu=0.0, min_survivors=3, max_abs=1)
    request = {"schema": SCHEMA.dumps("json"), "task": "select", "cliques": cliques_to_json(candidates),
               "epsilon": epsilon, "k": k, "penalty_std": penalty_std, "round": 1, "num_clients": 3,
               **spec.to_config(), **extra}
    return request


def codes_of(table) -> np.ndarray:
    return LocalTable.from_frame(SCHEMA, table, "x").codes


def counts(codes, clique) -> np.ndarray:
    return marginal(codes, COLUMNS, DOMAIN, clique)


def cell_of(codes, clique) -> np.ndarray:
    """Each row's cell of ``clique``'s marginal."""
    return np.ravel_multi_index(tuple(codes[:, COLUMNS.index(c)] for c in clique), [DOMAIN[c] for c in clique])


CODES = codes_of(TABLE)


def worst_neighbour():
    """The row whose removal moves A's point-mass error by -2 and B's exact-fit error by the most
    (the rarest cell of B among rows in a cell of A holding at least two rows), and A's cell x0."""
    a_counts, b_counts = counts(CODES, A), counts(CODES, B)
    x0 = int(np.argmin(a_counts))
    a_cells, b_cells = cell_of(CODES, A), cell_of(CODES, B)
    rows = [r for r in range(len(TABLE)) if a_cells[r] != x0 and a_counts[a_cells[r]] >= 2]
    row = min(rows, key=lambda r: b_counts[b_cells[r]])
    return TABLE.drop(index=row).reset_index(drop=True), x0


NEIGHBOUR, X0 = worst_neighbour()
NEIGHBOUR_CODES = codes_of(NEIGHBOUR)


def tuned_near_tie(epsilon: float, logit: float = -1.0, a_scale: float = 1.0, b_scale: float = 1.0):
    """Views and a penalty std that put A at ``logit`` against B on D, with the largest shift
    one row can cause: A's view a point mass on a cell the removed row is not in (its error
    drops by exactly 2 rows), B's view D's own marginal (its error grows by almost 2 rows); the
    penalty std, which weighs A's 26 cells against B's 10, closes the gap to a near tie."""
    a_view = np.zeros(cells(DOMAIN, A))
    a_view[X0] = a_scale
    b_view = counts(CODES, B) * b_scale
    a_error = 2 * (len(TABLE) - counts(CODES, A)[X0])  # rows; B's error on D is 0
    target = logit * 2 * 2 / epsilon  # rows of score difference s_A - s_B at that logit (sensitivity 2 rows)
    std = (a_error - target) / (math.sqrt(2 / math.pi) * (cells(DOMAIN, A) - cells(DOMAIN, B)))
    return [np.r_[b_view, a_view]], std


def draw_votes(folder, table, request, arrays, seed) -> np.ndarray:
    """Admit the round as the ClientApp does (one ledger entry), then draw DRAWS votes with the
    organisation's own code; the number of votes each candidate got."""
    org = organisation(folder, table)
    share = guarded_share(org, request, arrays, np.random.default_rng(seed))
    assert share.sum() == request["k"] and set(np.unique(share)) <= {0, 1}
    assert [e.dp_event() for e in org.guard.ledger.entries] == [exponential_event(request["epsilon"], request["k"])]
    rng = np.random.default_rng(seed)
    return np.sum([org.contribute(request, arrays, rng) for _ in range(DRAWS)], axis=0)


def loss_lower_bound(hits_d: int, hits_neighbour: int) -> float:
    """The smallest |log P_D[E] - log P_D'[E]| consistent with both Clopper-Pearson intervals."""

    def interval(hits):
        ci = stats.binomtest(int(hits), DRAWS).proportion_ci(confidence_level=1 - ALPHA, method="exact")
        return ci.low, ci.high

    (lo, hi), (lo2, hi2) = interval(hits_d), interval(hits_neighbour)
    log = lambda p: math.log(p) if p > 0 else -math.inf  # noqa: E731
    return max(log(lo) - log(hi2), log(lo2) - log(hi), 0.0)


def largest_loss(votes_d: np.ndarray, votes_neighbour: np.ndarray) -> float:
    """Over every candidate and both events (voted, not voted)."""
    return max(
        loss_lower_bound(hits, hits2) if voted else loss_lower_bound(DRAWS - hits, DRAWS - hits2)
        for hits, hits2 in zip(votes_d, votes_neighbour, strict=True)
        for voted in (True, False)
    )


def crafted_cases():
    """(name, candidates, epsilon, k, arrays, penalty std) of the crafted rounds, all admitted."""
    near, std = tuned_near_tie(MAX_VOTE_EPSILON)
    extreme, std_half = tuned_near_tie(0.5, a_scale=2.0**53, b_scale=1e-300)
    size = cells(DOMAIN, B) + cells(DOMAIN, A)
    denormal = [np.r_[np.full(cells(DOMAIN, B), 5e-324), near[0][cells(DOMAIN, B):]]]
    three = [np.r_[near[0], counts(CODES, C)]]
    return [
        ("near-tie", [B, A], MAX_VOTE_EPSILON, 1, near, std),
        ("2**53-and-1e-300", [B, A], 0.5, 1, extreme, std_half),
        ("huge-penalties", [B, A], MAX_VOTE_EPSILON, 1, near, MAX_PENALTY_STD),
        ("denormal-view-tiny-penalties", [B, A], MAX_VOTE_EPSILON, 1, denormal, 5e-324),
        ("uniform-view-tiny-epsilon", [B, A], 2.0**-40, 1, [np.ones(size)], std),
        ("two-of-three", [B, A, C], MAX_VOTE_EPSILON, 2, three, std),
    ]


@pytest.mark.parametrize("case", crafted_cases(), ids=lambda c: c[0])
def test_crafted_votes_stay_within_the_rounds_epsilon_between_neighbours(tmp_path, case):
    name, candidates, epsilon, k, arrays, std = case
    request = vote_request(candidates, epsilon, k, std)
    votes = [draw_votes(tmp_path / side, table, request, arrays, seed=11) for side, table in
             (("d", TABLE), ("neighbour", NEIGHBOUR))]
    assert largest_loss(*votes) <= k * epsilon, (name, votes)


def test_the_near_tie_moves_the_vote_as_far_as_epsilon_allows(tmp_path):
    """The tuned case is where the bound binds: A's vote share on D and D' is what the exact
    mechanism gives at logits -1 and about -1 - epsilon, not a deterministic flip."""
    arrays, std = tuned_near_tie(MAX_VOTE_EPSILON)
    request = vote_request([B, A], MAX_VOTE_EPSILON, 1, std)
    shares = [draw_votes(tmp_path / side, t, request, arrays, seed=12)[1] / DRAWS
              for side, t in (("d", TABLE), ("neighbour", NEIGHBOUR))]
    assert abs(shares[0] - 1 / (1 + math.e)) < 0.04  # logit -1
    assert 1 / (1 + math.exp(2.0)) - 0.03 < shares[1] < 1 / (1 + math.exp(1.8)) + 0.03  # logit -1 - 4/4 * (1 - q_c / 2)


# ---- the control: main's vote on the attack's request


def main_vote(codes, view, penalties, epsilon, rng) -> int:
    """The vote as main (b4f9281) drew it, for k = 1: float scores, Gumbel noise, stable argsort."""
    local = [counts(codes, c) for c in (B, A)]
    n = float(local[0].sum())
    model = split_blocks(view, DOMAIN, [B, A])
    errors = np.array([np.abs(m - n * (p / max(p.sum(), 1e-12))).sum() for m, p in zip(local, model)])
    logits = epsilon * (errors - penalties) / (2 * 2.0)
    return int(np.argsort(-(logits + rng.gumbel(size=2)), kind="stable")[0])


def attack_view():
    """B: D's own marginal; A: D's marginal mixed towards a point mass so that A's float error is
    512.5 on D and at most 512 on D' (the issue's tuned view)."""
    q = counts(CODES, A) / len(TABLE)
    point = np.eye(cells(DOMAIN, A))[X0]
    t = 512.5 / (len(TABLE) * np.abs(q - point).sum())
    return np.r_[counts(CODES, B).astype(float), (1 - t) * q + t * point]


def test_the_check_catches_mains_vote_on_the_attack(tmp_path):
    view, penalties = attack_view(), np.full(2, -(2.0**62))
    votes = []
    for codes in (CODES, NEIGHBOUR_CODES):
        rng = np.random.default_rng(13)
        votes.append(np.bincount([main_vote(codes, view, penalties, 0.5, rng) for _ in range(DRAWS)], minlength=2))
    assert votes[0][1] == DRAWS and votes[1][1] == 0  # A always on D, never on D'
    assert largest_loss(*votes) > 5.0 > 0.5
    # The same request now: main's two arrays are refused, and so is a request without penalty_std.
    for arrays, request in (([view, penalties], vote_request([B, A], 0.5, 1, 1.0)),
                            ([view], {**vote_request([B, A], 0.5, 1, 1.0), "penalty_std": None})):
        org = organisation(tmp_path / str(len(arrays)), TABLE)
        with pytest.raises(GuardRefused, match=r"^hospital-a: refused \(rule (model-marginals|vote-range); "):
            guarded_share(org, request, arrays, np.random.default_rng(0))
    # Sent as the coordinator now sends it, the tuned view is one more crafted view within epsilon.
    request = vote_request([B, A], 0.5, 1, 0.0)
    votes = [draw_votes(tmp_path / side, t, request, [view], seed=14) for side, t in (("d", TABLE), ("n", NEIGHBOUR))]
    assert largest_loss(*votes) <= 0.5


# ---- refusals: outside the public bounds, nothing is read and nothing recorded


def _view(**cells_at):
    view = np.ones(cells(DOMAIN, B) + cells(DOMAIN, A))
    for index, value in cells_at.items():
        view[int(index[1:])] = value
    return view


REFUSED = {
    "nan-view": ({}, [_view(i0=np.nan)], "model-marginals"),
    "inf-view": ({}, [_view(i3=np.inf)], "model-marginals"),
    "negative-view": ({}, [_view(i1=-1.0)], "model-marginals"),
    "negative-denormal-view": ({}, [_view(i1=-5e-324)], "model-marginals"),
    "view-above-2**53": ({}, [_view(i2=np.nextafter(2.0**53, np.inf))], "model-marginals"),
    "empty-block": ({}, [np.r_[np.zeros(cells(DOMAIN, B)), np.ones(cells(DOMAIN, A))]], "model-marginals"),
    "wrong-size": ({}, [np.ones(35)], "model-marginals"),
    "penalty-array": ({}, [_view(), np.full(2, -(2.0**62))], "model-marginals"),
    "no-array": ({}, [], "model-marginals"),
    "given-unknown-column": ({"given": json.dumps(["nope"])}, [_view()], "model-marginals"),
    "given-not-a-list": ({"given": json.dumps("sex")}, [_view()], "model-marginals"),
    "given-not-json": ({"given": "[sex"}, [_view()], "model-marginals"),
    "given-nested-too-deeply": ({"given": "[" * 100_000 + "]" * 100_000}, [_view()], "model-marginals"),
    "empty-candidate": ({"cliques": json.dumps([[], list(A)])}, [np.ones(1 + cells(DOMAIN, A))], "model-marginals"),
    "candidate-unknown-column": ({"cliques": json.dumps([["sex", "nope"], list(A)])}, [_view()], "model-marginals"),
    "candidate-repeats-a-column": ({"cliques": json.dumps([["sex", "sex"], list(A)])},
                                   [np.ones(4 + cells(DOMAIN, A))], "model-marginals"),
    "candidate-as-text": ({"cliques": json.dumps(["sex", list(A)])}, [np.ones(2 + cells(DOMAIN, A))], "model-marginals"),
    "candidates-nested-too-deeply": ({"cliques": "[" * 100_000 + "]" * 100_000}, [_view()], "model-marginals"),
    "epsilon-0": ({"epsilon": 0.0}, [_view()], "vote-range"),
    "epsilon-negative": ({"epsilon": -0.5}, [_view()], "vote-range"),
    "epsilon-nan": ({"epsilon": math.nan}, [_view()], "vote-range"),
    "epsilon-inf": ({"epsilon": math.inf}, [_view()], "vote-range"),
    "epsilon-above-max": ({"epsilon": np.nextafter(MAX_VOTE_EPSILON, 2.0)}, [_view()], "vote-range"),
    "epsilon-text": ({"epsilon": "0.5"}, [_view()], "vote-range"),
    "k-0": ({"k": 0}, [_view()], "vote-range"),
    "k-above-candidates": ({"k": 3}, [_view()], "vote-range"),
    "k-above-max": ({"k": MAX_VOTE_K + 1}, [_view()], "vote-range"),
    "k-float": ({"k": 1.0}, [_view()], "vote-range"),
    "k-bool": ({"k": True}, [_view()], "vote-range"),
    "std-negative": ({"penalty_std": -(2.0**62)}, [_view()], "vote-range"),
    "std-nan": ({"penalty_std": math.nan}, [_view()], "vote-range"),
    "std-inf": ({"penalty_std": math.inf}, [_view()], "vote-range"),
    "std-above-max": ({"penalty_std": np.nextafter(MAX_PENALTY_STD, np.inf)}, [_view()], "vote-range"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_inputs_outside_the_public_bounds_are_refused_before_any_data_is_read(tmp_path, name):
    changes, arrays, rule = REFUSED[name]
    request = {**vote_request([B, A], 0.5, 1, 1.0), **changes}
    replies = []
    for side, table in (("d", TABLE), ("neighbour", NEIGHBOUR)):
        org = organisation(tmp_path / side, table)
        with pytest.raises(GuardRefused, match=rf"^hospital-a: refused \(rule {rule}; ") as refused:
            guarded_share(org, request, arrays, np.random.default_rng(0))
        assert not org._tables and len(org.guard.ledger) == 0
        replies.append(str(refused.value))
    assert replies[0] == replies[1]


def test_the_bounds_admit_their_edges(tmp_path):
    view = _view(i0=2.0**53, i1=0.0, i2=5e-324)
    request = vote_request([B, A], MAX_VOTE_EPSILON, 2, MAX_PENALTY_STD)
    assert guarded_share(organisation(tmp_path, TABLE), request, [view], np.random.default_rng(0)).sum() == 2
    assert VOTE_SENSITIVITY == 2 << VIEW_BITS  # two rows, in the errors' units
