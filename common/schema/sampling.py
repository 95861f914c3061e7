"""Rule-abiding synthetic rows: rejection sampling from a released model.

``draw(n, rng)`` is any sampler of code rows (e.g. a released marginal model). Each round
decodes the drawn codes, re-decodes a few times the rows whose codes are fine but whose
values drawn inside a bin break a rule (age bin 10-19 decoded to 12, with "married"), and
keeps the rows that break no rule; the shortfall is drawn again, a little more than needed,
until exactly ``rows`` rows are kept. The result is a sample of the model's distribution
conditioned on the public rules.

Privacy: the rules are public and ``draw`` only reads the released model, so filtering its
samples is post-processing of a differentially private release and costs no privacy budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .columns import SchemaError

if TYPE_CHECKING:
    from .model import Schema

REDECODE_TRIES = 5  # re-decodings of a failing row before its codes are rejected
OVERDRAW = 1.1  # draw this much more than the shortfall divided by the acceptance rate
MIN_ACCEPTANCE = 0.02  # never plan for fewer than 2% of rows accepted (caps one round's size)


def sample_valid(schema: Schema, draw: Callable[[int, np.random.Generator], np.ndarray],
                 rows: int, rng: np.random.Generator, max_tries: int = 50) -> pd.DataFrame:
    """Exactly ``rows`` decoded rows that break none of ``schema.rules``.

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
        codes = np.asarray(draw(math.ceil((rows - have) / acceptance * OVERDRAW), rng))
        valid, broken = _valid_rows(schema, codes, rng)
        kept.append(valid)
        have, drawn, rejected = have + len(valid), drawn + len(codes), rejected + broken
    if have < rows:
        raise SchemaError(_shortfall_message(schema, rows, have, drawn, rejected, max_tries))
    return pd.concat(kept, ignore_index=True).iloc[:rows].reset_index(drop=True)


def _valid_rows(schema: Schema, codes: np.ndarray,
                rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """(decoded rows that break no rule, per rule: how many rejected rows break it)."""
    frame = schema.decode(codes, rng)
    broken = schema.rule_violations(frame).to_numpy(copy=True)
    failing = np.flatnonzero(broken.any(axis=1))
    for _ in range(REDECODE_TRIES):
        if not failing.size:
            break
        retry = schema.decode(codes[failing], rng)
        retry_broken = schema.rule_violations(retry).to_numpy()
        fixed = ~retry_broken.any(axis=1)
        frame = _replace_rows(frame, failing[fixed], retry[fixed])
        broken[failing] = retry_broken
        failing = failing[~fixed]
    keep = np.ones(len(frame), dtype=bool)
    keep[failing] = False
    return frame[keep], broken[failing].sum(axis=0)


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
