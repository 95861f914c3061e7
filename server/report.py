"""``fedsynth report RELEASE``: one self-contained HTML page a data steward can sign off.

Everything in the report is computed from the release folder alone: ``privacy.json`` (the
statement), ``ledger.jsonl`` (verified through its hash chain on a private copy, so the
release is never written to), ``measurements.json`` (the noisy marginals the coordinator
saw), ``synthetic.csv`` and, when present, the job's ``schema.yaml`` and ``job.toml``.
All of it is already differentially private, so the report is post-processing: it costs
no privacy and adds no ledger event.

It opens with a one-screen summary (epsilon, delta, rows, the fidelity in a plain sentence, and a
warning for each group whose released share is far from its measured share: small groups
vanishing, ``common.shares``). Then the privacy statement in plain words with the budget spent
event by event (the cumulative epsilon of the ledger's prefixes, composed incrementally by the
same :class:`~fedsynth.common.accounting.CombinedAccountant` that wrote the statement); the
fidelity of the synthetic rows against the noisy measurements, each next to the error the
noise alone would make, with values named (categories, bins), not codes; the job's columns and
library versions; and an appendix with the raw ledger events, the plan's keys and the schema file.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..common import html
from ..common.accounting import CombinedAccountant, Entry, Ledger, LedgerCorrupt
from ..common.generator import Measurement
from ..common.marginals import cells, expected_noise_l1, marginal
from ..common.schema import Column, Schema, SchemaError, load_schema
from ..common.shares import ShareGap, vanishing_groups

REQUIRED = ("privacy.json", "ledger.jsonl", "measurements.json", "synthetic.csv")
SCHEMA_FILES = ("schema.yaml", "schema.yml", "schema.json", "schema.toml")
JOB_FILE = "job.toml"


class ReportError(Exception):
    """A release the report cannot be made from (missing or malformed file)."""


@dataclass(frozen=True)
class LoadedRelease:
    path: Path
    statement: dict
    entries: tuple[Entry, ...]  # this job's verified ledger entries
    measurements: tuple[Measurement, ...]
    synthetic_csv: Path
    schema: Schema | None
    schema_text: str | None
    job_text: str | None


@dataclass(frozen=True)
class MarginalFit:
    """One measured marginal against the synthetic rows' (counts scaled to its noisy total)."""

    clique: tuple[str, ...]
    cells: int
    sigma: float  # noise std per cell
    rows: float  # the measurement's noisy total
    l1: float  # sum |synthetic - measured|, in counts
    noise_l1: float  # expected L1 of the measurement's noise alone

    @property
    def name(self) -> str:
        return " x ".join(self.clique)

    @property
    def tvd(self) -> float:
        return self.l1 / (2.0 * max(self.rows, 1.0))

    @property
    def noise_tvd(self) -> float:
        return self.noise_l1 / (2.0 * max(self.rows, 1.0))


# ---------------------------------------------------------------- load


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not readable JSON ({err})") from err


def accountant_delta(statement: Mapping) -> float:
    """The delta the accountant converted at (the statement's delta less the noise-tail term)."""
    return float(statement.get("delta_accountant", statement["delta"]))


def verified_entries(path: Path, statement: Mapping) -> tuple[Entry, ...]:
    """This job's ledger entries, after verifying the hash chain on a copy (the release stays untouched)."""
    with tempfile.TemporaryDirectory(prefix="fedsynth-report-") as tmp:
        copy = Path(tmp) / "ledger.jsonl"
        shutil.copyfile(path / "ledger.jsonl", copy)
        if (path / "ledger.jsonl.head").exists():
            shutil.copyfile(path / "ledger.jsonl.head", copy.with_name("ledger.jsonl.head"))
        try:
            ledger = Ledger(copy, cap_epsilon=float(statement.get("federation_cap") or 1.0),
                            delta=accountant_delta(statement))
        except LedgerCorrupt as err:
            raise ReportError(f"{path / 'ledger.jsonl'}: {err}") from err
    seqs = {int(e["seq"]) for e in statement["events"]}
    entries = tuple(e for e in ledger.entries if e.seq in seqs)
    if len(entries) != len(seqs):
        raise ReportError(f"{path / 'ledger.jsonl'} holds {len(entries)} of the {len(seqs)} events privacy.json lists")
    return entries


