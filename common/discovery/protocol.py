"""Discovery rounds: what one organisation counts, what a round costs, what the schema says.

Mechanism
---------
A discovery is a bounded number of secure noisy sums (phase ``schema``) at public noise
(Skellam ``mu = sigma^2 / 2`` at ``t`` survivors), under one epsilon fixed before any round:

* round 0 (:func:`first_request`) counts, for every agreed column, its missing cells and
  (numeric, integer, datetime) its present values on the public grid
  (``common.discovery.quantiles``) or (text) its values' lengths in bytes
  (``common.discovery.heavy_hitters``), at noise std ``FIRST_ROUND_NOISE * sigma`` where
  ``sigma`` is what the plan (:func:`discovery_event`: ``planned_bytes`` text rounds per text
  column) gives the text rounds;
* text rounds ``0 .. D`` (:func:`request`) count the next symbol after the text columns'
  candidate prefixes, where ``D`` is each column's longest heavy length from round 0. Before each
  round the coordinator sets its noise so that what ran and what the remaining columns may still
  need spend the epsilon (``server.discovery.text_sigma``).

A request names the columns it counts (``discovery.columns``: ``[name, kind]`` pairs, in block
order), each text column's candidate prefixes (``discovery.prefixes``: hex) and, in round 0
only, the public length limit (``discovery.max_bytes``), so the vector's layout (:func:`layout`)
and its sensitivity (:func:`round_sensitivity`) follow from the request alone; the guard and the
coordinator both read them from there (``common.rounds``).

Sensitivity
-----------
One row adds 1 to at most one cell of each column's block (its missing cell, its grid or length
cell, or its value's next symbol after a candidate prefix): for ``k`` columns in the request,
L1 = k and L2 = sqrt(k). A column with no candidate prefix left is not in the request.

Privacy argument
----------------
Each round is a Skellam mechanism of that sensitivity, recorded in the federation's ledger and
in every organisation's guard ledger under phase ``schema`` (each guard judges it: cap, noise
floor, t). The rounds' number and noise are chosen from earlier noisy sums only, under a total
fixed before round 0 (a privacy filter over adaptive RDP composition), and the ledgers compose
exactly the rounds that ran. The schema (categories, bounds, bins, missing flags) is
post-processing of the noisy sums. Column names and kinds come from each organisation's agreed
schema (configuration, not its rows): a disagreement names the column and how many
organisations said what (:func:`agreed_columns`), never a value. A schema discovered from the
agreed one (:func:`discovered_from`) maps every unlisted value to ``other`` and clips every
number, so under it no row is refused for what the discovery did not list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from dp_accounting import ComposedDpEvent, DpEvent

from ..accounting import skellam_event
from . import heavy_hitters as hh
from . import quantiles as qu
from ..schema.columns import MAX_FINE_CELLS
from ..schema.datetimes import parse_iso

TASK = "discovery"
PHASE = "schema"
#: The kinds an organisation's local configuration may give a column.
KINDS = ("categorical", "boolean", "integer", "numeric", "datetime")
GRID_KINDS = ("integer", "numeric", "datetime")
#: Round 0's noise std as a share of the text rounds' (public): the grids, missing counts and
#: first bytes of every column are measured once, so they get more of the budget.
FIRST_ROUND_NOISE = 0.5
#: Text rounds per column the plan counts before round 0 has measured the values' lengths.
PLANNED_BYTES = 16
#: The category every unlisted value of a discovered text column maps to.
OTHER = "other"
COLUMNS_KEY, PREFIXES_KEY, NA_KEY = "discovery.columns", "discovery.prefixes", "discovery.na_values"
#: Present in round 0 only: the public length limit of its text columns' length histograms.
LENGTHS_KEY = "discovery.max_bytes"


class DiscoveryError(ValueError):
    """Discovery cannot run as asked (e.g. the organisations' columns disagree)."""


@dataclass(frozen=True)
class DiscoverySettings:
    """Public parameters of a discovery, fixed before any round."""

    max_bytes: int = hh.MAX_BYTES
    planned_bytes: int = PLANNED_BYTES
    max_candidates: int = hh.MAX_CANDIDATES
    bins: int = 10
    tail: float = qu.TAIL
    false_positive: float = hh.FALSE_POSITIVE

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.planned_bytes, self.max_candidates, self.bins) < 1:
            raise DiscoveryError("max_bytes, planned_bytes, max_candidates and bins must be at least 1")
        if self.max_bytes > hh.MAX_LENGTH_LIMIT:
            raise DiscoveryError(f"max_bytes must be at most {hh.MAX_LENGTH_LIMIT}, got {self.max_bytes}")
        if not 0 < self.tail < 0.5 or not 0 < self.false_positive < 1:
            raise DiscoveryError("tail must be in (0, 0.5) and false_positive in (0, 1)")


def round_sensitivity(request: Mapping[str, Any]) -> tuple[float, float]:
    """(L1, L2) of a discovery round: one cell per counted column."""
    k = len(json.loads(str(request[COLUMNS_KEY])))
    return float(k), math.sqrt(k)


