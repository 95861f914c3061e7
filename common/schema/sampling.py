"""Rule-abiding synthetic rows from a released model: re-decoding, repair, rejection.

``draw(n, rng)`` is any sampler of code rows (e.g. a released marginal model). Each round
decodes the drawn codes, re-decodes a few times the rows whose codes are fine but whose
values drawn inside a bin break a rule (age bin 10-19 decoded to 12, with "married"), then
repairs the rows that still break a rule: the columns the rule constrains (an implication's
``then`` columns, a hierarchy's child) are copied from a random rule-abiding row of the same
draw in the same repair group (the rule's ``if`` part holds too; the same parent category):
hot-deck imputation inside the synthetic sample, e.g. a child's marital status becomes that
of another synthetic child. Last, a column that is a function of a group column by public
knowledge (``constant_per``: a region's density) takes one value per group, its group's most
common fine cell's middle value among the kept rows. Repair changes only the columns a broken rule names, so the
model's distribution of everything else is kept; rejecting such rows instead would keep
only the corner of the model where every rule happens to hold, which for a model that puts
most mass on impossible cells is far from the data. Rows that still break a rule are
dropped, and the shortfall is drawn again, a little more than needed, until exactly ``rows``
rows are kept.

Privacy: the rules are public and ``draw`` only reads the released model, so filtering its
samples is post-processing of a differentially private release and costs no privacy budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .codec import codes_of, fine_codes_of
from .columns import SchemaError
from .rules import Rule

if TYPE_CHECKING:
    from .model import Schema

REDECODE_TRIES = 5  # re-decodings of a failing row before its codes are repaired
REPAIR_PASSES = 3  # passes over the implications (a repair can break another rule)
OVERDRAW = 1.1  # draw this much more than the shortfall divided by the acceptance rate
MIN_ACCEPTANCE = 0.02  # never plan for fewer than 2% of rows accepted (caps one round's size)


def sample_valid(schema: Schema, draw: Callable[[int, np.random.Generator], np.ndarray],
                 rows: int, rng: np.random.Generator, max_tries: int = 50,
                 fixed: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Exactly ``rows`` decoded rows that break none of ``schema.rules``.

    ``fixed`` (column -> typed value: conditional sampling) sets those columns on every decoded
    row, so a bin decodes to the value asked for; ``draw`` must already draw only their codes.
    ``draw(n, rng)`` may return fewer than ``n`` rows (those it rejects count as drawn).
    Raises :class:`SchemaError` naming the rules that reject the most rows when
    ``max_tries`` rounds of ``draw`` do not yield enough valid rows.
    """
    if rows < 0 or max_tries < 1:
        raise ValueError(f"rows must be >= 0 and max_tries >= 1, got {rows} and {max_tries}")
    kept = [schema.decode(np.empty((0, len(schema.columns)), np.int64), rng)]
    have = drawn = 0
    rejected = np.zeros(len(schema.rules), dtype=np.int64)
    for _ in range(max_tries):
        if have >= rows:
            break
        acceptance = max(have / drawn if drawn else 1.0, MIN_ACCEPTANCE)
        asked = math.ceil((rows - have) / acceptance * OVERDRAW)
        valid, broken = _valid_rows(schema, np.asarray(draw(asked, rng)), rng, fixed or {})
        kept.append(valid)
        have, drawn, rejected = have + len(valid), drawn + asked, rejected + broken
    if have < rows:
        raise SchemaError(_shortfall_message(schema, rows, have, drawn, rejected, max_tries))
    frame = pd.concat(kept, ignore_index=True).iloc[:rows].reset_index(drop=True)
    return constant_per_group(schema, frame, fixed or {})


