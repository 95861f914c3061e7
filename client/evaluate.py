"""``fedsynth evaluate RELEASE --real local.csv``: a release judged against one organisation's
own rows, on the organisation's machine. Nothing leaves it: the real rows are read here, the
figures are printed and written here (``evaluation.json``, ``evaluation.html``), and nothing
is sent anywhere, so no privacy budget is spent. The figures describe the organisation's own
rows: keep them as private as the rows (the federated, DP figures over the union are
``privacy.json``'s ``evaluation``, ``common.evaluation``).

Everything is computed on the release's public schema (``--schema``, else ``RELEASE/schema.yaml``):
the real rows are validated and encoded with it, so a category, bin or missing value means the
same on both sides.

**Fidelity** (SDMetrics' QualityReport definitions):

* column shapes: KSComplement (1 - Kolmogorov-Smirnov statistic) of a numeric column's values,
  TVComplement (1 - total variation distance) of any other column's categories;
* column pair trends: CorrelationSimilarity (1 - |Pearson r_real - r_synthetic| / 2) of two
  numeric columns, ContingencySimilarity (1 - TVD of the 2-way table) of any other pair, with
  numeric values in the schema's public bins (SDMetrics bins them into 10 equal-width bins);
* the quality score, the mean of the two (as SDMetrics reports it);
* mean 2-way and 3-way TVD on the schema's codes (``common.metrics.mean_tvd``: every pair, and
  up to :data:`TRIPLES` triples drawn with ``--seed``);
* TSTR where the schema names a label: a one-hot logistic regression (``common.metrics``)
  trained on the synthetic rows and tested on half of the real rows (AUC, accuracy), next to
  the same model trained on the other half (TRTR), the baseline a release is read against.

**Privacy-risk probes** (anonymeter's three attacks, Giomi et al., PETS 2023), on the schema's
codes: the release carries no finer information than its codes (a synthetic value inside a
bin is drawn by the public decode rule), so an attack on raw values can do no better.

* singling out (multivariate): a predicate ``col1 = v1 and col2 = v2 and col3 = v3`` from a
  random synthetic row and random columns that singles out one synthetic row; success when it
  singles out exactly one real row;
* linkability: the columns split in two halves; for a real target, the nearest synthetic row
  (Gower distance on codes, random tie-breaks) on each half; success when they are the same row;
* inference: the secret is the label (else the last column); for a real target, the secret of
  the nearest synthetic row on every other column; success when it is the target's.

Each success rate has a Wilson 95 % interval and is compared with a baseline (random
predicates, a random row, a random row's secret). anonymeter's risk is ``(attack - control) /
(1 - control)`` where the control rate is the same attack on rows of the same population that
did not take part in the job (``--control``); without them the risk is computed against the
baseline and labelled so: it then counts what the release teaches about the population
(utility) as well as what it reveals about the organisation's own rows. Sets of different
sizes are subsampled to the smaller before singling out (its rate depends on the set's size).

**Distance to closest record** (secondary, labelled so): the Gower distance on codes from each
real row to its nearest synthetic row; the share of exact copies. It is not a privacy measure
(a DP release may copy a common row; a non-private one may copy none), only a sanity check,
read against the control rows' distances when given.

**Libraries.** SDMetrics 0.32 requires pandas < 3 and anonymeter 1.1 requires numpy < 2 and
pyarrow < 22 (``pip install --dry-run sdmetrics anonymeter`` would downgrade pandas 3.1 to 2.3,
numpy 2.4 to 1.26 and pyarrow to 21 under this stack), so their metrics are implemented here
from their published definitions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.metrics import accuracy_score, roc_auc_score

from .evaluate_report import render_page
from ..common.marginals import marginal
from ..common.metrics import all_cliques, classifier, mean_tvd, random_cliques, total_variation
from ..common.schema import Schema, SchemaError, load_schema
from ..common.schema.columns import NUMBER_KINDS, Column
from ..common.shares import vanishing_groups

#: 3-way marginals drawn for the mean 3-way TVD.
TRIPLES = 100
#: Attacks per privacy probe (anonymeter's ``n_attacks``), and columns per singling-out predicate.
ATTACKS = 500
PREDICATE_COLUMNS = 3
#: Real rows whose distance to the closest synthetic record is measured.
DCR_ROWS = 2000
#: z of the Wilson intervals (95 %).
Z95 = 1.959964


class EvaluationError(ValueError):
    """Bad input to ``fedsynth evaluate``: the message names the file, column or option."""


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Tables:
    """The release's rows and the organisation's, read and encoded with one schema."""

    schema: Schema
    synthetic: pd.DataFrame  # typed (Schema.conform)
    real: pd.DataFrame
    control: pd.DataFrame | None
    codes: dict[str, np.ndarray]  # "synthetic", "real", "control" -> rows x columns

    @classmethod
    def from_frames(cls, schema: Schema, synthetic: pd.DataFrame, real: pd.DataFrame,
                    control: pd.DataFrame | None = None) -> "Tables":
        """From raw frames (cells as read by ``Schema.read_csv``) that conform to ``schema``."""
        frames = {"synthetic": synthetic, "real": real} | ({"control": control} if control is not None else {})
        typed = {k: schema.conform(f[schema.column_names]) for k, f in frames.items()}
        codes = {k: schema.encode(f[schema.column_names]) for k, f in frames.items()}
        return cls(schema, typed["synthetic"], typed["real"], typed.get("control"), codes)


def release_schema(release: Path, schema: Path | None) -> Schema:
    """``--schema``, else the release's ``schema.yaml``; a precise error when there is neither."""
    path = schema if schema is not None else release / "schema.yaml"
    if not path.is_file():
        raise EvaluationError(
            f"{path} does not exist; this release has no schema.yaml, so give the job's schema with --schema"
            if schema is None else f"schema file {path} does not exist"
        )
    return load_schema(path)