def _schema(path: Path, schema_path: Path | None) -> tuple[Schema | None, str | None]:
    candidates = [schema_path] if schema_path else [path / name for name in SCHEMA_FILES]
    for candidate in candidates:
        if candidate.exists():
            try:
                return load_schema(candidate), candidate.read_text(encoding="utf-8")
            except SchemaError as err:
                raise ReportError(f"{candidate}: {err}") from err
    if schema_path:
        raise ReportError(f"--schema {schema_path}: no such file")
    return None, None


STATEMENT_KEYS = {
    "": ("epsilon", "delta", "events", "plan", "trust", "unit_of_privacy"),
    "plan": ("epsilon_planned",),
    "trust": ("min_honest_survivors_t", "organisations_n", "tolerated_colluding_organisations"),
}


def _check_statement(path: Path, statement: object) -> None:
    if not isinstance(statement, dict):
        raise ReportError(f"{path}: not a fedsynth privacy statement (a JSON object)")
    for part, keys in STATEMENT_KEYS.items():
        section = statement.get(part, {}) if part else statement
        missing = [k for k in keys if not isinstance(section, dict) or k not in section]
        if missing:
            raise ReportError(f"{path}: not a fedsynth privacy statement, {part or 'top level'} lacks {', '.join(missing)}")


def load_release(path: Path, schema_path: Path | None = None) -> LoadedRelease:
    """Read and check every file the report uses; ``ReportError`` names the first one missing or bad."""
    if not path.is_dir():
        raise ReportError(f"{path}: no such release directory")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise ReportError(f"{path} is not a complete release: missing {', '.join(missing)}")
    statement = _read_json(path / "privacy.json")
    _check_statement(path / "privacy.json", statement)
    raw = _read_json(path / "measurements.json")
    try:
        measurements = tuple(
            Measurement(tuple(m["clique"]), np.asarray(m["counts"], dtype=np.float64), float(m["sigma"])) for m in raw
        )
    except (TypeError, KeyError, ValueError) as err:
        raise ReportError(f"{path / 'measurements.json'}: not a list of measurements ({err})") from err
    schema, schema_text = _schema(path, schema_path)
    job = path / JOB_FILE
    return LoadedRelease(
        path, statement, verified_entries(path, statement), measurements, path / "synthetic.csv", schema,
        schema_text, job.read_text(encoding="utf-8") if job.exists() else None,
    )


# ---------------------------------------------------------------- privacy


def cumulative_epsilon(entries: Sequence[Entry], delta: float) -> list[float]:
    """Epsilon at ``delta`` after each entry: the accountant composes incrementally, so every
    prefix costs one more composition and one conversion, not a recomposition."""
    accountant, spent = CombinedAccountant(), []
    for entry in entries:
        spent.append(accountant.compose(entry.dp_event()).epsilon(delta).epsilon)
    return spent


def _organisations(k: int) -> str:
    return f"{k} organisation{'s' if k != 1 else ''}"


