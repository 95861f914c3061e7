"""The teacher's per-example gradients, clipping, integer rounding and the student, without Flower."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedsynth.cli import bundled
from fedsynth.common.schema import load_schema
from fedsynth.common.student import StudentSettings, distil, match_label_shares, relabel
from fedsynth.common.teacher import (
    Features,
    TeacherSettings,
    build_model,
    clip_rows,
    conditional_round,
    dimension,
    get_flat,
    grid_sensitivity,
    integer_gradient_sum,
    per_example_gradients,
    predict_proba,
    rounded_l2_bound,
    set_flat,
)

SCHEMA = load_schema(bundled("adult.schema.yaml"))


@pytest.fixture(scope="module")
def codes():
    return SCHEMA.encode(SCHEMA.read_csv(bundled("adult.csv")))


def features(label: str = "Y") -> Features:
    return Features(SCHEMA.domain(), label)


def test_features_are_one_hot_blocks_without_the_label(codes):
    f = features()
    x = f.x(codes[:50])
    assert x.shape == (50, sum(n for c, n in SCHEMA.domain().items() if c != "Y"))
    assert torch.all(x.sum(dim=1) == len(SCHEMA.column_names) - 1)  # one hot per input column
    assert f.classes == 2 and torch.equal(f.y(codes[:50]), torch.from_numpy(codes[:50, -1]))


@pytest.mark.parametrize("model,label", [("logreg", "Y"), ("mlp", "Y"), ("mlp", "relationship")])
def test_opacus_per_example_gradients_equal_each_examples_own_gradient(codes, model, label):
    f = features(label)
    net = build_model(TeacherSettings(model=model, hidden=8), f, seed=1)
    x, y = f.x(codes[:6]), f.y(codes[:6])
    grads = per_example_gradients(net, x, y)
    assert grads.shape == (6, dimension(net))
    for i in range(6):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        own = np.concatenate([p.grad.numpy().ravel() for p in net.parameters()])
        np.testing.assert_allclose(grads[i], own, atol=1e-6)
    assert not hasattr(next(net.parameters()), "grad_sample")  # Opacus' hooks are gone


def test_clipping_bounds_every_example_and_keeps_small_ones():
    rows = np.random.default_rng(0).normal(0, 1, (200, 30)) * np.linspace(0.01, 3, 200)[:, None]
    clipped = clip_rows(rows, 1.0)
    norms = np.linalg.norm(rows, axis=1)
    assert np.linalg.norm(clipped, axis=1).max() <= 1.0 + 1e-12
    np.testing.assert_array_equal(clipped[norms <= 1.0], rows[norms <= 1.0])


def test_conditional_rounding_respects_the_bound_and_is_nearly_unbiased():
    rng = np.random.default_rng(1)
    dim, resolution = 400, 50.0
    row = clip_rows(rng.normal(0, 1, (1, dim)), 1.0) * resolution
    bound = rounded_l2_bound(resolution, dim)
    draws = conditional_round(np.repeat(row, 4000, axis=0), bound, rng)
    assert draws.dtype == np.int64 and np.linalg.norm(draws, axis=1).max() <= bound
    # Conditioning on the norm shifts the mean by very little: within 0.02 of one grid step.
    assert np.abs(draws.mean(axis=0) - row[0]).max() < 0.02 + 4 * 0.5 / np.sqrt(4000)


def test_grid_sensitivity_is_the_rounded_l2_bound_and_integer_l1():
    settings = TeacherSettings(resolution=1024)
    l1, l2 = grid_sensitivity(settings, 328)
    assert 1024 < l2 < 1024 * 1.001
    assert l1 == pytest.approx(l2 * np.sqrt(328))


def test_a_full_batch_sum_is_a_sum_of_per_record_vectors_within_the_sensitivity(codes):
    """The sensitivity argument's premise: each record contributes one integer vector of norm <= Delta2."""
    f, settings = features(), TeacherSettings()
    net = build_model(settings, f, seed=0)
    x, y = f.x(codes[:300]), f.y(codes[:300])
    total = integer_gradient_sum(net, x, y, settings, np.random.default_rng(5))
    replay = np.random.default_rng(5)
    assert np.all(replay.random(300) < settings.sampling_rate)  # q = 1: every row is in the batch
    _, l2 = grid_sensitivity(settings, dimension(net))
    per_record = conditional_round(
        clip_rows(per_example_gradients(net, x, y), settings.clip) * settings.resolution, l2, replay
    )
    np.testing.assert_array_equal(total, per_record.sum(axis=0))
    assert np.linalg.norm(per_record, axis=1).max() <= l2
    assert np.linalg.norm(per_record, axis=1).max() > settings.resolution * 0.99  # clipping was active