def round_sigma(sigma: float, level: int) -> float:
    """The noise std of round ``level`` when the text rounds' is ``sigma``."""
    return sigma * FIRST_ROUND_NOISE if level == 0 else sigma


def first_round_event(sigma: float, kinds: Mapping[str, str]) -> DpEvent:
    """Round 0's cost: every column once at noise std ``FIRST_ROUND_NOISE * sigma``."""
    k = len(kinds)
    return skellam_event(round_sigma(sigma, 0) ** 2 / 2.0, float(k), math.sqrt(k))


def text_rounds_event(sigma: float, lengths: Mapping[str, int]) -> DpEvent:
    """The text rounds' cost at noise std ``sigma`` when column ``c`` takes part in the rounds of
    prefix lengths ``0 .. lengths[c]`` (round ``L`` counts the columns with ``lengths[c] >= L``)."""
    mu = sigma**2 / 2.0
    levels = [sum(1 for n in lengths.values() if n >= level) for level in range(max(lengths.values(), default=-1) + 1)]
    return ComposedDpEvent([skellam_event(mu, float(k), math.sqrt(k)) for k in levels if k])


def discovery_event(sigma: float, kinds: Mapping[str, str], settings: DiscoverySettings) -> DpEvent:
    """The discovery's planned cost, what the job's plan and the guards' pre-flight see: round 0
    at ``FIRST_ROUND_NOISE * sigma`` and ``planned_bytes`` text rounds per text column at
    ``sigma``. The rounds that run spend exactly this epsilon (``server.discovery``: the text
    rounds' noise is re-planned from round 0's lengths to fill it)."""
    texts = {name: settings.planned_bytes - 1 for name, kind in kinds.items() if kind == "categorical"}
    return ComposedDpEvent([first_round_event(sigma, kinds), text_rounds_event(sigma, texts)])


# ---- requests and their layout
def request(columns: Sequence[tuple[str, str]], prefixes: Mapping[str, Sequence[bytes]], na_values: Sequence[str]) -> dict[str, str]:
    """A text round's request (every value public): the next symbol after each prefix."""
    return {
        "task": TASK,
        COLUMNS_KEY: json.dumps([list(c) for c in columns]),
        PREFIXES_KEY: json.dumps({name: [p.hex() for p in ps] for name, ps in prefixes.items()}),
        NA_KEY: json.dumps(list(na_values)),
    }


def first_request(columns: Sequence[tuple[str, str]], na_values: Sequence[str], max_bytes: int) -> dict[str, str]:
    """Round 0's request: missing cells, grids, and the text values' lengths up to ``max_bytes``."""
    return {**request(columns, {}, na_values), LENGTHS_KEY: str(int(max_bytes))}


def read_request(req: Mapping[str, Any]) -> tuple[list[tuple[str, str]], dict[str, list[bytes]], tuple[str, ...]]:
    columns = [(str(n), str(k)) for n, k in json.loads(str(req[COLUMNS_KEY]))]
    prefixes = {n: [bytes.fromhex(p) for p in ps] for n, ps in json.loads(str(req[PREFIXES_KEY])).items()}
    return columns, prefixes, tuple(json.loads(str(req.get(NA_KEY, "[]"))))


def first_round(req: Mapping[str, Any]) -> bool:
    """Round 0 counts missing cells, grids and lengths; later rounds only text prefixes."""
    return LENGTHS_KEY in req


def length_limit(req: Mapping[str, Any]) -> int:
    """Round 0's public length limit, within ``[1, hh.MAX_LENGTH_LIMIT]`` (else refused)."""
    limit = int(str(req[LENGTHS_KEY]))
    if not 1 <= limit <= hh.MAX_LENGTH_LIMIT:
        raise DiscoveryError(f"{LENGTHS_KEY} must be within 1 .. {hh.MAX_LENGTH_LIMIT}, got {limit}")
    return limit


