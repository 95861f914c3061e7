"""The :class:`Schema`: ordered columns, missing-value tokens and structural rules.

It checks itself when built (names, label, rules against columns) and is the one entry point
for what the package does with a table: validate, conform, encode, decode, check rules,
sample rule-abiding rows. It travels as JSON inside Flower messages (:meth:`Schema.dumps`,
:meth:`Schema.from_dict`), so every field round-trips through plain dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .codec import codes_of, decode_frame, fine_codes_of, typed_values
from .columns import Column, SchemaError, as_tuple, bullets, column_from_dict, unknown_key_problems
from .io import dump_text, read_mapping, read_text_table, writable_format
from .rules import Rule, rule_from_dict, rule_problems, rule_violations
from .sampling import sample_valid
from .validate import ValidationReport, clipped, conforming_rows, inspect, raise_if_errors

SCHEMA_KEYS = ("name", "label", "na_values", "draft", "columns", "rules", "provenance")


@dataclass(frozen=True)
class Schema:
    """The public schema: an ordered tuple of columns, how missing values are written, and
    the structural rules every row obeys."""

    name: str
    columns: tuple[Column, ...]
    label: str | None = None
    na_values: tuple[str, ...] = ()
    draft: bool = False
    rules: tuple[Rule, ...] = ()
    provenance: Mapping[str, Any] | None = None  # how a discovered schema was found (phase, epsilon, ...)

    def __post_init__(self) -> None:
        for key in ("columns", "na_values", "rules"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        problems = _schema_problems(self)
        if problems:
            raise SchemaError(bullets(f"schema {self.name!r} is invalid:", problems), problems)

    # ---- access
    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def __getitem__(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"schema {self.name!r} has no column {name!r}; "
                       f"columns are {self.column_names}")

    def domain(self) -> dict[str, int]:
        """Column name -> number of codes (one extra code for "missing" where allowed)."""
        return {column.name: column.n_codes for column in self.columns}

    @property
    def fine_columns(self) -> tuple[Column, ...]:
        """The columns with a public fine grid (``fine``), in schema order."""
        return tuple(column for column in self.columns if column.fine is not None)

    def fine_domain(self) -> dict[str, int]:
        """Each fine grid's name (``AGEP:fine``) -> its number of codes (missing included)."""
        return {column.fine_name: column.n_fine_codes for column in self.fine_columns}

    def measured_domain(self) -> dict[str, int]:
        """What the generator can count: the columns' codes, then each fine grid's."""
        return {**self.domain(), **self.fine_domain()}

    # ---- dict / file IO
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "schema") -> Schema:
        """Build and check a schema; every problem found is listed in one SchemaError."""
        return _schema_from_dict(data, source)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "label": self.label,
                               "na_values": list(self.na_values)}
        if self.draft:
            out["draft"] = True
        out["columns"] = [column.to_dict() for column in self.columns]
        if self.rules:
            out["rules"] = [rule.to_dict() for rule in self.rules]
        if self.provenance is not None:
            out["provenance"] = dict(self.provenance)
        return out

    def dumps(self, fmt: str = "yaml") -> str:
        """The schema as YAML or JSON text."""
        return dump_text(self.to_dict(), fmt)

    def save(self, path: str | Path) -> None:
        """Write to ``.yaml``/``.yml`` or ``.json`` (TOML is read-only: no writer in stdlib)."""
        path = Path(path)
        path.write_text(self.dumps(writable_format(path)), encoding="utf-8")

    def read_csv(self, path: str | Path) -> pd.DataFrame:
        """Read a data file with every cell as text, so that type checking is ours.

        ``na_values`` become missing; pandas' default NA tokens ("NA", "null", "") do not.
        """
        return read_text_table(path, self.na_values)

    # ---- data
    def validate(self, df: pd.DataFrame, strict: bool = False) -> ValidationReport:
        """Check a table against the columns and the rules and report every violation.

        A broken rule is an error with its count of rows and up to 5 example rows. The
        report holds example rows and values from the table: it is for the data owner's
        eyes and must never be sent to the coordinator.
        ``strict=True`` raises :class:`SchemaError` (carrying the report) unless ``ok``.
        """
        report, _ = inspect(self, df)
        if strict:
            raise_if_errors(report)
        return report

    def conforming_rows(self, df: pd.DataFrame) -> np.ndarray:
        """A boolean per row: True where the row breaks no column and no rule (none when a
        column is missing, unknown or duplicated). A row's answer depends on that row alone."""
        return conforming_rows(self, df)

    def conform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Validate strictly and return the typed table in schema column order.

        Dtypes depend on the schema only: categorical/ordinal -> pandas Categorical over the
        schema's categories (ordered for ordinal); boolean -> bool (``boolean`` if missing
        is allowed); numeric -> float64 (NaN = missing); integer -> int64 (``Int64`` if
        missing is allowed). Declared clipping is applied.
        """
        report, parsed = inspect(self, df)
        raise_if_errors(report)
        data = {c.name: typed_values(c, *clipped(c, parsed[c.name])) for c in self.columns}
        return pd.DataFrame(data, index=df.index)

    def encode(self, df: pd.DataFrame, fine: bool = False) -> np.ndarray:
        """Validate strictly, then map each cell to its code: an int64 array (rows x columns).

        Codes: category index, bool 0/1, bin index; the missing code is the last one. With
        ``fine``, each fine grid's codes follow (the columns of :meth:`measured_domain`).
        """
        report, parsed = inspect(self, df)
        raise_if_errors(report)
        codes = [codes_of(c, *clipped(c, parsed[c.name])) for c in self.columns]
        if fine:
            codes += [fine_codes_of(c, *clipped(c, parsed[c.name])) for c in self.fine_columns]
        return np.column_stack(codes) if codes else np.empty((len(df), 0), np.int64)

    def decode(self, codes: np.ndarray, rng: np.random.Generator | int) -> pd.DataFrame:
        """Turn codes back into a typed table (same dtypes as :meth:`conform`).

        Bins become values by the column's ``decode`` rule (among the listed ``codes`` of a
        code column, consistent with a hierarchy parent where possible); the missing code
        becomes NaN/NA. ``codes`` has the schema's columns, or those of :meth:`measured_domain`
        (then each fine grid's code places its value inside the bin). ``rng`` is a numpy
        Generator or a seed. Rules are not enforced here: see :meth:`sample_valid`.
        """
        codes = np.asarray(codes)
        n = len(self.columns)
        with_fine = codes.ndim == 2 and codes.shape[1] == n + len(self.fine_columns) > n
        fine = codes[:, n:] if with_fine else None
        return decode_frame(self.columns, self.rules, codes[:, :n] if with_fine else codes,
                            np.random.default_rng(rng), fine)

    def rule_violations(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Booleans, rows x rule names, on a decoded frame: True = the row breaks the rule."""
        return rule_violations(self.rules, frame)

    def sample_valid(self, draw: Callable[[int, np.random.Generator], np.ndarray], rows: int,
                     rng: np.random.Generator, max_tries: int = 50,
                     fixed: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Exactly ``rows`` decoded rows that break no rule, drawn as codes by ``draw(n, rng)``.

        Conditions the model's distribution on the public rules (post-processing: no privacy
        cost); ``fixed`` columns take their given value on every row (conditional sampling).
        See :mod:`fedsynth.common.schema.sampling`.
        """
        return sample_valid(self, draw, rows, rng, max_tries, fixed)


def load_schema(path: str | Path) -> Schema:
    """Read a schema from ``.yaml``/``.yml``, ``.json`` or ``.toml`` and check it."""
    path = Path(path)
    return Schema.from_dict(read_mapping(path), source=str(path))


# --------------------------------------------------------------------------- checks at load


def _schema_from_dict(data: Mapping[str, Any], source: str) -> Schema:
    name = data.get("name")
    column_problems: list[str] = []
    columns = _parsed_list(data, "columns", column_from_dict, column_problems, required=True)
    problems = unknown_key_problems("the schema", data, SCHEMA_KEYS) + column_problems
    rules = _parsed_list(data, "rules", rule_from_dict, problems, required=False)
    if not column_problems:  # rules that did parse are still checked against the columns
        try:
            schema = Schema(name=name, columns=tuple(columns), label=data.get("label"),
                            na_values=as_tuple(data.get("na_values", ())),
                            draft=data.get("draft", False), rules=tuple(rules),
                            provenance=data.get("provenance"))
            if not problems:
                return schema
        except SchemaError as exc:
            problems.extend(exc.problems)
    raise SchemaError(bullets(f"{source}: schema {name!r} is invalid; fix the schema file:",
                              problems), problems)


def _parsed_list(data: Mapping[str, Any], key: str, parse: Callable[[Any, int], Any],
                 problems: list[str], required: bool) -> list[Any]:
    """Parse each entry of the list ``data[key]``, adding every problem to ``problems``."""
    entries = data.get(key, None if required else [])
    if not isinstance(entries, list) or (required and not entries):
        article = "a non-empty" if required else "a"
        problems.append(f"{key!r} must be {article} list of {key[:-1]} mappings")
        return []
    parsed = []
    for position, entry in enumerate(entries):
        try:
            parsed.append(parse(entry, position))
        except SchemaError as exc:
            problems.extend(exc.problems)
    return parsed


def _schema_problems(schema: Schema) -> list[str]:
    problems = []
    if not isinstance(schema.name, str) or not schema.name:
        problems.append(f"'name' must be a non-empty text, got {schema.name!r}")
    problems += _na_values_problems(schema.na_values)
    names = [column.name for column in schema.columns]
    for name in sorted({n for n in names if names.count(n) > 1}):
        positions = [i + 1 for i, n in enumerate(names) if n == name]
        problems.append(f"column {name!r} is defined {len(positions)} times (columns "
                        f"#{', #'.join(map(str, positions))}); column names must be unique")
    for column in schema.columns:
        if column.fine is not None and column.fine_name in names:
            problems.append(f"column {column.fine_name!r} has the name of column {column.name!r}'s fine grid; "
                            f"rename it")
    if schema.label is not None and schema.label not in names:
        problems.append(f"label {schema.label!r} is not a column; set label to one of "
                        f"{names} or to null")
    if schema.provenance is not None and not isinstance(schema.provenance, Mapping):
        problems.append(f"'provenance' must be a mapping (how the schema was discovered), got {schema.provenance!r}")
    if not isinstance(schema.draft, bool):
        problems.append(f"'draft' must be true or false, got {schema.draft!r}")
    for column in schema.columns:
        for category in set(column.categories or ()) & set(schema.na_values or ()):
            problems.append(f"column {column.name!r}: category {category!r} is also in "
                            f"na_values, so it would always be read as missing; remove it "
                            f"from one of the two")
    return problems + _constant_problems(schema) + rule_problems(schema.rules, schema.columns)


def _constant_problems(schema: Schema) -> list[str]:
    """A ``constant_per`` column names another, categorical column, and no rule constrains it
    (sampling sets its value per group after the rules are kept)."""
    problems = []
    kinds = {column.name: column.kind for column in schema.columns}
    ruled = {name for rule in schema.rules for name in rule.columns}
    for column in schema.columns:
        group = column.constant_per
        if group is None:
            continue
        if kinds.get(group) not in ("categorical", "ordinal") or group == column.name:
            problems.append(f"column {column.name!r}: constant_per {group!r} must name another categorical or "
                            f"ordinal column of the schema")
        if column.name in ruled:
            problems.append(f"column {column.name!r}: a rule names it, so it cannot also be constant_per "
                            f"{group!r}; remove one of the two")
    return problems


def _na_values_problems(na_values: Any) -> list[str]:
    if not isinstance(na_values, tuple) or not all(isinstance(v, str) for v in na_values):
        return [f"'na_values' must be a list of text tokens such as [\"?\"] or [\"N\"], "
                f"got {na_values!r}"]
    return []