def read_table(schema: Schema, path: Path, what: str) -> pd.DataFrame:
    """A CSV read with the schema and checked against it (raw cells, the schema's columns)."""
    if not path.is_file():
        raise EvaluationError(f"{what} file {path} does not exist")
    try:
        frame = schema.read_csv(path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' parser and empty-file errors are ValueErrors
        raise EvaluationError(f"{what} file {path} cannot be read as CSV: {exc}") from None
    missing = [c for c in schema.column_names if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{what} file {path} lacks the schema's column(s) {', '.join(missing)}")
    if len(frame) < 2:
        raise EvaluationError(f"{what} file {path} has {len(frame)} row(s); an evaluation needs at least 2")
    frame = frame[schema.column_names]
    try:
        schema.validate(frame, strict=True)
    except SchemaError as exc:
        raise EvaluationError(f"{what} file {path} does not conform to schema '{schema.name}': {exc}") from None
    return frame


def load_tables(release: Path, real: Path, schema: Path | None, control: Path | None) -> Tables:
    if not (release / "privacy.json").is_file() or not (release / "synthetic.csv").is_file():
        raise EvaluationError(f"{release} is not a release: it needs synthetic.csv and privacy.json")
    s = release_schema(release, schema)
    files = {"synthetic": (release / "synthetic.csv", "release"), "real": (real, "real")}
    if control is not None:
        files["control"] = (control, "control")
    read = {name: read_table(s, path, what) for name, (path, what) in files.items()}
    return Tables.from_frames(s, read["synthetic"], read["real"], read.get("control"))


# ---------------------------------------------------------------- fidelity


def code_labels(column: Column) -> list[str]:
    """A readable name for each code of a column: its category, bin or "missing"."""
    if column.categories is not None:
        names = list(column.categories)
    elif column.kind == "boolean":
        names = ["false", "true"]
    else:
        e = column.edges
        names = [f"[{e[k]:g}, {e[k + 1]:g}{']' if k == len(e) - 2 else ')'}" for k in range(len(e) - 1)]
    return names + (["missing"] if column.missing else [])


def is_numeric(schema: Schema, column: str) -> bool:
    return schema[column].kind in NUMBER_KINDS


def column_shape(schema: Schema, column: str, real: pd.DataFrame, synthetic: pd.DataFrame,
                 real_codes: np.ndarray, synthetic_codes: np.ndarray) -> tuple[str, float]:
    """(metric, score): KSComplement of a numeric column's values, else TVComplement of its codes."""
    if is_numeric(schema, column):
        r, s = real[column].dropna().to_numpy(float), synthetic[column].dropna().to_numpy(float)
        if len(r) and len(s):
            return "KSComplement", 1.0 - float(ks_2samp(r, s).statistic)
    domain = schema.domain()
    counts = [marginal(c, schema.column_names, domain, (column,)) for c in (real_codes, synthetic_codes)]
    return "TVComplement", 1.0 - total_variation(*counts)


def pair_trend(schema: Schema, pair: tuple[str, str], real: pd.DataFrame, synthetic: pd.DataFrame,
               real_codes: np.ndarray, synthetic_codes: np.ndarray) -> tuple[str, float]:
    """(metric, score): CorrelationSimilarity of two numeric columns, else ContingencySimilarity."""
    if all(is_numeric(schema, c) for c in pair):
        r = [_pearson(f, pair) for f in (real, synthetic)]
        if not any(math.isnan(x) for x in r):
            return "CorrelationSimilarity", 1.0 - abs(r[0] - r[1]) / 2.0
    domain = schema.domain()
    counts = [marginal(c, schema.column_names, domain, pair) for c in (real_codes, synthetic_codes)]
    return "ContingencySimilarity", 1.0 - total_variation(*counts)


def _pearson(frame: pd.DataFrame, pair: tuple[str, str]) -> float:
    both = frame[list(pair)].dropna().astype(float)
    if len(both) < 2 or (both.std() == 0).any():
        return math.nan
    return float(np.corrcoef(both[pair[0]], both[pair[1]])[0, 1])


def fidelity(t: Tables, seed: int) -> dict[str, Any]:
    s, columns, domain = t.schema, t.schema.column_names, t.schema.domain()
    real, syn = t.codes["real"], t.codes["synthetic"]
    shapes = []
    for c in columns:
        metric, score = column_shape(s, c, t.real, t.synthetic, real, syn)
        shares = [marginal(x, columns, domain, (c,)) / len(x) for x in (real, syn)]
        shapes.append({"column": c, "metric": metric, "score": score, "values": code_labels(s[c]),
                       "real": shares[0].tolist(), "synthetic": shares[1].tolist()})
    trends = []
    for pair in all_cliques(domain, 2):
        metric, score = pair_trend(s, pair, t.real, t.synthetic, real, syn)
        trends.append({"columns": list(pair), "metric": metric, "score": score})
    shape_mean = float(np.mean([x["score"] for x in shapes]))
    trend_mean = float(np.mean([x["score"] for x in trends])) if trends else None
    triples = random_cliques(domain, 3, TRIPLES, seed)
    return {
        "quality_score": float(np.mean([x for x in (shape_mean, trend_mean) if x is not None])),
        "column_shapes": {"score": shape_mean, "columns": shapes},
        "column_pair_trends": {"score": trend_mean, "pairs": trends},
        "tvd": {
            "two_way": mean_tvd(real, syn, domain, all_cliques(domain, 2)) if len(columns) > 1 else None,
            "three_way": mean_tvd(real, syn, domain, triples) if triples else None,
            "three_way_marginals": len(triples),
        },
    }


# ---------------------------------------------------------------- TSTR


def tstr(t: Tables, seed: int) -> dict[str, Any] | None:
    """Train on synthetic, test on half of the real rows; the same model trained on the other
    half (TRTR) is the baseline. None without a label column."""
    label = t.schema.label
    if label is None:
        return None
    real = t.real.astype(str)
    half = np.random.default_rng(seed).permutation(len(real))
    train, test = real.iloc[half[len(real) // 2:]], real.iloc[half[: len(real) // 2]]
    return {
        "label": label,
        "model": "one-hot logistic regression (common.metrics.classifier 'logreg')",
        "test_rows": len(test),
        "synthetic": _scores(t.synthetic.astype(str), test, label),
        "real": _scores(train, test, label),
    }


def _scores(train: pd.DataFrame, test: pd.DataFrame, label: str) -> dict[str, float]:
    """AUC (binary: of the last class in sorted order; else one-vs-rest macro) and accuracy."""
    features = [c for c in train.columns if c != label]
    classes = sorted(set(test[label]))
    if train[label].nunique() < 2:  # one label value: predicts it always, ranks nothing
        return {"auc": 0.5, "accuracy": float((test[label] == train[label].iloc[0]).mean())}
    clf = classifier("logreg", features).fit(train[features], train[label])
    proba = pd.DataFrame(clf.predict_proba(test[features]), columns=clf.classes_)
    proba = proba.reindex(columns=classes, fill_value=0.0)
    accuracy = float(accuracy_score(test[label], clf.predict(test[features])))
    if len(classes) < 2:
        return {"auc": None, "accuracy": accuracy}  # one class among the test rows: nothing to rank
    if len(classes) == 2:
        auc = roc_auc_score(test[label] == classes[1], proba[classes[1]])
    else:
        p = proba.to_numpy() / np.maximum(proba.to_numpy().sum(axis=1, keepdims=True), 1e-12)
        auc = roc_auc_score(test[label], p, multi_class="ovr", labels=classes)
    return {"auc": float(auc), "accuracy": accuracy}


# ---------------------------------------------------------------- privacy-risk probes


def gower_scales(schema: Schema) -> np.ndarray:
    """Per column: 0 for a category (mismatch = 1), else 1 / (codes - 1) for ordered codes."""
    scales = []
    for c in schema.columns:
        ordered = c.kind in NUMBER_KINDS or c.kind == "ordinal"
        scales.append(1.0 / max(c.n_values - 1, 1) if ordered else 0.0)
    return np.array(scales)


def gower_distances(targets: np.ndarray, rows: np.ndarray, scales: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Mean per-column distance (targets x rows): 0/1 on categories and missing values, scaled
    absolute code difference on ordered codes."""
    d = np.zeros((len(targets), len(rows)), dtype=np.float32)
    for j, scale in enumerate(scales):
        a, b = targets[:, j][:, None], rows[:, j][None, :]
        if scale == 0.0:
            d += a != b
        else:
            gone = (a == missing[j]) | (b == missing[j])
            d += np.where(gone, (a != b).astype(np.float32), np.abs(a - b) * np.float32(scale))
    return d / max(len(scales), 1)


def nearest(targets: np.ndarray, rows: np.ndarray, scales: np.ndarray, missing: np.ndarray,
            rng: np.random.Generator, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Index of and distance to each target's nearest row, ties broken at random."""
    jitter = rng.random(len(rows)).astype(np.float32) * 1e-6
    index, distance = [], []
    for start in range(0, len(targets), chunk):
        d = gower_distances(targets[start:start + chunk], rows, scales, missing)
        i = np.argmin(d + jitter, axis=1)
        index.append(i)
        distance.append(d[np.arange(len(i)), i])
    return np.concatenate(index), np.concatenate(distance)


def wilson(successes: int, trials: int) -> tuple[float, float, float]:
    """Rate and its Wilson score interval (95 %); no trials: 0 within [0, 1] (nothing known)."""
    if trials == 0:
        return 0.0, 0.0, 1.0
    p = successes / trials
    centre = (p + Z95**2 / (2 * trials)) / (1 + Z95**2 / trials)
    half = Z95 * math.sqrt(p * (1 - p) / trials + Z95**2 / (4 * trials**2)) / (1 + Z95**2 / trials)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: np.ndarray) -> dict[str, float]:
    p, low, high = wilson(int(np.sum(successes)), len(successes))
    return {"rate": p, "low": low, "high": high}


def risk(attack: dict, reference: dict) -> dict[str, float]:
    """anonymeter's risk ``(attack - reference) / (1 - reference)``, with the attack's interval."""
    r = reference["rate"]
    if r >= 1.0:
        return {"risk": 0.0, "low": 0.0, "high": 0.0}
    scale = lambda x: max(0.0, (x - r) / (1.0 - r))  # noqa: E731
    return {"risk": scale(attack["rate"]), "low": scale(attack["low"]), "high": scale(attack["high"])}


def singles_out(codes: np.ndarray, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each predicate (columns[i] == values[i], all of them), whether exactly one row matches."""
    out = np.zeros(len(columns), dtype=bool)
    for i, (cols, vals) in enumerate(zip(columns, values, strict=True)):
        out[i] = int(np.all(codes[:, cols] == vals, axis=1).sum()) == 1
    return out


def singling_out(t: Tables, rng: np.random.Generator, attacks: int) -> dict[str, Any]:
    syn = t.codes["synthetic"]
    width = min(PREDICATE_COLUMNS, syn.shape[1])
    columns, values = [], []
    for _ in range(attacks * 20):  # predicates that single out a synthetic row (anonymeter's attack)
        row, cols = syn[rng.integers(len(syn))], np.sort(rng.choice(syn.shape[1], width, replace=False))
        if singles_out(syn, np.array([cols]), np.array([row[cols]]))[0]:
            columns.append(cols)
            values.append(row[cols])
            if len(columns) == attacks:
                break
    columns_a, values_a = np.array(columns).reshape(-1, width), np.array(values).reshape(-1, width)
    domain = np.array(list(t.schema.domain().values()))
    random_values = np.array([[rng.integers(domain[c]) for c in cols] for cols in columns_a]).reshape(-1, width)
    targets = {"real": t.codes["real"], "control": t.codes.get("control")}
    if targets["control"] is not None:  # the same size on both sides: the rate depends on it
        n = min(len(targets["real"]), len(targets["control"]))
        targets = {k: v[rng.permutation(len(v))[:n]] for k, v in targets.items()}
    result = {
        "predicates": len(columns_a),
        "columns_per_predicate": width,
        "attack": rate(singles_out(targets["real"], columns_a, values_a)),
        "baseline": rate(singles_out(targets["real"], columns_a, random_values)),
    }
    if targets["control"] is not None:
        result["control"] = rate(singles_out(targets["control"], columns_a, values_a))
    return result


def _targets(t: Tables, rng: np.random.Generator, attacks: int) -> dict[str, np.ndarray]:
    picks = {"real": t.codes["real"]}
    if t.control is not None:
        picks["control"] = t.codes["control"]
    return {k: v[rng.permutation(len(v))[:attacks]] for k, v in picks.items()}


def linkability(t: Tables, rng: np.random.Generator, attacks: int) -> dict[str, Any]:
    """anonymeter's linkability with one neighbour: the columns split in two halves."""
    scales, missing = gower_scales(t.schema), _missing_codes(t.schema)
    syn = t.codes["synthetic"]
    half = syn.shape[1] // 2
    a, b = np.arange(half), np.arange(half, syn.shape[1])
    result: dict[str, Any] = {
        "columns_a": [t.schema.column_names[i] for i in a],
        "columns_b": [t.schema.column_names[i] for i in b],
    }
    for name, targets in _targets(t, rng, attacks).items():
        on_a = nearest(targets[:, a], syn[:, a], scales[a], missing[a], rng)[0]
        on_b = nearest(targets[:, b], syn[:, b], scales[b], missing[b], rng)[0]
        result["attack" if name == "real" else name] = rate(on_a == on_b)
        if name == "real":
            guesses = rng.integers(len(syn), size=(2, len(targets)))  # two random rows: the same one?
            result["baseline"] = rate(guesses[0] == guesses[1])
    return result


def inference(t: Tables, rng: np.random.Generator, attacks: int) -> dict[str, Any]:
    """anonymeter's inference of the secret column from every other, by the nearest synthetic row."""
    s = t.schema
    secret = s.column_names.index(s.label) if s.label is not None else len(s.column_names) - 1
    aux = np.array([j for j in range(len(s.column_names)) if j != secret])
    scales, missing = gower_scales(s), _missing_codes(s)
    syn = t.codes["synthetic"]
    result: dict[str, Any] = {"secret": s.column_names[secret]}
    for name, targets in _targets(t, rng, attacks).items():
        i = nearest(targets[:, aux], syn[:, aux], scales[aux], missing[aux], rng)[0]
        result["attack" if name == "real" else name] = rate(syn[i, secret] == targets[:, secret])
        if name == "real":
            result["baseline"] = rate(syn[rng.integers(len(syn), size=len(targets)), secret] == targets[:, secret])
    return result


def _missing_codes(schema: Schema) -> np.ndarray:
    """Per column, its missing code (-1: the column has none)."""
    return np.array([c.n_codes - 1 if c.missing else -1 for c in schema.columns])


def privacy_probes(t: Tables, seed: int, attacks: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    probes = {
        "singling_out": singling_out(t, rng, attacks),
        "linkability": linkability(t, rng, attacks),
        "inference": inference(t, rng, attacks),
    }
    basis = "control" if t.control is not None else "baseline"
    for probe in probes.values():
        probe["risk"] = risk(probe["attack"], probe[basis])
        probe["risk_against"] = basis
    return probes


def distance_to_closest_record(t: Tables, seed: int) -> dict[str, Any]:
    """Secondary: each real (and control) row's Gower distance on codes to its nearest synthetic row."""
    rng = np.random.default_rng(seed)
    scales, missing = gower_scales(t.schema), _missing_codes(t.schema)
    out: dict[str, Any] = {"note": "secondary sanity check, not a privacy measure"}
    picks = {"real": t.codes["real"]} | ({"control": t.codes["control"]} if t.control is not None else {})
    for name, codes in picks.items():
        rows = codes[rng.permutation(len(codes))[:DCR_ROWS]]
        d = nearest(rows, t.codes["synthetic"], scales, missing, rng)[1]
        out[name] = {
            "rows": len(rows), "exact_copies": float(np.mean(d == 0)), "median": float(np.median(d)),
            "distances": d.round(4).tolist(),
        }
    return out


# ---------------------------------------------------------------- the command


def evaluate(release: Path, real: Path, schema: Path | None = None, control: Path | None = None,
             seed: int = 0, attacks: int = ATTACKS) -> dict[str, Any]:
    """Every figure of the evaluation, as ``evaluation.json`` holds them."""
    t = load_tables(release, real, schema, control)
    return {
        "release": str(release),
        "real": {"file": str(real), "rows": len(t.real)},
        "control": None if control is None else {"file": str(control), "rows": len(t.control)},
        "share_warnings": share_warnings(release, t),
        **figures(t, seed, attacks),
    }


def share_warnings(release: Path, t: Tables) -> list[str]:
    """Groups whose share in the release is far from the release's own noisy measurements
    (``common.shares``: small groups vanishing); none when the release has no measurements.json."""
    path = release / "measurements.json"
    if not path.is_file():
        return []
    try:
        measured = [(m["clique"], np.asarray(m["counts"], dtype=np.float64), float(m["sigma"]))
                    for m in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise EvaluationError(f"{path} cannot be read as the release's measurements ({exc})") from None
    domain = t.schema.domain()
    gaps = vanishing_groups(measured, t.codes["synthetic"], domain)
    return [g.describe(code_labels(t.schema[g.column])[g.code]) for g in gaps]


def figures(t: Tables, seed: int = 0, attacks: int = ATTACKS) -> dict[str, Any]:
    """The evaluation's figures of tables already read."""
    return {
        "synthetic_rows": len(t.synthetic),
        "schema": t.schema.name,
        "seed": seed,
        "privacy": "Computed on this machine from its own rows; nothing was sent and no budget spent. "
        "These figures describe your rows: keep them as private as the rows.",
        "fidelity": fidelity(t, seed),
        "tstr": tstr(t, seed),
        "privacy_risk": privacy_probes(t, seed, attacks),
        "distance_to_closest_record": distance_to_closest_record(t, seed),
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def headline(result: dict[str, Any]) -> list[str]:
    f = result["fidelity"]
    lines = [f"warning: {w}" for w in result.get("share_warnings", [])] + [
        f"quality score {f['quality_score']:.3f} (column shapes {f['column_shapes']['score']:.3f}, "
        f"column pair trends {_fmt(f['column_pair_trends']['score'])})",
        "mean TVD " + ", ".join(
            f"{name} {f['tvd'][k]:.3f}" for k, name in (("two_way", "2-way"), ("three_way", "3-way"))
            if f["tvd"][k] is not None
        ),
    ]
    if result["tstr"] is not None:
        s, r = result["tstr"]["synthetic"], result["tstr"]["real"]
        lines.append(
            f"TSTR ({result['tstr']['label']}): AUC {_fmt(s['auc'])}, accuracy {s['accuracy']:.3f}; "
            f"trained on real rows: AUC {_fmt(r['auc'])}, accuracy {r['accuracy']:.3f}"
        )
    probes = result["privacy_risk"]
    basis = next(iter(probes.values()))["risk_against"]
    lines.append(
        f"privacy risk (anonymeter-style, against the {basis}): "
        + ", ".join(f"{k.replace('_', ' ')} {p['risk']['risk']:.3f} [{p['risk']['low']:.3f}, {p['risk']['high']:.3f}]"
                    for k, p in probes.items())
    )
    dcr = result["distance_to_closest_record"]["real"]
    lines.append(
        f"distance to closest record (secondary, not a privacy measure): {dcr['exact_copies']:.1%} of "
        f"{dcr['rows']:,} real rows have an exact synthetic copy at the schema's codes; median {dcr['median']:.3f}"
    )
    return lines


def write_outputs(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``evaluation.json`` and ``evaluation.html`` in ``out``, each written whole then renamed."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "evaluation.json", out / "evaluation.html"
    texts = json.dumps(result, indent=2, allow_nan=False) + "\n", render_page(result)
    for path, text in zip(paths, texts, strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return paths


def run_evaluate(args: argparse.Namespace) -> int:
    """The CLI entry: bad input is one precise line and exit code 2."""
    try:
        attacks = ATTACKS if args.attacks is None else args.attacks
        if attacks < 1:
            raise EvaluationError(f"--attacks must be at least 1, got {attacks}")
        if args.out.exists() and not args.out.is_dir():
            raise EvaluationError(f"--out {args.out} exists and is not a directory")
        result = evaluate(args.release, args.real, args.schema, args.control, args.seed, attacks)
    except (EvaluationError, SchemaError) as exc:
        print(f"fedsynth evaluate: {exc}", file=sys.stderr)
        return 2
    rows = result["real"]["rows"]
    print(f"evaluation of {args.release} against {args.real} ({rows:,} rows; nothing left this machine)")
    for line in headline(result):
        print(f"  {line}")
    json_path, html_path = write_outputs(result, args.out)
    print(f"wrote {json_path} and {html_path}")
    return 0
