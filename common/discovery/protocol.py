"""Discovery rounds: what one organisation counts, what a round costs, what the schema says.

Mechanism
---------
A discovery is a bounded number of secure noisy sums (phase ``schema``) at public noise: std
``sigma`` (Skellam ``mu = sigma^2 / 2`` at ``t`` survivors) in the text rounds, and
``FIRST_ROUND_NOISE * sigma`` in round 0, which every column takes part in once:

* round 0 counts, for every agreed column, its missing cells and (numeric, integer, datetime)
  its present values on the public grid (``common.discovery.quantiles``) or (text) the first
  symbol of its values (``common.discovery.heavy_hitters``, the empty prefix);
* rounds 1 .. ``max_bytes`` count the next symbol of the text columns' candidate prefixes.

A request names the columns it counts (``discovery.columns``: ``[name, kind]`` pairs, in block
order) and each text column's candidate prefixes (``discovery.prefixes``: hex), so the vector's
layout (:func:`layout`) and its sensitivity (:func:`round_sensitivity`) follow from the request
alone; the guard and the coordinator both read them from there (``common.rounds``).

Sensitivity
-----------
One row adds 1 to at most one cell of each column's block (its missing cell, its grid cell, or
its value's next symbol after a candidate prefix): for ``k`` columns in the request,
L1 = k and L2 = sqrt(k). A column with no candidate prefix left is not in the request.

Privacy argument
----------------
Each round is a Skellam mechanism of that sensitivity, recorded in the federation's ledger and
in every organisation's guard ledger under phase ``schema``; :func:`discovery_event` is the plan
(every round run, every text column in every round), which bounds what a discovery can spend
(a column that runs out of candidates is dropped from later requests and spends less). The
schema (categories, bounds, bins, missing flags) is post-processing of the noisy sums. Column
names and kinds come from each organisation's local configuration, not from its rows: a
disagreement names the column and how many organisations said what (:func:`agreed_columns`),
never a value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from dp_accounting import ComposedDpEvent, DpEvent

from fedsynth.common.accounting import skellam_event
from fedsynth.common.discovery import heavy_hitters as hh
from fedsynth.common.discovery import quantiles as qu
from fedsynth.common.schema.datetimes import parse_iso

TASK = "discovery"
PHASE = "schema"
#: The kinds an organisation's local configuration may give a column.
KINDS = ("categorical", "boolean", "integer", "numeric", "datetime")
GRID_KINDS = ("integer", "numeric", "datetime")
#: Round 0's noise std as a share of the text rounds' (public): the grids, missing counts and
#: first bytes of every column are measured once, so they get more of the budget.
FIRST_ROUND_NOISE = 0.4
#: The category every unlisted value of a discovered text column maps to.
OTHER = "other"
COLUMNS_KEY, PREFIXES_KEY, NA_KEY = "discovery.columns", "discovery.prefixes", "discovery.na_values"


class DiscoveryError(ValueError):
    """Discovery cannot run as asked (e.g. the organisations' columns disagree)."""


@dataclass(frozen=True)
class DiscoverySettings:
    """Public parameters of a discovery, fixed before any round."""

    max_bytes: int = hh.MAX_BYTES
    max_candidates: int = hh.MAX_CANDIDATES
    bins: int = 10
    tail: float = qu.TAIL
    false_positive: float = hh.FALSE_POSITIVE

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_candidates < 1 or self.bins < 1:
            raise DiscoveryError("max_bytes, max_candidates and bins must be at least 1")
        if not 0 < self.tail < 0.5 or not 0 < self.false_positive < 1:
            raise DiscoveryError("tail must be in (0, 0.5) and false_positive in (0, 1)")


def round_sensitivity(request: Mapping[str, Any]) -> tuple[float, float]:
    """(L1, L2) of a discovery round: one cell per counted column."""
    k = len(json.loads(str(request[COLUMNS_KEY])))
    return float(k), math.sqrt(k)


def round_sigma(sigma: float, level: int) -> float:
    """The noise std of round ``level`` when the text rounds' is ``sigma``."""
    return sigma * FIRST_ROUND_NOISE if level == 0 else sigma


def discovery_event(sigma: float, kinds: Mapping[str, str], settings: DiscoverySettings) -> DpEvent:
    """The whole discovery's planned cost when the text rounds' noise std is ``sigma`` (at ``t``
    survivors; round 0's is ``FIRST_ROUND_NOISE * sigma``)."""
    mu = sigma**2 / 2.0
    k, texts = len(kinds), sum(1 for kind in kinds.values() if kind == "categorical")
    events = [skellam_event(round_sigma(sigma, 0) ** 2 / 2.0, float(k), math.sqrt(k))]
    if texts:
        events.append(skellam_event(mu, float(texts), math.sqrt(texts), count=settings.max_bytes))
    return ComposedDpEvent(events)


# ---- requests and their layout
def request(columns: Sequence[tuple[str, str]], prefixes: Mapping[str, Sequence[bytes]], na_values: Sequence[str]) -> dict[str, str]:
    """A discovery round's request (every value public)."""
    return {
        "task": TASK,
        COLUMNS_KEY: json.dumps([list(c) for c in columns]),
        PREFIXES_KEY: json.dumps({name: [p.hex() for p in ps] for name, ps in prefixes.items()}),
        NA_KEY: json.dumps(list(na_values)),
    }


def read_request(req: Mapping[str, Any]) -> tuple[list[tuple[str, str]], dict[str, list[bytes]], tuple[str, ...]]:
    columns = [(str(n), str(k)) for n, k in json.loads(str(req[COLUMNS_KEY]))]
    prefixes = {n: [bytes.fromhex(p) for p in ps] for n, ps in json.loads(str(req[PREFIXES_KEY])).items()}
    return columns, prefixes, tuple(json.loads(str(req.get(NA_KEY, "[]"))))


def first_round(req: Mapping[str, Any]) -> bool:
    """Round 0 counts missing cells and grids; later rounds only text prefixes."""
    _, prefixes, _ = read_request(req)
    return all(len(p) == 0 for ps in prefixes.values() for p in ps)


def layout(req: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(column, kind, cells) of each block of the request's vector, in order."""
    columns, prefixes, _ = read_request(req)
    missing = 1 if first_round(req) else 0
    blocks = []
    for name, kind in columns:
        if kind == "categorical":
            cells = missing + len(prefixes.get(name, [])) * hh.SYMBOLS
        elif kind in GRID_KINDS:
            cells = missing + len(qu.grid_of(kind)) - 1
        else:
            cells = missing
        blocks.append((name, kind, cells))
    return blocks


def dimension(req: Mapping[str, Any]) -> int:
    return sum(cells for _, _, cells in layout(req))


def split(vector: np.ndarray, req: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The summed vector cut into each column's block."""
    blocks = layout(req)
    edges = np.cumsum([cells for _, _, cells in blocks])[:-1]
    return {name: part for (name, _, _), part in zip(blocks, np.split(np.asarray(vector), edges), strict=True)}


# ---- the organisation's side
def missing_cells(series: pd.Series, na_values: Sequence[str]) -> np.ndarray:
    text = series.astype("string")
    return (text.isna() | text.isin(list(na_values)) | (text.fillna("x").str.strip() == "")).to_numpy(dtype=bool)


def numbers(series: pd.Series, kind: str, missing: np.ndarray) -> np.ndarray:
    """Present values as numbers (days since 1970 for datetimes); NaN where unreadable."""
    if kind == "datetime":
        def days(text: Any) -> float:
            value = parse_iso(text)
            return np.nan if value is None else qu.day_number(value)

        values = series.astype("string").map(days, na_action="ignore").to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(series.astype("string"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(missing, np.nan, values)


def local_vector(frame: pd.DataFrame, req: Mapping[str, Any]) -> np.ndarray:
    """One organisation's counts for a discovery round (un-noised; one cell per row and column)."""
    _, prefixes, na_values = read_request(req)
    first = first_round(req)
    parts = []
    for name, kind, _ in layout(req):
        if name not in frame.columns:
            raise DiscoveryError(f"column {name!r} is not in the organisation's table")
        series = frame[name]
        missing = missing_cells(series, na_values)
        head = [np.array([int(missing.sum())], dtype=np.int64)] if first else []
        if kind == "categorical":
            values = hh.as_bytes(None if m else v for v, m in zip(series.astype("string").tolist(), missing, strict=True))
            parts += head + [hh.prefix_counts(values, prefixes.get(name, []))]
        elif kind in GRID_KINDS:
            parts += head + [qu.grid_counts(numbers(series, kind, missing), qu.grid_of(kind))]
        else:
            parts += head
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def schema_kinds(columns: Sequence[Any]) -> dict[str, str]:
    """The discovery kinds of a schema's columns (``common.schema.Column``): ordinal reads as text."""
    return {c.name: "categorical" if c.kind in ("categorical", "ordinal") else c.kind for c in columns}


def local_kinds(frame: pd.DataFrame, na_values: Sequence[str]) -> dict[str, str]:
    """A column configuration drafted from local rows (names and kinds only; a data steward's
    local configuration stands in for it in a deployment). What is sent is the kind alone."""
    kinds = {}
    for name in frame.columns:
        series = frame[name]
        present = series.astype("string")[~missing_cells(series, na_values)]
        kinds[str(name)] = _kind_of(present)
    return kinds


def _kind_of(present: pd.Series) -> str:
    if present.empty:
        return "categorical"
    if present.str.strip().str.lower().isin(("true", "false")).all():
        return "boolean"
    values = pd.to_numeric(present, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isfinite(values).all():
        return "integer" if (values == np.floor(values)).all() else "numeric"
    if all(parse_iso(text) is not None for text in present.unique()):
        return "datetime"
    return "categorical"


# ---- the coordinator's side
def agreed_columns(configs: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The columns every organisation configured with the same kind, in the first one's order.

    Raises :class:`DiscoveryError` naming each column that some organisation lacks or gives
    another kind, with how many organisations said what (counts of organisations, no value).
    """
    problems = []
    names = list(dict.fromkeys(n for config in configs.values() for n in config))
    for name in names:
        said: dict[str, list[str]] = {}
        for org, config in sorted(configs.items()):
            said.setdefault(config.get(name, "(no such column)"), []).append(org)
        if len(said) > 1:
            problems.append(f"column {name!r}: " + "; ".join(
                f"{kind} at {len(orgs)} organisation{'s' if len(orgs) > 1 else ''} ({', '.join(orgs)})"
                for kind, orgs in sorted(said.items(), key=lambda item: -len(item[1]))))
    unknown = sorted({k for config in configs.values() for k in config.values()} - set(KINDS))
    if unknown:
        problems.append(f"unknown kind(s) {', '.join(map(repr, unknown))}; use one of {', '.join(KINDS)}")
    if problems:
        raise DiscoveryError("the organisations' column configurations disagree; nothing was counted:\n  - "
                             + "\n  - ".join(problems))
    return dict(next(iter(configs.values()))) if configs else {}


@dataclass
class ColumnFindings:
    """What the noisy sums said about one column (post-processing only)."""

    kind: str
    missing: float = 0.0  # noisy count of missing cells
    grid: np.ndarray | None = None  # noisy histogram on the public grid
    mu: float = 0.0  # the Skellam parameter of the grid's noise
    categories: dict[str, float] | None = None  # released values and their noisy counts


def schema_dict(name: str, findings: Mapping[str, ColumnFindings], na_values: Sequence[str], sigma: float,
                settings: DiscoverySettings, provenance: Mapping[str, Any],
                given: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The discovered schema as a schema-file mapping.

    ``given``: a job's public schema columns (schema-file mappings, by name). A column the given
    schema allows missing values in keeps ``missing: true``; a number or date column whose noisy
    grid has no block clearing its floor keeps the given bounds and bins (both public; listed in
    the provenance's ``kept_from_given_schema``). Without ``given``, such a column is an error
    that names it.

    A column is ``missing: true`` when its noisy missing count exceeds ``sigma`` (a spare
    code costs little; refusing an organisation's rows costs a lot). Text columns list their
    released values by noisy count and then ``other``, which takes every unlisted value.
    Numbers and dates are clipped to their bounds (``out_of_range: clip``).
    """
    columns, kept = [], []
    given = given or {}
    for column, found in findings.items():
        entry: dict[str, Any] = {"name": column, "kind": found.kind}
        if found.kind == "categorical":
            listed = sorted(found.categories or {}, key=lambda v: (-found.categories[v], v))
            entry["categories"] = [v for v in listed if v != OTHER] + [OTHER]
            entry["other"] = OTHER
        elif found.kind in GRID_KINDS:
            bounds = _bounds_entry(column, found, settings, column in given)
            if bounds is None:
                kept.append(column)
                bounds = {k: given[column][k] for k in ("lower", "upper", "bins") if k in given[column]}
                bounds["out_of_range"] = "clip"
            entry.update(bounds)
        if found.missing > sigma or given.get(column, {}).get("missing", False):
            entry["missing"] = True
        columns.append(entry)
    provenance = {**provenance, **({"kept_from_given_schema": kept} if kept else {})}
    return {"name": name, "label": None, "na_values": list(na_values), "columns": columns, "provenance": provenance}


def _bounds_entry(column: str, found: ColumnFindings, settings: DiscoverySettings, may_fail: bool) -> dict[str, Any] | None:
    cut = qu.bounds_and_edges(found.grid, found.kind, settings.bins, found.mu, settings.false_positive, settings.tail)
    if cut is None and may_fail:
        return None
    if cut is None:
        raise DiscoveryError(
            f"column {column!r} ({found.kind}): no block of the public grid holds enough rows to clear the noise at this epsilon; "
            "give discovery more budget or describe the column by hand")
    lower, upper, edges = cut
    if found.kind == "datetime":
        days = int(upper - lower)
        return {"lower": qu.day_text(lower) + "T00:00:00", "upper": qu.day_text(upper) + "T00:00:00",
                "bins": max(1, min(settings.bins, days)), "out_of_range": "clip"}
    if found.kind == "integer":
        return {"lower": int(lower), "upper": int(upper), "bins": [int(e) for e in edges], "out_of_range": "clip"}
    return {"lower": lower, "upper": upper, "bins": edges, "out_of_range": "clip"}
