"""Validation: check a table against the schema and its rules, and say how to fix each problem.

Cells are parsed as text against each column (categories exactly, booleans and numbers by
the rules in the package docstring); then every structural rule is checked on the typed
rows. Real data that breaks a public rule is an error: either the rule (written from public
documentation) is wrong or too strong, or the data is. The report holds example rows and
values from the table: it is for the data owner's eyes and must never leave the organisation.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .codec import typed_values
from .columns import CATEGORY_KINDS, NUMBER_KINDS, Column, SchemaError
from .datetimes import texts_to_units
from .rules import Rule, rule_violations

if TYPE_CHECKING:
    from .model import Schema

TRUE_TOKENS = ("true", "1", "yes")
FALSE_TOKENS = ("false", "0", "no")
MAX_EXAMPLES = 5
#: Problems of the table as a whole rather than of some of its rows.
TABLE_PROBLEMS = ("duplicate_column", "missing_column", "unknown_column")


@dataclass(frozen=True)
class Violation:
    """One kind of problem in one column (or one broken rule), with a count and examples.

    ``rows`` are 0-based positions in the table (not index labels, not file lines);
    ``values`` are the raw cells at those rows. For a broken rule, ``rule`` is its name,
    ``column`` lists the rule's columns and each value shows them all for one row.
    """

    column: str
    problem: str
    count: int
    message: str
    hint: str
    rows: tuple[int, ...] = ()
    values: tuple[str, ...] = ()
    severity: str = "error"
    rule: str | None = None

    def __str__(self) -> str:
        where = f"; rows {', '.join(map(str, self.rows))}" if self.rows else ""
        more = " ..." if self.count > len(self.rows) and self.rows else ""
        shown = f"; values {', '.join(self.values)}" if self.values else ""
        subject = (f"rule {self.rule!r} (columns {self.column})" if self.rule is not None
                   else f"column {self.column!r}")
        return (f"[{self.severity}] {subject}, {self.problem}: {self.message}"
                f"{where}{more}{shown}\n      -> {self.hint}")


@dataclass(frozen=True)
class ValidationReport:
    """Every violation found in one table. ``ok`` is true when there are no errors."""

    schema_name: str
    n_rows: int
    violations: tuple[Violation, ...]

    @property
    def errors(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.severity == "error")

    @property
    def infos(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.severity == "info")

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        if self.ok:
            head = f"The data conforms to schema {self.schema_name!r} ({self.n_rows} rows)."
        else:
            head = (f"The data does NOT conform to schema {self.schema_name!r}: "
                    f"{len(self.errors)} problem(s) in {self.n_rows} rows. Nothing was "
                    f"changed; fix each problem below and validate again.")
        if not self.violations:
            return head
        note = ("Row numbers are 0-based positions in the table (for a CSV file with a header "
                "line, file line = row + 2).")
        return "\n".join([head, note, *(f"  {violation}" for violation in self.violations)])


@dataclass(frozen=True)
class _Parsed:
    """A column read against its schema.

    ``values``: category codes (-1 where none), bools, or float64 numbers (NaN where none).
    """

    values: np.ndarray
    missing: np.ndarray
    wrong: np.ndarray
    outside: np.ndarray


def inspect(schema: Schema, df: pd.DataFrame) -> tuple[ValidationReport, dict[str, _Parsed]]:
    """Parse every column and check it and every rule; (report, parsed columns by name)."""
    violations = _duplicate_column_violations(df)
    parsed = {}
    for column in schema.columns:
        if column.name not in df.columns:
            violations.append(_missing_column_violation(column.name, df.columns))
            continue
        series = df[column.name]
        if isinstance(series, pd.DataFrame):  # duplicated name: already reported
            series = series.iloc[:, 0]
        parsed[column.name] = _parse(column, series, schema.na_values)
        violations += _value_violations(column, series, parsed[column.name])
    violations += [_unknown_column_violation(name, schema.name)
                   for name in df.columns if name not in schema.column_names]
    violations += _rule_violations(schema, df, parsed)
    return ValidationReport(schema.name, len(df), tuple(violations)), parsed


def raise_if_errors(report: ValidationReport) -> None:
    if not report.ok:
        raise SchemaError(str(report), [str(v) for v in report.errors], report)


def _duplicate_column_violations(df: pd.DataFrame) -> list[Violation]:
    duplicated = df.columns[df.columns.duplicated()].unique()
    return [Violation(str(name), "duplicate_column", int((df.columns == name).sum()),
                      "the column appears more than once in the data",
                      "keep one column of that name (or rename the others)")
            for name in duplicated]


def _missing_column_violation(name: str, present: pd.Index) -> Violation:
    guess = difflib.get_close_matches(name, [str(c) for c in present], n=1)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    return Violation(name, "missing_column", 1, "the schema has this column but the data does not",
                     f"{hint}add the column to the data, named exactly as in the schema "
                     f"(names are case-sensitive)")


def _unknown_column_violation(name: Any, schema_name: str) -> Violation:
    return Violation(str(name), "unknown_column", 1,
                     f"the data has this column but schema {schema_name!r} does not",
                     "drop the column from the data, or add it to the schema if all parties "
                     "agree to share it")


def _parse(column: Column, series: pd.Series, na_values: tuple[str, ...]) -> _Parsed:
    if column.kind in CATEGORY_KINDS:
        return _parse_categories(column, series, na_values)
    if column.kind == "boolean":
        return _parse_booleans(series, na_values)
    if column.kind == "datetime":
        return _parse_datetimes(column, series, na_values)
    return _parse_numbers(column, series, na_values)


def as_text(series: pd.Series) -> pd.Series:
    """Cells as text with missing cells kept missing (ints become "1", floats "1.0")."""
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype):
        return series
    if isinstance(dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(dtype.categories):
        return series
    return series.astype(str)


def missing_mask(text: pd.Series, na_values: tuple[str, ...]) -> np.ndarray:
    """Null cells, cells equal to one of ``na_values``, and blank cells."""
    missing = text.isna().to_numpy()
    if na_values:
        missing = missing | text.isin(na_values).to_numpy()
    return missing | is_blank(text.fillna("x")).to_numpy()


def is_blank(texts: pd.Series | pd.Index) -> Any:
    """Cells that are empty or only spaces: missing by default (see the package docstring)."""
    return texts.astype(str).str.strip() == ""


@dataclass(frozen=True)
class _Cells:
    """A column as its distinct texts plus, per cell, the position of its text.

    Parsing the few distinct texts and indexing back is ~10x faster than parsing every
    cell. Null cells point one past the end, where each lookup appends its null answer.
    """

    texts: pd.Index
    positions: np.ndarray
    missing: np.ndarray  # per distinct text, plus True for null cells

    def expand(self, per_text: np.ndarray, for_null: Any) -> np.ndarray:
        return np.append(per_text, for_null)[self.positions]


def _cells(series: pd.Series, na_values: tuple[str, ...], blank_is_missing: bool = True) -> _Cells:
    positions, distinct = pd.factorize(series, use_na_sentinel=True)
    texts = pd.Index(distinct).astype(str)  # ints become "1", floats "1.0"
    positions = np.where(positions < 0, len(texts), positions)
    missing = texts.isin(na_values)
    if blank_is_missing:
        missing = missing | np.asarray(is_blank(texts), dtype=bool)
    return _Cells(texts, positions, np.append(missing, True))


def _parse_categories(column: Column, series: pd.Series, na_values: tuple[str, ...]) -> _Parsed:
    cells = _cells(series, na_values, blank_is_missing="" not in column.categories)
    missing = cells.missing[cells.positions]
    codes = cells.expand(pd.Index(column.categories).get_indexer(cells.texts), -1)
    unlisted = (codes < 0) & ~missing
    if column.other is None:
        return _Parsed(codes.astype(np.int64), missing, unlisted, np.zeros(len(codes), bool))
    codes = np.where(unlisted, column.categories.index(column.other), codes)
    return _Parsed(codes.astype(np.int64), missing, np.zeros(len(codes), bool), unlisted)


def _parse_booleans(series: pd.Series, na_values: tuple[str, ...]) -> _Parsed:
    if pd.api.types.is_bool_dtype(series.dtype):
        missing = series.isna().to_numpy()
        values = series.to_numpy(dtype=bool, na_value=False)
        return _Parsed(values, missing, np.zeros(len(values), bool), np.zeros(len(values), bool))
    cells = _cells(series, na_values)
    lowered = cells.texts.str.strip().str.lower()
    missing = cells.missing[cells.positions]
    values = cells.expand(lowered.isin(TRUE_TOKENS), False)
    known = cells.expand(lowered.isin(TRUE_TOKENS + FALSE_TOKENS), False)
    return _Parsed(values, missing, ~(known | missing), np.zeros(len(values), bool))


def _parse_numbers(column: Column, series: pd.Series, na_values: tuple[str, ...]) -> _Parsed:
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        missing = series.isna().to_numpy()
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        cells = _cells(series, na_values)
        numbers = pd.to_numeric(pd.Series(cells.texts), errors="coerce")
        numbers = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = cells.missing[cells.positions]
        values = np.where(missing, np.nan, cells.expand(numbers, np.nan))
    finite = np.isfinite(values)
    wrong = ~missing & ~finite
    if column.kind == "integer":
        wrong |= finite & (values != np.floor(np.where(finite, values, 0)))
    return _checked_numbers(column, values, missing, wrong)


def _parse_datetimes(column: Column, series: pd.Series, na_values: tuple[str, ...]) -> _Parsed:
    """ISO dates/datetimes as whole days or seconds since 1970 (``.datetimes``)."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = series.map(lambda v: v.isoformat() if pd.notna(v) else None)
    cells = _cells(series, na_values)
    missing = cells.missing[cells.positions]
    values = np.where(missing, np.nan, cells.expand(texts_to_units(cells.texts, column.unit), np.nan))
    return _checked_numbers(column, values, missing, ~missing & ~np.isfinite(values))