def privacy_paragraphs(statement: Mapping) -> list[str]:
    """The privacy statement in plain words; every number comes from ``statement``."""
    eps, delta = float(statement["epsilon"]), float(statement["delta"])
    factor = math.exp(eps)
    trust, plan = statement["trust"], statement["plan"]
    t, n = int(trust["min_honest_survivors_t"]), int(trust["organisations_n"])
    k = int(trust["tolerated_colluding_organisations"])
    planned = float(plan["epsilon_planned"])
    lines = [
        f"This release is ({eps:.3g}, {delta:.3g})-differentially private per record of any organisation: "
        f"the unit of privacy is {statement['unit_of_privacy']}.",
        f"For one person this means: whatever an attacker computes from the release, their odds that the "
        f"person's record is in any organisation's table can move by at most a factor e^{eps:.3g} = {factor:.3g}, "
        f"except with probability at most delta = {delta:.3g}. An attacker who was 50:50 beforehand is at most "
        f"{100 * factor / (1 + factor):.1f}% sure afterwards, however much else they know.",
        f"Who must behave: the coordinator follows the protocol and sees only sums of noised vectors; every "
        f"round needed at least t = {t} of the n = {n} organisations (up to {_organisations(n - t)} may drop "
        f"out of a round; with fewer survivors the round is aborted, not released). "
        + (f"Up to {_organisations(k)} may collude with the coordinator and epsilon stays at most "
           f"the planned {planned:.3g}." if k else
           "No organisation may collude with the coordinator without weakening this statement "
           "(the rounds kept no spare honest share).")
        + " A malicious coordinator, or more colluders, is not covered; each organisation's own guard "
        "accounts what it sent on its own.",
    ]
    if eps < planned * (1 - 1e-6):
        fewest = min((len(s) for s in statement.get("survivors_per_round", {}).values()), default=t)
        who = f"all {n}" if fewest == n else f"at least {fewest}"
        lines.append(
            f"The spend, {eps:.3g}, is below the planned {planned:.3g}: the noise was sized for the worst case "
            f"the job allows, exactly t = {t} organisations surviving every round, each adding 1/t of it. "
            f"Here {who} survived every round, and each survivor's noise counts, "
            "so every round carried more noise than planned."
        )
    phases = statement.get("per_phase", {})
    if len(phases) > 1:
        parts = ", ".join(f"{p} {v['epsilon']:.3g}" for p, v in phases.items())
        total = sum(v["epsilon"] for v in phases.values())
        lines.append(
            f"The phases alone would cost {parts}: together {total:.3g}, more than the total {eps:.3g}. Epsilons "
            "do not add up: the accountant composes the phases' whole privacy-loss distributions "
            f"({statement.get('accountant', 'RDP/PLD')}) and converts to one (epsilon, delta) once at the end; "
            "summing epsilons, each paid at its own delta, is only a loose upper bound."
        )
    if float(statement.get("federation_epsilon", eps)) > eps * (1 + 1e-6):
        lines.append(
            f"The federation's ledger also holds earlier jobs: over all of them, epsilon is "
            f"{statement['federation_epsilon']:.3g} of its cap {statement['federation_cap']:.3g}."
        )
    lines.append(f"Contribution bounding: {statement.get('contribution_bounding', 'not stated')}.")
    return lines


def budget_figure(entries: Sequence[Entry], spent: Sequence[float], statement: Mapping) -> Figure:
    """Cumulative epsilon over the job's ledger events, coloured by phase, with plan and cap."""
    fig = Figure(figsize=(9, 3.6))
    ax, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    phases = list(dict.fromkeys(e.phase for e in entries))
    colours = {p: f"C{i}" for i, p in enumerate(phases)}
    x = np.arange(1, len(entries) + 1)
    ax.step(x, spent, where="post", color="0.6", linewidth=1)
    for phase in phases:
        idx = [i for i, e in enumerate(entries) if e.phase == phase]
        ax.scatter(x[idx], np.asarray(spent)[idx], color=colours[phase], s=14, label=phase, zorder=3)
    ax.axhline(statement["plan"]["epsilon_planned"], color="C3", linestyle="--", linewidth=1, label="planned")
    ax.set_xlabel("ledger event (round) of this job")
    ax.set_ylabel("cumulative epsilon")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    per_phase = statement.get("per_phase", {})
    names = list(per_phase) + ["total"]
    values = [per_phase[p]["epsilon"] for p in per_phase] + [statement["epsilon"]]
    bars.bar(names, values, color=[colours.get(p, "C7") for p in per_phase] + ["0.3"])
    bars.set_title("epsilon alone", fontsize=9)
    bars.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    return fig


def events_rows(entries: Sequence[Entry], spent: Sequence[float]) -> list[list[object]]:
    """The technical appendix: each event's raw parameters and the epsilon spent up to it."""
    rows = []
    for entry, eps in zip(entries, spent, strict=True):
        meta = entry.metadata
        rows.append([
            entry.seq, entry.phase, entry.mechanism, meta.get("round", ""), len(meta.get("survivors", [])),
            meta.get("mu", ""), meta.get("planned_mu", ""), meta.get("dim", ""), eps,
        ])
    return rows