def test_poisson_sampling_takes_the_planned_fraction_on_average(codes):
    """E[sum over a Poisson batch] = q * full sum: the mean of many draws matches, tightly."""
    f = features()
    settings = TeacherSettings(sampling_rate=0.25)
    net = build_model(settings, f, seed=0)
    x, y = f.x(codes[:200]), f.y(codes[:200])
    full = integer_gradient_sum(net, x, y, TeacherSettings(), np.random.default_rng(0)).astype(float)
    draws = np.array([integer_gradient_sum(net, x, y, settings, np.random.default_rng(s)) for s in range(300)])
    tolerance = 5 * draws.std(axis=0) / np.sqrt(len(draws)) + 1  # 5 standard errors per coordinate
    assert np.all(np.abs(draws.mean(axis=0) - 0.25 * full) < tolerance)
    assert np.any(np.abs(0.05 * full) > tolerance)  # a rate of 0.30 instead of 0.25 would be caught


def test_settings_travel_through_a_config_record():
    settings = TeacherSettings(model="mlp", hidden=7, steps=3, sampling_rate=0.5, clip=2.0, learning_rate=0.2)
    assert TeacherSettings.from_config(settings.to_config()) == settings
    with pytest.raises(ValueError, match="sampling rate"):
        TeacherSettings(sampling_rate=0)


def test_weights_round_trip_through_a_flat_vector():
    f = features()
    a, b = build_model(TeacherSettings(model="mlp"), f, 0), build_model(TeacherSettings(model="mlp"), f, 1)
    set_flat(b, get_flat(a))
    np.testing.assert_array_equal(get_flat(a), get_flat(b))
    with pytest.raises(ValueError, match="parameters"):
        set_flat(b, np.zeros(3))


@pytest.mark.parametrize("label", ["Y", "relationship"])  # binary and 6 classes
def test_student_learns_the_teachers_probabilities_on_synthetic_rows(codes, label):
    f = features(label)
    teacher = build_model(TeacherSettings(), f, seed=3)
    x, y = f.x(codes), f.y(codes)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.1)
    for _ in range(50):  # a plain (non-private) teacher: this test is about distillation only
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    synthetic = codes[np.random.default_rng(0).permutation(len(codes))[:3000]]
    student = distil(teacher, f, synthetic, StudentSettings(epochs=15, generator_weight=0.0), seed=0)
    held_out = codes[-1000:]
    gap = np.abs(predict_proba(student, f.x(held_out)) - predict_proba(teacher, f.x(held_out)))
    assert gap.sum(axis=1).mean() < 0.1  # mean total-variation distance per row
    assert predict_proba(student, f.x(held_out)).shape[1] == f.classes


