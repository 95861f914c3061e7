"""The student labeller: the DP teacher's knowledge distilled onto synthetic rows.

The student is trained at the coordinator on the generator's synthetic features with the
teacher's soft labels at temperature ``T`` (Hinton et al. 2015; PrivFlow-style) and, with weight
``generator_weight``, with the label the generator drew for each synthetic row: the generator's
model and the teacher are two independent DP estimates of the label given the other columns (the
first from the measured marginals that hold the label, the second from DP-SGD), and the student
learns a mixture of the two. It sees only the synthetic table and the released teacher, so it is
post-processing and costs no privacy. The release's label column is then drawn from the
student's probabilities (``sample``), set to their most likely class (``argmax``), or left as the
generator drew it (``generator``).

Its classes' prior is then matched to the generator's (:func:`match_label_shares`): the output
bias is shifted so that the student's mean class probabilities over the synthetic rows equal
the label's shares among them, which the generator drew from its model (the label's 1-way
marginal is measured with little noise). A DP teacher's intercept is its least converged weight
(few noisy steps from zero), and a label rate that is off moves every (column, label) marginal
of the release; a shift of the bias moves no row's rank. Post-processing of the synthetic rows:
no privacy cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .teacher import Features, TeacherSettings, build_model, predict_proba, predict_proba_codes

LABEL_MODES = ("sample", "argmax", "generator")
#: Rows one-hot encoded and labelled at a time (bounds the memory of labelling millions of rows).
CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class StudentSettings:
    """The student network and its distillation schedule (no privacy parameters: none needed)."""

    model: str = "mlp"
    hidden: int = 64
    temperature: float = 2.0
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 0.01
    generator_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("student temperature, epochs and batch size must be positive")
        if not 0.0 <= self.generator_weight <= 1.0:
            raise ValueError(f"student generator_weight must lie between 0 and 1, got {self.generator_weight}")


def distil(teacher: nn.Module, features: Features, codes: np.ndarray, settings: StudentSettings, seed: int) -> nn.Module:
    """Train a student on ``codes``' features to match the teacher's soft labels at temperature T
    and the labels the generator drew in ``codes``.

    The loss is ``(1 - g) T^2 KL(teacher_T || student_T) + g CE(student, label)`` with ``g`` the
    settings' ``generator_weight``: the usual distillation scaling for the teacher's part, the
    cross-entropy of the generator's labels for the rest.
    """
    x, labels = features.x(codes), features.y(codes)
    soft = torch.from_numpy(predict_proba(teacher, x, settings.temperature))
    weight = settings.generator_weight
    student = build_model(TeacherSettings(model=settings.model, hidden=settings.hidden), features, seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(settings.epochs):
        for rows in torch.randperm(len(x), generator=generator).split(settings.batch_size):
            logits = student(x[rows])
            log_student = torch.log_softmax(logits / settings.temperature, dim=1)
            distilled = nn.functional.kl_div(log_student, soft[rows], reduction="batchmean") * settings.temperature**2
            loss = (1.0 - weight) * distilled + weight * nn.functional.cross_entropy(logits, labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    match_label_shares(student, features, codes)
    return student


#: At most this many iterations of :func:`match_label_shares`' fixed point, which stops once no
#: class's log-share moves by more than :data:`PRIOR_TOLERANCE`.
PRIOR_ITERATIONS = 200
PRIOR_TOLERANCE = 1e-6


def match_label_shares(model: nn.Sequential, features: Features, codes: np.ndarray) -> None:
    """Shift ``model``'s output bias so that its mean class probabilities over ``codes`` equal the
    label's shares among ``codes`` (a class no row holds counts half a row): the EM prior
    adjustment of Saerens et al. (2002), ``b <- b + log(share / mean probability)``."""
    counts = np.bincount(codes[:, list(features.domain).index(features.label)], minlength=features.classes)
    shares = np.maximum(counts, 0.5) / np.maximum(counts, 0.5).sum()
    proba = np.concatenate([predict_proba_codes(model, features, c) for c in _chunks(codes)]).astype(np.float64)
    logits = np.log(np.clip(proba, 1e-300, None))  # in float64: a float32 clip at 1e-300 is 0
    shift = np.zeros(features.classes)
    for _ in range(PRIOR_ITERATIONS):
        proba = np.exp(logits + shift - (logits + shift).max(axis=1, keepdims=True))
        proba /= proba.sum(axis=1, keepdims=True)
        step = np.log(shares / proba.mean(axis=0))
        shift += step
        if np.abs(step).max() < PRIOR_TOLERANCE:
            break
    with torch.no_grad():
        model[-1].bias += torch.from_numpy((shift - shift.mean()).astype(np.float32))


def relabel(
    codes: np.ndarray, features: Features, student: nn.Module, mode: str, rng: np.random.Generator
) -> np.ndarray:
    """``codes`` with the label column replaced per ``mode`` (``LABEL_MODES``)."""
    if mode not in LABEL_MODES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_MODES)}, got {mode!r}")
    if mode == "generator":
        return codes
    proba = np.concatenate([predict_proba_codes(student, features, chunk) for chunk in _chunks(codes)])
    if mode == "argmax":
        labels = proba.argmax(axis=1)
    else:
        cumulative = np.cumsum(proba, axis=1)
        labels = (rng.random((len(proba), 1)) > cumulative[:, :-1]).sum(axis=1)
    out = codes.copy(order="K")  # keeps a column-major array column-major
    out[:, list(features.domain).index(features.label)] = labels
    return out


def _chunks(codes: np.ndarray) -> list[np.ndarray]:
    return [codes[start : start + CHUNK_ROWS] for start in range(0, max(len(codes), 1), CHUNK_ROWS)]