def _checked_numbers(column: Column, values: np.ndarray, missing: np.ndarray, wrong: np.ndarray) -> _Parsed:
    low, high = column.bounds
    valid = np.isfinite(values) & ~wrong
    outside = valid & ((values < low) | (values > high))
    return _Parsed(values, missing, wrong, outside)


def _value_violations(column: Column, series: pd.Series, parsed: _Parsed) -> list[Violation]:
    found = []
    if not column.missing and parsed.missing.any():
        found.append(_violation(
            column, "missing_value", parsed.missing, series,
            "missing value(s), but the schema does not allow missing values here",
            "fill them in, drop those rows, or set missing: true for this column in the schema",
            show_values=False))
    if parsed.wrong.any():
        found.append(_wrong_value_violation(column, series, parsed.wrong))
    if parsed.outside.any():
        found.append(_outside_violation(column, series, parsed.outside))
    if column.codes is not None:
        unlisted = _unlisted(column, parsed)
        if unlisted.any():
            found.append(_violation(column, "unknown_code", unlisted, series,
                                    "value(s) not in the schema's list of codes",
                                    "fix the values in your data, or add the code to the column's "
                                    "codes if the public code book lists it"))
    return found


def _unlisted(column: Column, parsed: _Parsed) -> np.ndarray:
    """Readable, in-range cells of a code column that are not among its listed codes."""
    listed = ~parsed.missing & ~parsed.wrong & ~parsed.outside
    return listed & ~np.isin(parsed.values, column.sorted_codes)