# ---------------------------------------------------------------- fidelity


def marginal_fits(measurements: Sequence[Measurement], codes: np.ndarray, domain: Mapping[str, int]) -> list[MarginalFit]:
    """Each measured marginal against the synthetic rows' marginal, scaled to the measurement's total."""
    fits = []
    columns = list(domain)
    for m in measurements:
        rows = float(m.noisy.sum())
        synthetic = marginal(codes, columns, domain, m.clique) * (rows / max(len(codes), 1))
        l1 = float(np.abs(synthetic - m.noisy).sum())
        fits.append(MarginalFit(m.clique, m.noisy.size, m.sigma, rows, l1, expected_noise_l1(m.sigma, m.clique, domain)))
    return fits


def fidelity_figure(fits: Sequence[MarginalFit]) -> Figure:
    """TVD of every measured marginal next to the TVD the measurement's noise alone would cause."""
    fig = Figure(figsize=(8, 0.6 + 0.22 * len(fits)))
    ax = fig.subplots()
    y = np.arange(len(fits))
    ax.barh(y, [f.tvd for f in fits], color="C0", label="synthetic vs noisy measurement")
    ax.scatter([f.noise_tvd for f in fits], y, color="C3", marker="|", s=120, zorder=3, label="noise alone (expected)")
    ax.set_yticks(y, [f.name for f in fits], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("total variation distance")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def code_labels(schema: Schema, column: str) -> list[str]:
    """Readable names of a column's codes: categories, bins, and 'missing' where allowed."""
    col = schema[column]
    if col.categories is not None:
        labels = list(col.categories)
    elif col.kind == "boolean":
        labels = ["false", "true"]
    else:
        labels = [f"{a:g}–{b:g}" for a, b in zip(col.edges[:-1], col.edges[1:])]
    return labels + ["missing"] * int(col.missing)


#: Values shown per column in the 1-way plots: a column with more shows its largest measured ones.
SHOWN_VALUES = 12


def shown_codes(measured: np.ndarray) -> np.ndarray:
    """The codes a 1-way plot shows: all, or the :data:`SHOWN_VALUES` largest measured, in code order."""
    if measured.size <= SHOWN_VALUES:
        return np.arange(measured.size)
    return np.sort(np.argsort(-measured, kind="stable")[:SHOWN_VALUES])


def one_way_figure(measurements: Sequence[Measurement], codes: np.ndarray, schema: Schema) -> Figure | None:
    """Small multiples: each measured column's share per value, synthetic next to measured (a column
    with many values: its :data:`SHOWN_VALUES` largest measured ones, named)."""
    domain = schema.domain()
    ones = [m for m in measurements if len(m.clique) == 1 and m.clique[0] in domain]
    if not ones:
        return None
    width = 3
    height = math.ceil(len(ones) / width)
    fig = Figure(figsize=(11, 2.4 * height))
    axes = np.atleast_1d(fig.subplots(height, width)).ravel()
    for ax, m in zip(axes, ones):
        column = m.clique[0]
        measured = np.clip(m.noisy, 0, None)
        measured = measured / max(measured.sum(), 1e-12)
        synthetic = marginal(codes, list(domain), domain, m.clique) / max(len(codes), 1)
        shown = shown_codes(measured)
        x = np.arange(shown.size)
        ax.bar(x - 0.2, measured[shown], width=0.4, color="C1", label="measured (noisy)")
        ax.bar(x + 0.2, synthetic[shown], width=0.4, color="C0", label="synthetic")
        labels = code_labels(schema, column)
        more = f" ({shown.size} largest of {len(labels)} values)" if shown.size < len(labels) else ""
        ax.set_title(column + more, fontsize=9)
        ax.set_xticks(x, [labels[k] for k in shown], rotation=45, ha="right", fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
    for ax in axes[len(ones):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- page


def _flatten(prefix: str, value: object) -> list[list[object]]:
    if isinstance(value, Mapping):
        return [row for k, v in value.items() for row in _flatten(f"{prefix}.{k}" if prefix else str(k), v)]
    if value is None:
        return [[prefix, "none"]]
    return [[prefix, json.dumps(value) if isinstance(value, (list, tuple)) else value]]


def privacy_section(release: LoadedRelease, spent: Sequence[float]) -> str:
    statement = release.statement
    recomputed = spent[-1] if spent else 0.0
    check = (
        f"Recomputed here from the verified ledger ({len(release.entries)} events): epsilon {recomputed:.6g}, "
        + ("as privacy.json states." if math.isclose(recomputed, statement["epsilon"], rel_tol=1e-6)
           else f"which DIFFERS from privacy.json's {statement['epsilon']:.6g}.")
    )
    return html.section(
        "Privacy",
        *(html.paragraph(p) for p in privacy_paragraphs(statement)),
        html.paragraph(check),
        html.figure(budget_figure(release.entries, spent, statement),
                    "Budget spent: cumulative epsilon over this job's ledger events, and each phase alone"),
        html.table(["phase", "epsilon alone", "accountant"],
                   [[p, v["epsilon"], v["method"]] for p, v in statement.get("per_phase", {}).items()]
                   + [["whole job", statement["epsilon"], statement.get("accountant", "")]]),
    )


def _check_cells(measurements: Sequence[Measurement], domain: Mapping[str, int], schema: str) -> None:
    """Each measurement's size fits the schema's domain."""
    for m in measurements:
        if m.noisy.size != cells(domain, m.clique):
            raise ReportError(f"measurement {' x '.join(m.clique)} has {m.noisy.size} cells, which schema "
                              f"'{schema}' does not give it: is it the job's schema?")


@dataclass(frozen=True)
class Fidelity:
    """The synthetic rows against the noisy measurements: what the summary and the fidelity section show."""

    schema: Schema
    codes: np.ndarray
    measurements: tuple[Measurement, ...]  # those over the schema's columns
    fits: tuple[MarginalFit, ...]
    gaps: tuple[ShareGap, ...]  # groups whose released share is far from the measured (common.shares)

    def mean_tvd(self) -> float:
        return float(np.mean([f.tvd for f in self.fits])) if self.fits else 0.0

    def within_band(self) -> int:
        """Marginals whose distance is at most twice what the measurement's noise alone would cause."""
        return sum(f.tvd <= 2.0 * f.noise_tvd for f in self.fits)

    def gap_rows(self) -> list[list[object]]:
        return [[g.describe(code_labels(self.schema, g.column)[g.code]), f"{g.measured:.2%}", f"{g.released:.2%}"]
                for g in self.gaps]


def fidelity_of(release: LoadedRelease) -> Fidelity | None:
    """The synthetic rows encoded with the release's schema against its measurements (None without a schema)."""
    schema = release.schema
    if schema is None:
        return None
    try:
        codes = schema.encode(schema.read_csv(release.synthetic_csv))
    except SchemaError as err:
        shown = "; ".join(str(p).splitlines()[0] for p in err.problems[:3])
        more = f" (and {len(err.problems) - 3} more)" if len(err.problems) > 3 else ""
        raise ReportError(f"{release.synthetic_csv} does not conform to schema '{schema.name}': {shown}{more}; "
                          "is it the job's schema?") from err
    domain = schema.domain()
    known = tuple(m for m in release.measurements if set(m.clique) <= set(domain))
    _check_cells(known, domain, schema.name)
    gaps = vanishing_groups(((m.clique, m.noisy, m.sigma) for m in known), codes, domain)
    return Fidelity(schema, codes, known, tuple(marginal_fits(known, codes, domain)), tuple(gaps))


def headline(fidelity: Fidelity) -> str:
    """The fidelity in one plain sentence."""
    mean, n = fidelity.mean_tvd(), len(fidelity.fits)
    how = "closely" if mean < 0.05 else "roughly" if mean < 0.15 else "only loosely"
    return (f"The synthetic rows follow what was measured {how}: over the {n} measured marginals the average "
            f"total variation distance is {mean:.3f} (about {mean:.1%} of the rows would have to change to match), "
            f"and {fidelity.within_band()} of {n} are within twice the error the measurement noise alone would cause.")


def summary_section(release: LoadedRelease, fidelity: Fidelity | None) -> str:
    """One screen: the privacy guarantee, the rows, the fidelity in a sentence, and any group that vanished."""
    statement = release.statement
    eps, delta = float(statement["epsilon"]), float(statement["delta"])
    factor = math.exp(eps)
    organisations = statement.get("organisations", [])
    rows = [
        ["privacy", f"epsilon {eps:.3g}, delta {delta:.3g} per record (planned epsilon "
                    f"{float(statement['plan']['epsilon_planned']):.3g})"],
        ["synthetic rows", html.format_value(statement.get("rows", "unknown"))],
        ["organisations", f"{len(organisations)}: {', '.join(organisations)}"],
    ]
    if fidelity is not None:
        rows.append(["fidelity", f"mean TVD {fidelity.mean_tvd():.3f} over {len(fidelity.fits)} measured marginals; "
                                 f"{fidelity.within_band()} within twice their noise band"])
    parts = [
        html.paragraph(
            f"This release is ({eps:.3g}, {delta:.3g})-differentially private per record: an attacker who was 50:50 "
            f"on whether one person's record was used is at most {100 * factor / (1 + factor):.1f}% sure after "
            "seeing it. The sections below explain the statement, the budget and the fit."),
        html.table(["", ""], rows),
        html.paragraph(headline(fidelity) if fidelity is not None else
                       "Fidelity is not shown: the release holds no schema file (pass the job's schema with --schema)."),
    ]
    if fidelity is not None and fidelity.gaps:
        parts += [
            html.paragraph(f"Warning: {len(fidelity.gaps)} group(s) have a share in the release far from their "
                           "measured share, beyond what the noise and sampling explain; analyses of these groups "
                           "should not use this release as it is:"),
            html.table(["group", "measured share", "released share"], fidelity.gap_rows()),
        ]
    return html.section("Summary", *parts)


def fidelity_section(release: LoadedRelease, fidelity: Fidelity | None) -> str:
    intro = html.paragraph(
        "Fidelity against what the coordinator measured: each noisy marginal (already private, so this is "
        "post-processing) next to the same marginal of the synthetic rows, scaled to the measurement's total. "
        "The noise band is the error the measurement's own noise would cause even for the true table "
        "(expected L1 = sqrt(2/pi) x sigma x cells): errors near it are as good as the measurements allow."
    )
    if fidelity is None:
        return html.section("Fidelity", intro, html.paragraph(
            "This release holds no schema file (schema.yaml), which the synthetic rows must be encoded with to "
            "compare them to the measurements; pass the job's schema with --schema to add this section."))
    fits = fidelity.fits
    parts = [intro, html.figure(fidelity_figure(fits), "Per-marginal total variation distance, synthetic vs noisy "
                                "measurement; red marks the noise alone")]
    parts.append(html.table(
        ["marginal", "cells", "noise std per cell", "L1 (counts)", "noise band L1", "TVD", "noise band TVD"],
        [[f.name, f.cells, f.sigma, f.l1, f.noise_l1, f.tvd, f.noise_tvd] for f in fits],
    ))
    ones = one_way_figure(fidelity.measurements, fidelity.codes, fidelity.schema)
    if ones is not None:
        parts.append(html.figure(ones, "1-way distributions: synthetic rows against the noisy measured marginals"))
    return html.section("Fidelity", *parts)


def values_text(column: Column) -> str:
    """A column's values in a few words: its categories, or its range and bins."""
    if column.categories is not None:
        shown = ", ".join(column.categories[:8])
        text = shown + (f", ... ({len(column.categories)} in all)" if len(column.categories) > 8 else "")
    elif column.kind == "boolean":
        text = "true, false"
    else:
        text = f"{column.lower} to {column.upper} in {column.n_values} bins"
        if column.codes is not None:
            text += f" ({len(column.codes)} listed codes)"
    return text + ("; or missing" if column.missing else "")


def job_section(release: LoadedRelease) -> str:
    statement = release.statement
    parts = [
        html.paragraph(f"{html.format_value(statement.get('rows', 'An unknown number of'))} synthetic rows from "
                       f"{len(statement.get('organisations', []))} organisations: "
                       f"{', '.join(statement.get('organisations', []))}."),
    ]
    if release.schema is not None:
        label = release.schema.label
        parts.append(html.table(
            ["column", "kind", "values"],
            [[c.name + (" (label)" if c.name == label else ""), c.kind, values_text(c)] for c in release.schema.columns],
        ))
    parts.append(html.table(["library", "version"], list(statement.get("libraries", {}).items())))
    parts.append(html.paragraph(f"Secure aggregation: {statement['trust'].get('secure_aggregation', 'not stated')}."))
    parts.append(html.paragraph("The job's plan, its job.toml and its schema file are in the appendix."))
    return html.section("Job, schema and versions", *parts)


def appendix_section(release: LoadedRelease, spent: Sequence[float]) -> str:
    parts = [
        html.paragraph("Raw parameters of every noisy round: mu is the Skellam noise parameter of the aggregate "
                       "(variance mu per cell and side), planned mu the one at exactly t survivors."),
        html.table(["seq", "phase", "mechanism", "round", "survivors", "mu", "planned mu", "cells", "epsilon so far"],
                   events_rows(release.entries, spent)),
        html.paragraph(f"Delta: {release.statement['delta']:.3g} = accountant "
                       f"{accountant_delta(release.statement):.3g} + noise-tail check "
                       f"{release.statement.get('delta_noise_tail', 0.0):.3g}."),
        html.paragraph("The job's plan (privacy.json's plan):"),
        html.table(["plan setting", "value"], _flatten("", release.statement["plan"])),
    ]
    if release.job_text is not None:
        parts += [html.paragraph("The job file (job.toml):"), html.preformatted(release.job_text)]
    if release.schema_text is not None:
        parts += [html.paragraph("The schema file:"), html.preformatted(release.schema_text)]
    return html.section("Technical appendix: ledger events, plan and schema", *parts)


def evaluation_section(statement: Mapping) -> str | None:
    """The federated evaluation's published figures (``privacy.json``'s ``evaluation``), if the job ran one."""
    evaluation = statement.get("evaluation")
    if not evaluation:
        return None
    rows = [[" x ".join(m["clique"]), m["tvd"], m["noise_band"]] for m in evaluation["marginals"]]
    return html.section(
        "Federated evaluation",
        html.paragraph(
            f"Paid for in the job's budget (phase 'evaluation' in the ledger): the union's noisy marginals "
            f"({html.format_value(evaluation['noisy_rows'])} noisy rows, noise std "
            f"{html.format_value(evaluation['sigma_per_cell'])} per cell) against the released rows. "
            f"{evaluation['what']}. A band as large as the distance means the figure says little."
        ),
        html.table(["marginal", "TVD (synthetic vs union, noisy)", "noise band"], rows),
    )


def render(release: LoadedRelease) -> str:
    """The report as one HTML document."""
    title = f"fedsynth release report: {release.path.name}"
    spent = cumulative_epsilon(release.entries, accountant_delta(release.statement))
    fidelity = fidelity_of(release)
    sections = [summary_section(release, fidelity), privacy_section(release, spent), fidelity_section(release, fidelity),
                evaluation_section(release.statement), job_section(release), appendix_section(release, spent)]
    return html.page(title, [section for section in sections if section is not None])


def write_report(path: Path, out: Path | None = None, schema_path: Path | None = None) -> Path:
    """Render the report of the release at ``path`` and write it atomically to ``out``."""
    out = out or path / "report.html"
    text = render(load_release(path, schema_path))
    partial = out.with_name(out.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)
    return out


def run_report(args: argparse.Namespace) -> int:
    try:
        out = write_report(args.release, args.out, args.schema)
    except (ReportError, OSError) as err:
        print(f"fedsynth report: {err}", file=sys.stderr)
        return 2
    print(f"report written to {out}")
    return 0