def layout(req: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(column, kind, cells) of each block of the request's vector, in order."""
    columns, prefixes, _ = read_request(req)
    missing = 1 if first_round(req) else 0
    blocks = []
    for name, kind in columns:
        if kind == "categorical" and missing:
            cells = missing + length_limit(req) + 2
        elif kind == "categorical":
            cells = len(prefixes.get(name, [])) * hh.SYMBOLS
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


def local_vector(frame: pd.DataFrame, req: Mapping[str, Any], note: Callable[[str], None] = lambda _m: None) -> np.ndarray:
    """One organisation's counts for a discovery round (un-noised; one cell per row and column).

    A column the table lacks counts as a column without rows (an all-zero block), said only
    through ``note`` (the organisation's own log): nothing sent depends on it but the counts.
    """
    _, prefixes, na_values = read_request(req)
    first = first_round(req)
    parts = []
    for name, kind, _ in layout(req):
        if name not in frame.columns:
            note(f"column {name!r} is not in the local table: it counts as empty in schema discovery")
            series = pd.Series(dtype="string")
        else:
            series = frame[name]
        missing = missing_cells(series, na_values)
        head = [np.array([int(missing.sum())], dtype=np.int64)] if first else []
        if kind == "categorical":
            values = hh.as_bytes(None if m else v for v, m in zip(series.astype("string").tolist(), missing, strict=True))
            counts = hh.length_counts(values, length_limit(req)) if first else hh.prefix_counts(values, prefixes.get(name, []))
            parts += head + [counts]
        elif kind in GRID_KINDS:
            parts += head + [qu.grid_counts(numbers(series, kind, missing), qu.grid_of(kind))]
        else:
            parts += head
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def schema_kinds(columns: Sequence[Any]) -> dict[str, str]:
    """The discovery kinds of a schema's columns (``common.schema.Column``): ordinal reads as text."""
    return {c.name: "categorical" if c.kind in ("categorical", "ordinal") else c.kind for c in columns}


def discovered_from(agreed: Any, schema: Any) -> bool:
    """Whether ``schema`` (a ``common.schema.Schema``) was discovered from the agreed one: the
    same columns in the same order with the same discovery kinds, the same label and missing-value
    tokens, its provenance says phase ``schema``, no rules, every column that may be missing in
    the agreed schema still may, every text column maps unlisted values to ``other`` and every
    number or date is clipped to its bounds. Under such a schema no row is refused for a value
    the discovery did not list, nor by a rule or a missing flag the coordinator wrote, so a
    coordinator that picks the lists learns of them only through the paid, noisy counts of the
    later rounds."""
    if (schema.provenance or {}).get("phase") != PHASE:
        return False
    if list(schema_kinds(schema.columns).items()) != list(schema_kinds(agreed.columns).items()):
        return False
    if schema.label != agreed.label or tuple(schema.na_values) != tuple(agreed.na_values) or schema.rules:
        return False
    missing_kept = all(c.missing or not a.missing for c, a in zip(schema.columns, agreed.columns))
    return missing_kept and all(_maps_unlisted(c) for c in schema.columns)


def _maps_unlisted(column: Any) -> bool:
    if column.kind in ("categorical", "ordinal"):
        return column.other is not None
    if column.kind in GRID_KINDS:
        return column.out_of_range == "clip"
    return True


def skeleton_schema(name: str, kinds: Mapping[str, str], na_values: Sequence[str]) -> dict[str, Any]:
    """An agreed schema (a schema-file mapping) that says only the columns' names and kinds, for
    an organisation that takes part in a discovery alone (``fedsynth schema discover``): its
    one-value lists and unit bounds are placeholders no job is meant to use."""
    placeholder = {
        "categorical": {"categories": [OTHER], "other": OTHER},
        "boolean": {},
        "integer": {"lower": 0, "upper": 1, "bins": 1, "out_of_range": "clip"},
        "numeric": {"lower": 0.0, "upper": 1.0, "bins": 1, "out_of_range": "clip"},
        "datetime": {"lower": "1970-01-01T00:00:00", "upper": "1970-01-02T00:00:00", "bins": 1, "out_of_range": "clip"},
    }
    columns = [{"name": n, "kind": k, "missing": True, **placeholder[k]} for n, k in kinds.items()]
    return {"name": name, "label": None, "na_values": list(na_values), "columns": columns}


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
    that names it. A number or date column keeps the given schema's fine grid (``fine``: a width
    or public points; the points outside the discovered bounds fall away), which is public
    configuration for decoding, not data, and refuses no row.

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
            fine = _fine_within(given.get(column, {}).get("fine"), entry)
            if fine is not None:
                entry["fine"] = fine
        if found.missing > sigma or given.get(column, {}).get("missing", False):
            entry["missing"] = True
        columns.append(entry)
    provenance = {**provenance, **({"kept_from_given_schema": kept} if kept else {})}
    return {"name": name, "label": None, "na_values": list(na_values), "columns": columns, "provenance": provenance}


def _fine_within(fine: Any, entry: Mapping[str, Any]) -> Any:
    """The given fine grid for the discovered bounds: a width as it is (None if it would make
    more than the schema's ``MAX_FINE_CELLS`` cells); public points (numbers only) strictly
    inside the bounds, or None when none is; None for anything else."""
    if isinstance(fine, str):
        return fine
    if isinstance(fine, (int, float)) and not isinstance(fine, bool):
        cells = (float(entry["upper"]) - float(entry["lower"])) / float(fine)
        return fine if cells <= MAX_FINE_CELLS else None
    if isinstance(fine, (list, tuple)) and entry["kind"] != "datetime":
        inside = [p for p in fine if float(entry["lower"]) < float(p) < float(entry["upper"])]
        return inside or None
    return None


def _bounds_entry(column: str, found: ColumnFindings, settings: DiscoverySettings, may_fail: bool) -> dict[str, Any] | None:
    cut = qu.bounds_and_edges(found.grid, found.kind, settings.bins, found.mu, hh.STRICT_FALSE_POSITIVE, settings.tail)
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