def _bad_cells(column: Column, parsed: _Parsed) -> np.ndarray:
    """The rows whose cell in ``column`` is an error (what :func:`_value_violations` reports)."""
    bad = parsed.wrong | (parsed.missing if not column.missing else False)
    if column.out_of_range != "clip" and column.other is None:  # clipped, or mapped to ``other``: kept
        bad = bad | parsed.outside
    return bad | _unlisted(column, parsed) if column.codes is not None else bad


def _wrong_value_violation(column: Column, series: pd.Series, mask: np.ndarray) -> Violation:
    if column.kind in CATEGORY_KINDS:
        return _violation(column, "unknown_category", mask, series,
                          "value(s) not among the schema's categories",
                          "add the category to the schema (if it is public knowledge) or map it "
                          "to one of the listed categories in your data")
    expected = {"boolean": "a boolean (true/false, 1/0 or yes/no, any case)", "numeric": "a finite number",
                "integer": "an integer (5, 5.0 and 5e3 are fine; 5.5 is not)",
                "datetime": ("an ISO date such as 2020-01-31 (no time of day: the bounds are dates)"
                             if column.kind == "datetime" and column.unit == "D" else
                             "an ISO date or datetime such as 2020-01-31T08:30:00")}[column.kind]
    return _violation(column, "wrong_type", mask, series, f"value(s) that are not {expected}",
                      "fix the values in your data; if a token means missing, add it to "
                      "na_values")