def test_the_student_mixes_the_teacher_with_the_generators_labels_by_their_weight(codes):
    """An uninformed teacher (every row alike) against labels that follow the other columns: the
    more weight the generator's labels get, the more the student separates the rows as they do."""
    f = features("Y")
    teacher = build_model(TeacherSettings(model="logreg"), f, seed=3)
    with torch.no_grad():
        teacher[-1].weight.zero_()
    synthetic, held_out = codes[:3000], codes[-1000:]
    truth = f.y(held_out).numpy()
    separation, auc = [], []
    for weight in (0.0, 0.5, 1.0):
        student = distil(teacher, f, synthetic, StudentSettings(epochs=5, generator_weight=weight), seed=0)
        proba = predict_proba(student, f.x(held_out))[:, 1]
        separation.append(proba[truth == 1].mean() - proba[truth == 0].mean())
        auc.append(roc_auc_score(truth, proba))
    assert abs(separation[0]) < 0.02 and separation[0] < separation[1] < separation[2]
    assert auc[1] > 0.7 and auc[2] > 0.7  # the labels' ranking, which the teacher does not have
    with pytest.raises(ValueError, match="generator_weight"):
        StudentSettings(generator_weight=1.5)


@pytest.mark.parametrize("label", ["Y", "relationship"])  # binary and 6 classes
def test_the_students_label_shares_are_the_synthetic_rows_and_no_rank_moves(codes, label):
    """A DP teacher's intercept is its least converged weight: one whose bias is off labels too
    few rows with the rarer classes, which moves every (column, label) marginal of a release."""
    f = features(label)
    teacher = build_model(TeacherSettings(model="logreg"), f, seed=3)
    x, y = f.x(codes), f.y(codes)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.1)
    for _ in range(50):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        teacher[-1].bias -= torch.linspace(0.0, 2.0, f.classes)  # the later classes under-predicted
    synthetic = codes[np.random.default_rng(0).permutation(len(codes))[:3000]]
    shares = np.bincount(f.y(synthetic).numpy(), minlength=f.classes) / len(synthetic)
    assert np.abs(predict_proba(teacher, f.x(synthetic)).mean(axis=0) - shares).max() > 0.03
    student = distil(teacher, f, synthetic, StudentSettings(epochs=5), seed=0)
    np.testing.assert_allclose(predict_proba(student, f.x(synthetic)).mean(axis=0), shares, atol=1e-4)
    before = predict_proba(student, f.x(codes[:500]))
    match_label_shares(student, f, codes[:2000])  # another target: the shift moves no row's rank
    after = predict_proba(student, f.x(codes[:500]))
    for k in range(1, f.classes):
        np.testing.assert_array_equal(np.argsort(np.log(before[:, k] / before[:, 0]), kind="stable"),
                                      np.argsort(np.log(after[:, k] / after[:, 0]), kind="stable"))


def test_relabel_modes(codes):
    f = features("relationship")
    student = build_model(TeacherSettings(), f, seed=0)
    column = list(SCHEMA.domain()).index("relationship")
    rows = np.repeat(codes[:1], 20_000, axis=0)
    proba = predict_proba(student, f.x(rows[:1]))[0]
    sampled = relabel(rows, f, student, "sample", np.random.default_rng(0))[:, column]
    frequencies = np.bincount(sampled, minlength=f.classes) / len(rows)
    assert np.abs(frequencies - proba).max() < 4 * np.sqrt(0.25 / len(rows))
    argmax = relabel(rows, f, student, "argmax", np.random.default_rng(0))[:, column]
    assert np.all(argmax == proba.argmax())
    kept = relabel(codes, f, student, "generator", np.random.default_rng(0))
    np.testing.assert_array_equal(kept, codes)
    other = [i for i in range(codes.shape[1]) if i != column]
    np.testing.assert_array_equal(relabel(codes, f, student, "sample", np.random.default_rng(0))[:, other], codes[:, other])
    with pytest.raises(ValueError, match="labels must be one of"):
        relabel(codes, f, student, "teacher", np.random.default_rng(0))


def test_a_record_whose_gradient_overflows_becomes_a_zero_row_and_cannot_stall_rounding():
    grads = np.array([[3.0, 4.0], [np.nan, 1.0], [np.inf, 0.0], [0.3, 0.4]])
    clipped = clip_rows(grads, 1.0)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.0, 0.0], [0.0, 0.0], [0.3, 0.4]])
    rounded = conditional_round(clipped * 8, 8 * 1.5, np.random.default_rng(0))  # terminates
    assert rounded.shape == (4, 2) and not rounded[1:3].any()