def constant_per_group(schema: Schema, frame: pd.DataFrame, fixed: Mapping[str, Any]) -> pd.DataFrame:
    """``frame`` with each ``constant_per`` column set to one value per group: on every row of a
    group, the middle value (by order) of the group's rows in the group's most common cell of the
    column's fine grid (its bins without one; missing is a cell too). Post-processing of the rows."""
    columns = [c for c in schema.columns if c.constant_per is not None and c.name not in fixed]
    if not columns or frame.empty:
        return frame
    frame = frame.copy()
    for column in columns:
        series = frame[column.name]
        missing = series.isna().to_numpy()
        values = pd.to_numeric(series).to_numpy(dtype=np.float64, na_value=np.nan)
        cells = (fine_codes_of if column.fine is not None else codes_of)(column, np.nan_to_num(values), missing)
        groups = frame[column.constant_per].astype(object).to_numpy()
        array = series.array.copy()
        for group in pd.unique(groups):
            rows = np.flatnonzero(groups == group)
            found, counts = np.unique(cells[rows], return_counts=True)
            modal = rows[cells[rows] == found[np.argmax(counts)]]
            middle = modal[np.argsort(values[modal], kind="stable")[len(modal) // 2]]
            array[rows] = array[middle]
        frame[column.name] = pd.Series(array, index=series.index, name=column.name)
    return frame


def _valid_rows(schema: Schema, codes: np.ndarray, rng: np.random.Generator,
                fixed: Mapping[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """(decoded rows that break no rule, per rule: how many rejected rows break it)."""
    frame = _decoded(schema, codes, rng, fixed)
    broken = schema.rule_violations(frame).to_numpy(copy=True)
    failing = np.flatnonzero(broken.any(axis=1))
    for _ in range(REDECODE_TRIES):
        if not failing.size:
            break
        retry = _decoded(schema, codes[failing], rng, fixed)
        retry_broken = schema.rule_violations(retry).to_numpy()
        passed = ~retry_broken.any(axis=1)
        frame = _replace_rows(frame, failing[passed], retry[passed])
        broken[failing] = retry_broken
        failing = failing[~passed]
    if failing.size:
        frame = _repaired(schema, frame, rng)
        broken = schema.rule_violations(frame).to_numpy(copy=True)
        failing = np.flatnonzero(broken.any(axis=1))
    keep = np.ones(len(frame), dtype=bool)
    keep[failing] = False
    return frame[keep], broken[failing].sum(axis=0)


def _decoded(schema: Schema, codes: np.ndarray, rng: np.random.Generator,
             fixed: Mapping[str, Any]) -> pd.DataFrame:
    """``schema.decode(codes)`` with each ``fixed`` column set to its value on every row."""
    frame = schema.decode(codes, rng)
    for column, value in fixed.items():
        frame[column] = pd.Series(pd.array([value] * len(frame), dtype=frame[column].dtype), index=frame.index)
    return frame


def _repaired(schema: Schema, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """``frame`` with each broken rule's consequent columns copied from a donor: a row of
    ``frame`` that breaks no rule and is in the broken row's repair group for that rule (the
    rule's ``if`` part holds; for a hierarchy, the same parent category)."""
    for _ in range(REPAIR_PASSES):
        broken = schema.rule_violations(frame).to_numpy()
        clean = ~broken.any(axis=1)
        if clean.all():
            break
        for k, rule in enumerate(schema.rules):
            if broken[:, k].any():
                frame = _copied_from_donors(frame, rule, broken[:, k], clean, rng)
    return frame


def _copied_from_donors(frame: pd.DataFrame, rule: Rule, targets: np.ndarray, clean: np.ndarray,
                        rng: np.random.Generator) -> pd.DataFrame:
    groups = rule.repair_group(frame)
    frame = frame.copy()
    for group in np.unique(groups[targets]):
        rows = np.flatnonzero(targets & (groups == group))
        donors = np.flatnonzero(clean & (groups == group))
        if donors.size:
            picks = rng.choice(donors, size=rows.size)
            for column in rule.consequents:
                frame[column] = _with_values(frame[column], rows, frame[column].iloc[picks])
    return frame


def _replace_rows(frame: pd.DataFrame, positions: np.ndarray, rows: pd.DataFrame) -> pd.DataFrame:
    if not positions.size:
        return frame
    frame = frame.copy()
    for name in frame.columns:
        frame[name] = _with_values(frame[name], positions, rows[name])
    return frame


def _with_values(series: pd.Series, positions: np.ndarray, values: pd.Series) -> pd.Series:
    array = series.array.copy()
    array[positions] = values.array
    return pd.Series(array, index=series.index, name=series.name)


def _shortfall_message(schema: Schema, rows: int, have: int, drawn: int, rejected: np.ndarray,
                       max_tries: int) -> str:
    order = np.argsort(-rejected, kind="stable")
    worst = ", ".join(f"{schema.rules[k].name!r} ({rejected[k] / max(drawn, 1):.0%} of drawn rows: "
                      f"{schema.rules[k].describe()})" for k in order[:3] if rejected[k])
    return (f"sample_valid: only {have} of {rows} rows break no rule after {max_tries} rounds "
            f"({drawn} rows drawn). The rules that reject nearly all rows: {worst or 'none'}. "
            f"The model puts almost no mass where these rules hold: check each rule against "
            f"the public documentation, or fit the model on more of the rules' columns")