def _outside_violation(column: Column, series: pd.Series, mask: np.ndarray) -> Violation:
    if column.kind in CATEGORY_KINDS:  # only with ``other``: unlisted values map to it
        return _violation(column, "mapped_to_other", mask, series,
                          f"value(s) not among the schema's categories map to {column.other!r}",
                          f"nothing to do: the schema declares other: {column.other}", severity="info")
    bounds = f"[{column.lower}, {column.upper}]"
    if column.out_of_range == "clip":
        return _violation(column, "clipped", mask, series,
                          f"value(s) outside {bounds} will be clipped to the nearest bound",
                          "nothing to do: the schema declares out_of_range: clip", severity="info")
    return _violation(column, "out_of_range", mask, series, f"value(s) outside {bounds}",
                      "fix the data, widen lower/upper if public knowledge allows, or declare "
                      "out_of_range: clip in the schema")


def _violation(column: Column, problem: str, mask: np.ndarray, series: pd.Series, message: str,
               hint: str, severity: str = "error", show_values: bool = True) -> Violation:
    rows = np.flatnonzero(mask)[:MAX_EXAMPLES]
    values = tuple(repr(_raw(series.iloc[i])) for i in rows) if show_values else ()
    count = int(mask.sum())
    return Violation(column.name, problem, count, f"{count} {message}", hint,
                     tuple(int(i) for i in rows), values, severity)


def _raw(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------- rules


def _rule_violations(schema: Schema, df: pd.DataFrame, parsed: dict[str, _Parsed]) -> list[Violation]:
    """One error per broken rule, on the typed rows (unreadable cells count as missing)."""
    rules = tuple(rule for rule in schema.rules if all(c in parsed for c in rule.columns))
    broken = _broken_rules(schema, rules, parsed, len(df))
    return [_rule_violation(rule, broken[rule.name].to_numpy(), df)
            for rule in rules if broken[rule.name].any()]


def _broken_rules(schema: Schema, rules: tuple[Rule, ...], parsed: dict[str, _Parsed], rows: int) -> pd.DataFrame:
    """Booleans, rows x rule names: True where the row breaks the rule."""
    if not rules or rows == 0:
        return pd.DataFrame(False, index=range(rows), columns=[rule.name for rule in rules])
    frame = pd.DataFrame({column.name: _typed_for_rules(column, parsed[column.name])
                          for column in schema.columns if column.name in parsed})
    return rule_violations(rules, frame)


def conforming_rows(schema: Schema, df: pd.DataFrame) -> np.ndarray:
    """True for each row that breaks nothing: every cell as its column allows, every rule kept.

    A problem of the table itself (a column missing, unknown or duplicated) leaves no row.
    Otherwise whether a row conforms depends on that row alone, so adding or removing one row
    of the table adds or removes at most that row here.
    """
    report, parsed = inspect(schema, df)
    if any(v.problem in TABLE_PROBLEMS for v in report.errors):
        return np.zeros(len(df), dtype=bool)
    bad = np.zeros(len(df), dtype=bool)
    for column in schema.columns:
        bad |= _bad_cells(column, parsed[column.name])
    return ~(bad | _broken_rules(schema, schema.rules, parsed, len(df)).to_numpy().any(axis=1))


def _typed_for_rules(column: Column, parsed: _Parsed) -> Any:
    values, missing = clipped(column, parsed)
    return typed_values(column, values, missing | parsed.wrong, nullable=True)


def _rule_violation(rule: Rule, mask: np.ndarray, df: pd.DataFrame) -> Violation:
    rows = np.flatnonzero(mask)[:MAX_EXAMPLES]
    values = tuple("{" + ", ".join(f"{c}: {_raw(_cell(df, c, i))!r}" for c in rule.columns) + "}"
                   for i in rows)
    count = int(mask.sum())
    return Violation(", ".join(rule.columns), "broken_rule", count,
                     f"{count} row(s) break it ({rule.describe()})",
                     "real data breaking a public rule means the rule or the data is wrong: fix "
                     "the data, or correct the rule with the data steward from public "
                     "documentation (never from these rows)",
                     tuple(int(i) for i in rows), values, rule=rule.name)


def _cell(df: pd.DataFrame, column: str, row: int) -> Any:
    series = df[column]
    if isinstance(series, pd.DataFrame):  # duplicated name: already reported
        series = series.iloc[:, 0]
    return series.iloc[row]


# --------------------------------------------------------------------------- typed values


def clipped(column: Column, parsed: _Parsed) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing) with declared clipping applied to numbers."""
    values = parsed.values
    if (column.kind in NUMBER_KINDS or column.kind == "datetime") and column.out_of_range == "clip":
        values = np.clip(values, *column.bounds)
    return values, parsed.missing

