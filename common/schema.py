"""The public schema of a fedsynth job: model, file IO, validation, encoding, drafts.

The schema is public metadata that all parties agree on and a data steward signs off
BEFORE any data is touched: column kinds, category lists, numeric bounds and bins.
Everything downstream (the marginal generator's domain, the codes each client counts,
the decoded synthetic values) is a function of the schema alone, never of the data.

File format (YAML, JSON or TOML; see ``fedsynth/data/adult.schema.yaml``)::

    name: adult
    label: Y                 # a column name, or null
    na_values: ["?"]         # tokens that mean "missing" in a data file
    draft: true              # only on drafts read from private data; see draft_warning()
    columns:
      - {name: age, kind: integer, lower: 16, upper: 100, bins: [16, 20, 30, 100]}
      - {name: sex, kind: categorical, categories: [Female, Male]}

Column keys: ``name``, ``kind`` (categorical, ordinal, boolean, numeric, integer),
``categories`` (categorical/ordinal; ordinal = ordered), ``lower``/``upper`` (inclusive
bounds), ``bins`` (an int N = N equal-width bins over [lower, upper], or sorted edges from
lower to upper; bins are [e_k, e_k+1) except the last, which is closed), ``missing``
(default false), ``out_of_range`` (error | clip, default error) and ``decode`` (uniform |
midpoint, default uniform: how a bin is turned back into a value).

Value rules, decided here once:

* Categories are text and compared exactly (case and spaces matter). A schema file must
  quote numeric-looking categories (``"1"``), so that ``01`` and ``1`` cannot be confused.
* A boolean cell is ``true``/``false``/``1``/``0`` in any case (or a real bool).
* An integer cell may be written ``5000.0``: integral numbers are integers. ``3.5`` is not.
* Any cell equal to one of ``na_values`` is missing, whether the table was read by
  :meth:`Schema.read_csv` or built by hand. An empty cell is NOT missing unless ``""`` is
  listed in ``na_values``.
* Nothing is coerced silently. The only coercion is ``out_of_range: clip``, which the
  schema declares and every validation report counts.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

__all__ = [
    "Column",
    "Schema",
    "SchemaError",
    "ValidationReport",
    "Violation",
    "draft_schema",
    "draft_warning",
    "load_schema",
    "run_draft",
    "run_validate",
]

KINDS = ("categorical", "ordinal", "boolean", "numeric", "integer")
CATEGORY_KINDS = ("categorical", "ordinal")
NUMBER_KINDS = ("numeric", "integer")
OUT_OF_RANGE_RULES = ("error", "clip")
DECODE_RULES = ("uniform", "midpoint")
TRUE_TOKENS = ("true", "1")
FALSE_TOKENS = ("false", "0")
MAX_EXAMPLES = 5

_SCHEMA_KEYS = ("name", "label", "na_values", "draft", "columns")
_COMMON_COLUMN_KEYS = ("name", "kind", "missing")
_KIND_KEYS = {
    "categorical": ("categories",),
    "ordinal": ("categories",),
    "boolean": (),
    "numeric": ("lower", "upper", "bins", "out_of_range", "decode"),
    "integer": ("lower", "upper", "bins", "out_of_range", "decode"),
}
_KIND_ALIASES = {
    "float": "numeric", "double": "numeric", "real": "numeric", "continuous": "numeric",
    "int": "integer", "count": "integer", "bool": "boolean", "binary": "boolean",
    "str": "categorical", "string": "categorical", "category": "categorical",
    "nominal": "categorical", "ordered": "ordinal",
}


class SchemaError(ValueError):
    """A schema that cannot be loaded, or data that does not conform to its schema.

    ``problems`` lists each problem on its own; ``report`` carries the full
    :class:`ValidationReport` when the error comes from strict validation.
    """

    def __init__(self, message: str, problems: Sequence[str] = (),
                 report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)
        self.report = report


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Column:
    """One column of the public schema. Invalid combinations raise :class:`SchemaError`."""

    name: str
    kind: str
    categories: tuple[str, ...] | None = None
    lower: int | float | None = None
    upper: int | float | None = None
    bins: int | tuple[int | float, ...] | None = None
    missing: bool = False
    out_of_range: str = "error"
    decode: str = "uniform"

    def __post_init__(self) -> None:
        for key in ("categories", "bins"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        problems = _column_problems(self)
        if problems:
            raise SchemaError(_bullets(f"column {self.name!r} is invalid:", problems), problems)

    @property
    def n_values(self) -> int:
        """Number of codes for present values (categories, 2 booleans, or bins)."""
        if self.kind in CATEGORY_KINDS:
            return len(self.categories)
        if self.kind == "boolean":
            return 2
        return len(self.edges) - 1

    @property
    def n_codes(self) -> int:
        """Number of codes including the extra last code for "missing" when allowed."""
        return self.n_values + int(self.missing)

    @cached_property
    def edges(self) -> np.ndarray:
        """Bin edges e_0 = lower < ... < e_N = upper (numeric and integer columns)."""
        if isinstance(self.bins, int):
            edges = np.linspace(self.lower, self.upper, self.bins + 1)
        else:
            edges = np.asarray(self.bins, dtype=np.float64)
        edges.flags.writeable = False
        return edges

    @cached_property
    def bin_integers(self) -> tuple[np.ndarray, np.ndarray]:
        """(first, last) integer inside each bin, inclusive; the last bin is closed."""
        return _integers_in_bins(self.edges)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with only the keys that differ from their defaults."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.kind in NUMBER_KINDS:
            out["lower"], out["upper"] = self.lower, self.upper
            out["bins"] = self.bins if isinstance(self.bins, int) else list(self.bins)
        if self.missing:
            out["missing"] = True
        if self.out_of_range != "error":
            out["out_of_range"] = self.out_of_range
        if self.decode != "uniform":
            out["decode"] = self.decode
        return out


@dataclass(frozen=True)
class Schema:
    """The public schema: an ordered tuple of columns plus how missing values are written."""

    name: str
    columns: tuple[Column, ...]
    label: str | None = None
    na_values: tuple[str, ...] = ()
    draft: bool = False

    def __post_init__(self) -> None:
        for key in ("columns", "na_values"):
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        problems = _schema_problems(self)
        if problems:
            raise SchemaError(_bullets(f"schema {self.name!r} is invalid:", problems), problems)

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
        return out

    def dumps(self, fmt: str = "yaml") -> str:
        """The schema as YAML or JSON text."""
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        if fmt == "yaml":
            return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True,
                                  default_flow_style=None, width=100)
        raise ValueError(f"unknown schema format {fmt!r}; use 'yaml' or 'json'")

    def save(self, path: str | Path) -> None:
        """Write to ``.yaml``/``.yml`` or ``.json`` (TOML is read-only: no writer in stdlib)."""
        path = Path(path)
        path.write_text(self.dumps(_writable_format(path)), encoding="utf-8")

    def read_csv(self, path: str | Path) -> pd.DataFrame:
        """Read a data file with every cell as text, so that type checking is ours.

        ``na_values`` become missing; pandas' default NA tokens ("NA", "null", "") do not.
        """
        return pd.read_csv(path, dtype=str, na_values=list(self.na_values),
                           keep_default_na=False, skipinitialspace=True)

    # ---- data
    def validate(self, df: pd.DataFrame, strict: bool = False) -> ValidationReport:
        """Check a table against the schema and report every violation.

        The report holds example rows and values from the table: it is for the data
        owner's eyes and must never be sent to the coordinator.
        ``strict=True`` raises :class:`SchemaError` (carrying the report) unless ``ok``.
        """
        report, _ = _inspect(self, df)
        if strict:
            _raise_if_errors(report)
        return report

    def conform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Validate strictly and return the typed table in schema column order.

        Dtypes depend on the schema only: categorical/ordinal -> pandas Categorical over the
        schema's categories (ordered for ordinal); boolean -> bool (``boolean`` if missing
        is allowed); numeric -> float64 (NaN = missing); integer -> int64 (``Int64`` if
        missing is allowed). Declared clipping is applied.
        """
        report, parsed = _inspect(self, df)
        _raise_if_errors(report)
        data = {c.name: _typed_values(c, *_clipped(c, parsed[c.name])) for c in self.columns}
        return pd.DataFrame(data, index=df.index)

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """Validate strictly, then map each cell to its code: an int64 array (rows x columns).

        Codes: category index, bool 0/1, bin index; the missing code is the last one.
        """
        report, parsed = _inspect(self, df)
        _raise_if_errors(report)
        codes = [_codes(c, *_clipped(c, parsed[c.name])) for c in self.columns]
        return np.column_stack(codes) if codes else np.empty((len(df), 0), np.int64)

    def decode(self, codes: np.ndarray, rng: np.random.Generator | int) -> pd.DataFrame:
        """Turn codes back into a typed table (same dtypes as :meth:`conform`).

        Bins become values by the column's ``decode`` rule; the missing code becomes
        NaN/NA. ``rng`` is a numpy Generator or a seed.
        """
        codes = _checked_codes(self, codes)
        rng = np.random.default_rng(rng)
        data = {}
        for column, column_codes in zip(self.columns, codes):
            missing = column_codes == column.n_values if column.missing else None
            values = _decode_values(column, column_codes, rng)
            data[column.name] = _typed_values(column, values, missing)
        return pd.DataFrame(data)


def load_schema(path: str | Path) -> Schema:
    """Read a schema from ``.yaml``/``.yml``, ``.json`` or ``.toml`` and check it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json", ".toml"):
        raise SchemaError(f"{path}: unknown schema file type {suffix!r}; "
                          f"use .yaml, .yml, .json or .toml")
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".json":
            data = json.loads(text, object_pairs_hook=_mapping_without_duplicates)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.load(text, Loader=_StrictYamlLoader)  # noqa: S506 (safe loader subclass)
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise SchemaError(f"{path}: not a readable {suffix[1:]} file: {exc}") from exc
    if not isinstance(data, Mapping):
        raise SchemaError(f"{path}: the top level must be a mapping with name, label, "
                          f"na_values and columns; got {type(data).__name__}")
    return Schema.from_dict(data, source=str(path))


def _writable_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise SchemaError(f"{path}: can only write .yaml, .yml or .json schema files, not {suffix!r}")


def _mapping_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON hook: a key written twice is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object; keep one")
        out[key] = value
    return out


class _StrictYamlLoader(yaml.SafeLoader):
    """Safe YAML loader that rejects a key written twice in one mapping.

    Plain PyYAML keeps the last value silently, so a signed-off file could say two things.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping; keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# --------------------------------------------------------------------------- checks at load


def _schema_from_dict(data: Mapping[str, Any], source: str) -> Schema:
    name = data.get("name")
    problems = _unknown_key_problems("the schema", data, _SCHEMA_KEYS)
    columns_data = data.get("columns")
    if not isinstance(columns_data, list) or not columns_data:
        problems.append("'columns' must be a non-empty list of column mappings")
        columns_data = []
    columns = []
    for position, column_data in enumerate(columns_data):
        try:
            columns.append(_column_from_dict(column_data, position))
        except SchemaError as exc:
            problems.extend(exc.problems)
    if not problems:
        try:
            return Schema(name=name, columns=tuple(columns), label=data.get("label"),
                          na_values=_as_tuple(data.get("na_values", ())),
                          draft=data.get("draft", False))
        except SchemaError as exc:
            problems.extend(exc.problems)
    raise SchemaError(_bullets(f"{source}: schema {name!r} is invalid; fix the schema file:",
                               problems), problems)


def _column_from_dict(data: Any, position: int) -> Column:
    if not isinstance(data, Mapping):
        raise SchemaError(f"column #{position + 1}: must be a mapping with at least name and "
                          f"kind, got {data!r}")
    label = f"column {data.get('name', f'#{position + 1}')!r}"
    kind = data.get("kind")
    allowed = _COMMON_COLUMN_KEYS + _KIND_KEYS.get(kind, sum(_KIND_KEYS.values(), ()))
    problems = []
    for key in data:
        if key in allowed:
            continue
        if kind in _KIND_KEYS and any(key in keys for keys in _KIND_KEYS.values()):
            problems.append(f"{label}: key {key!r} does not apply to a {kind} column; "
                            f"remove it or change the kind")
        else:
            problems.extend(_unknown_key_problems(label, {key: None}, allowed))
    fields = {key: _as_tuple(value) if key in ("categories", "bins") else value
              for key, value in data.items() if key in allowed}
    fields.setdefault("name", None)
    fields.setdefault("kind", None)
    try:
        column = Column(**fields)
    except SchemaError as exc:
        problems.extend(exc.problems)
    if problems:
        raise SchemaError(_bullets(f"{label} is invalid:", problems), problems)
    return column


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _unknown_key_problems(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> list[str]:
    problems = []
    for key in data:
        if key not in allowed:
            guess = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            problems.append(f"{where}: unknown key {key!r}{hint}; allowed keys are "
                            f"{', '.join(allowed)}")
    return problems


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
    if schema.label is not None and schema.label not in names:
        problems.append(f"label {schema.label!r} is not a column; set label to one of "
                        f"{names} or to null")
    if not isinstance(schema.draft, bool):
        problems.append(f"'draft' must be true or false, got {schema.draft!r}")
    for column in schema.columns:
        for category in set(column.categories or ()) & set(schema.na_values or ()):
            problems.append(f"column {column.name!r}: category {category!r} is also in "
                            f"na_values, so it would always be read as missing; remove it "
                            f"from one of the two")
    return problems


def _na_values_problems(na_values: Any) -> list[str]:
    if not isinstance(na_values, tuple) or not all(isinstance(v, str) for v in na_values):
        return [f"'na_values' must be a list of text tokens such as [\"?\"] or [\"N\"], "
                f"got {na_values!r}"]
    return []


def _column_problems(column: Column) -> list[str]:
    label = f"column {column.name!r}"
    if not isinstance(column.name, str) or not column.name:
        return [f"{label}: 'name' must be a non-empty text"]
    if column.kind not in KINDS:
        return [_unknown_kind_problem(label, column.kind)]
    problems = _missing_flag_problems(label, column)
    if column.kind in CATEGORY_KINDS:
        problems += _category_problems(label, column.categories)
    elif column.kind in NUMBER_KINDS:
        problems += _bound_problems(label, column)
        if not problems:
            problems += _bin_problems(label, column)
        problems += _choice_problems(label, "out_of_range", column.out_of_range, OUT_OF_RANGE_RULES)
        problems += _choice_problems(label, "decode", column.decode, DECODE_RULES)
    for key in ("categories", "lower", "upper", "bins"):
        if getattr(column, key) is not None and key not in _KIND_KEYS[column.kind]:
            problems.append(f"{label}: {key!r} does not apply to a {column.kind} column; "
                            f"remove it or change the kind")
    return problems


def _unknown_kind_problem(label: str, kind: Any) -> str:
    if kind is None:
        return f"{label}: 'kind' is required; use one of {', '.join(KINDS)}"
    guess = _KIND_ALIASES.get(str(kind).lower()) or next(
        iter(difflib.get_close_matches(str(kind), KINDS, n=1)), None)
    hint = f" (did you mean {guess!r}?)" if guess else ""
    return f"{label}: unknown kind {kind!r}{hint}; use one of {', '.join(KINDS)}"


def _missing_flag_problems(label: str, column: Column) -> list[str]:
    if not isinstance(column.missing, bool):
        return [f"{label}: 'missing' must be true or false, got {column.missing!r}"]
    return []


def _choice_problems(label: str, key: str, value: Any, choices: Sequence[str]) -> list[str]:
    if value not in choices:
        return [f"{label}: {key} must be one of {', '.join(choices)}, got {value!r}"]
    return []


def _category_problems(label: str, categories: Any) -> list[str]:
    if categories is None:
        return [f"{label}: a categorical or ordinal column needs 'categories', the public list "
                f"of allowed values, e.g. categories: [Female, Male]"]
    if not isinstance(categories, tuple) or not categories:
        return [f"{label}: 'categories' must be a non-empty list, got {categories!r}"]
    problems = []
    for category in categories:
        if not isinstance(category, str):
            problems.append(
                f"{label}: category {category!r} is a {type(category).__name__}, not text; "
                f"quote it in the schema file (\"{category}\") so that it matches the data "
                f"exactly (YAML reads unquoted yes/no/on/off as booleans and 01 as 1)")
    for category in sorted({c for c in categories if categories.count(c) > 1}, key=str):
        problems.append(f"{label}: category {category!r} is listed more than once; "
                        f"list each category once")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bound_problems(label: str, column: Column) -> list[str]:
    problems = []
    for key in ("lower", "upper"):
        value = getattr(column, key)
        if value is None:
            problems.append(f"{label}: {column.kind} columns need '{key}' (inclusive), taken "
                            f"from public knowledge, never from the data")
        elif not _is_number(value):
            problems.append(f"{label}: {key} must be a finite number, got {value!r}")
        elif column.kind == "integer" and value != math.floor(value):
            problems.append(f"{label}: an integer column needs integer bounds; {key} is {value}")
    if not problems and column.lower >= column.upper:
        problems.append(f"{label}: lower ({column.lower}) must be smaller than upper "
                        f"({column.upper}); fix or swap them")
    return problems


def _bin_problems(label: str, column: Column) -> list[str]:
    bins = column.bins
    if bins is None:
        return [f"{label}: {column.kind} columns need 'bins': a number of equal-width bins "
                f"(e.g. bins: 10) or a list of edges from lower to upper"]
    if isinstance(bins, int) and not isinstance(bins, bool):
        if bins < 1:
            return [f"{label}: bins must be at least 1, got {bins}"]
    elif not isinstance(bins, tuple) or len(bins) < 2 or not all(map(_is_number, bins)):
        return [f"{label}: bins must be an integer or a list of at least two finite numbers "
                f"(edges), got {bins!r}"]
    else:
        problems = []
        for left, right in zip(bins, bins[1:]):
            if left >= right:
                problems.append(f"{label}: bin edges must be strictly increasing; "
                                f"{left} is followed by {right}")
        if bins[0] != column.lower or bins[-1] != column.upper:
            problems.append(f"{label}: bins must start at lower ({column.lower}) and end at "
                            f"upper ({column.upper}) so that every allowed value has a bin; "
                            f"the edges run from {bins[0]} to {bins[-1]}")
        if problems:
            return problems
    if column.kind == "integer":
        return _empty_integer_bin_problems(label, column)
    return []


def _empty_integer_bin_problems(label: str, column: Column) -> list[str]:
    first, last = column.bin_integers
    edges = column.edges
    problems = []
    for k in np.flatnonzero(first > last):
        closing = "]" if k == len(edges) - 2 else ")"
        problems.append(f"{label}: bin #{k} [{edges[k]:g}, {edges[k + 1]:g}{closing} contains no "
                        f"integer; merge it with a neighbour or use fewer bins")
    return problems


def _integers_in_bins(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first = np.ceil(edges[:-1]).astype(np.int64)
    last = np.ceil(edges[1:]).astype(np.int64) - 1
    last[-1] = math.floor(edges[-1])
    return first, last


def _bullets(header: str, problems: Iterable[str]) -> str:
    return header + "".join(f"\n  - {problem}" for problem in problems)


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Violation:
    """One kind of problem in one column, with a count and a few examples.

    ``rows`` are 0-based positions in the table (not index labels, not file lines);
    ``values`` are the raw cells at those rows.
    """

    column: str
    problem: str
    count: int
    message: str
    hint: str
    rows: tuple[int, ...] = ()
    values: tuple[str, ...] = ()
    severity: str = "error"

    def __str__(self) -> str:
        where = f"; rows {', '.join(map(str, self.rows))}" if self.rows else ""
        more = " ..." if self.count > len(self.rows) and self.rows else ""
        shown = f"; values {', '.join(self.values)}" if self.values else ""
        return (f"[{self.severity}] column {self.column!r}, {self.problem}: {self.message}"
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


def _inspect(schema: Schema, df: pd.DataFrame) -> tuple[ValidationReport, dict[str, _Parsed]]:
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
    return ValidationReport(schema.name, len(df), tuple(violations)), parsed


def _raise_if_errors(report: ValidationReport) -> None:
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
    return _parse_numbers(column, series, na_values)


def _as_text(series: pd.Series) -> pd.Series:
    """Cells as text with missing cells kept missing (ints become "1", floats "1.0")."""
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype):
        return series
    if isinstance(dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(dtype.categories):
        return series
    return series.astype(str)


def _missing_mask(text: pd.Series, na_values: tuple[str, ...]) -> np.ndarray:
    missing = text.isna().to_numpy()
    if na_values:
        missing = missing | text.isin(na_values).to_numpy()
    return missing


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


def _cells(series: pd.Series, na_values: tuple[str, ...]) -> _Cells:
    positions, distinct = pd.factorize(series, use_na_sentinel=True)
    texts = pd.Index(distinct).astype(str)  # ints become "1", floats "1.0"
    positions = np.where(positions < 0, len(texts), positions)
    missing = np.append(texts.isin(na_values), True)
    return _Cells(texts, positions, missing)


def _parse_categories(column: Column, series: pd.Series, na_values: tuple[str, ...]) -> _Parsed:
    cells = _cells(series, na_values)
    missing = cells.missing[cells.positions]
    codes = cells.expand(pd.Index(column.categories).get_indexer(cells.texts), -1)
    return _Parsed(codes.astype(np.int64), missing, (codes < 0) & ~missing,
                   np.zeros(len(codes), bool))


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
    valid = finite & ~wrong
    outside = valid & ((values < column.lower) | (values > column.upper))
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
    return found


def _wrong_value_violation(column: Column, series: pd.Series, mask: np.ndarray) -> Violation:
    empty = bool((series[mask].astype(str) == "").any())
    empty_hint = ("; empty cells are not missing unless \"\" is listed in na_values"
                  if empty else "")
    if column.kind in CATEGORY_KINDS:
        return _violation(column, "unknown_category", mask, series,
                          "value(s) not among the schema's categories",
                          "add the category to the schema (if it is public knowledge) or map it "
                          "to one of the listed categories in your data" + empty_hint)
    expected = {"boolean": "a boolean (true/false/1/0, any case)", "numeric": "a finite number",
                "integer": "an integer (5, 5.0 and 5e3 are fine; 5.5 is not)"}[column.kind]
    return _violation(column, "wrong_type", mask, series, f"value(s) that are not {expected}",
                      "fix the values in your data; if a token means missing, add it to "
                      "na_values" + empty_hint)


def _outside_violation(column: Column, series: pd.Series, mask: np.ndarray) -> Violation:
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


# --------------------------------------------------------------------------- typed values and codes


def _clipped(column: Column, parsed: _Parsed) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing) with declared clipping applied to numbers."""
    values = parsed.values
    if column.kind in NUMBER_KINDS and column.out_of_range == "clip":
        values = np.clip(values, column.lower, column.upper)
    return values, parsed.missing


def _typed_values(column: Column, values: np.ndarray, missing: np.ndarray | None) -> Any:
    """Values of one column in the dtype the schema fixes (see :meth:`Schema.conform`)."""
    has_missing = missing is not None and column.missing
    if column.kind in CATEGORY_KINDS:
        codes = np.where(missing, -1, values) if has_missing else values
        return pd.Categorical.from_codes(codes, categories=list(column.categories),
                                         ordered=column.kind == "ordinal")
    if column.kind == "boolean":
        values = values.astype(bool)
        return pd.arrays.BooleanArray(values, missing.copy()) if has_missing else values
    if column.kind == "numeric":
        values = values.astype(np.float64)
        return np.where(missing, np.nan, values) if has_missing else values
    integers = np.where(missing, 0, values).astype(np.int64) if has_missing else values.astype(np.int64)
    return pd.arrays.IntegerArray(integers, missing.copy()) if has_missing else integers


def _codes(column: Column, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    if column.kind in CATEGORY_KINDS:
        codes = values.astype(np.int64)
    elif column.kind == "boolean":
        codes = values.astype(np.int64)
    else:
        edges = column.edges
        codes = np.searchsorted(edges, values, side="right").astype(np.int64) - 1
        codes = np.clip(codes, 0, len(edges) - 2)
    return np.where(missing, column.n_values, codes)


def _checked_codes(schema: Schema, codes: np.ndarray) -> np.ndarray:
    """Codes as an int64 array of shape (columns, rows): one contiguous row per column."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != len(schema.columns):
        raise ValueError(f"codes must be a 2-D array with one column per schema column "
                         f"({len(schema.columns)}), got shape {codes.shape}")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    by_column = np.ascontiguousarray(codes.T, dtype=np.int64)
    n_codes = np.array([column.n_codes for column in schema.columns], dtype=np.int64)
    bad = (by_column < 0) | (by_column >= n_codes[:, None])
    if bad.any():
        j, row = (int(i[0]) for i in np.nonzero(bad))
        column = schema.columns[j]
        raise ValueError(f"column {column.name!r}: code {by_column[j, row]} at row {row} is "
                         f"outside 0..{column.n_codes - 1} ({int(bad[j].sum())} such codes); "
                         f"codes must come from Schema.encode or respect Schema.domain()")
    return by_column


def _decode_values(column: Column, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values for codes; the missing code decodes to a placeholder that the mask hides."""
    present = np.minimum(codes, column.n_values - 1)
    if column.kind in CATEGORY_KINDS:
        return present
    if column.kind == "boolean":
        return present.astype(bool)
    if column.kind == "integer":
        return _decode_integers(column, present, rng)
    return _decode_numbers(column, present, rng)


def _decode_numbers(column: Column, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    left, right = column.edges[bins], column.edges[bins + 1]
    if column.decode == "midpoint":
        return (left + right) / 2
    values = left + rng.random(len(bins)) * (right - left)
    # Rounding may land on the right edge, which belongs to the next bin (except the last).
    is_open = bins < len(column.edges) - 2
    return np.where(is_open & (values >= right), np.nextafter(right, left), values)


def _decode_integers(column: Column, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    first, last = column.bin_integers
    low, high = first[bins], last[bins]
    if column.decode == "midpoint":
        middle = np.floor((column.edges[bins] + column.edges[bins + 1]) / 2 + 0.5)
        return np.clip(middle, low, high).astype(np.int64)
    return rng.integers(low, high, endpoint=True)


# --------------------------------------------------------------------------- drafts


_DRAFT_MAX_CODES = 10  # integer columns with at most this many distinct values draft as codes
_DRAFT_BINS = 10


def draft_warning() -> str:
    """The banner shown whenever a schema is drafted from data."""
    line = "!" * 78
    return "\n".join([
        line,
        "!!  WARNING: THIS SCHEMA IS A DRAFT READ FROM PRIVATE DATA. DO NOT USE IT AS IS.",
        line,
        "!!  Its bounds and category lists were read from the rows themselves, so they",
        "!!  are private: a maximum can be the oldest patient's age or the largest salary,",
        "!!  and a rare category can be held by one single person. Publishing or using",
        "!!  them in a job leaks that information outside any privacy guarantee.",
        "!!",
        "!!  Before ANY job: review every column with the data steward, replace each bound,",
        "!!  bin and category list with public knowledge (a code book, a standard, a legal",
        "!!  range), then delete the line `draft: true` from the file.",
        line,
    ])


def draft_schema(df: pd.DataFrame, name: str, na_values: Sequence[str] = ()) -> Schema:
    """Infer a starting-point schema (kinds, categories, bounds) FROM THE DATA.

    The result is private and marked ``draft``; see :func:`draft_warning`. Cells are read
    as text; integer codes with at most 10 distinct values become categories.
    """
    na_values = tuple(na_values)
    columns = tuple(_draft_column(str(column), df[column], na_values) for column in df.columns)
    return Schema(name=name, columns=columns, label=None, na_values=na_values, draft=True)


def _draft_column(name: str, series: pd.Series, na_values: tuple[str, ...]) -> Column:
    text = _as_text(series)
    missing = _missing_mask(text, na_values)
    present = text[~missing]
    has_missing = bool(missing.any())
    if present.empty:
        return Column(name, "categorical", categories=("REPLACE-ME",), missing=has_missing)
    if present.str.strip().str.lower().isin(("true", "false")).all():
        return Column(name, "boolean", missing=has_missing)
    numbers = pd.to_numeric(present, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(numbers).all():
        return Column(name, "categorical", categories=tuple(sorted(present.unique())),
                      missing=has_missing)
    if (numbers == np.floor(numbers)).all():
        if present.nunique() <= _DRAFT_MAX_CODES:
            codes = sorted(present.unique(), key=lambda code: float(code))
            return Column(name, "categorical", categories=tuple(codes), missing=has_missing)
        lower, upper = int(numbers.min()), max(int(numbers.max()), int(numbers.min()) + 1)
        return Column(name, "integer", lower=lower, upper=upper,
                      bins=min(_DRAFT_BINS, upper - lower + 1), missing=has_missing)
    lower, upper = float(numbers.min()), max(float(numbers.max()), float(numbers.min()) + 1)
    return Column(name, "numeric", lower=lower, upper=upper,
                  bins=_DRAFT_BINS, missing=has_missing)


def run_draft(data_path: str | Path, out_path: str | Path | None,
              na_values: Sequence[str] | None = None) -> int:
    """CLI ``fedsynth schema draft``: read a CSV, write a draft schema, shout the warning.

    Writes JSON or YAML by the extension of ``out_path`` (YAML drafts start with the
    warning as comments); with no ``out_path`` the YAML goes to stdout. The banner goes to
    stderr, a short summary to stdout (to stderr when stdout carries the schema).
    Exit codes: 0 written; 2 unreadable data, unwritable output, or an output file that
    already exists (never overwritten: it may be a reviewed schema).
    """
    data_path = Path(data_path)
    na_values = tuple(na_values or ())
    if out_path is not None and Path(out_path).exists():
        print(f"fedsynth schema draft: {out_path} exists; it may be a reviewed schema, so it is "
              f"not overwritten. Remove it or choose another output path.", file=sys.stderr)
        return 2
    try:
        df = pd.read_csv(data_path, dtype=str, na_values=list(na_values),
                         keep_default_na=False, skipinitialspace=True)
        schema = draft_schema(df, name=data_path.stem, na_values=na_values)
        text = _draft_text(schema, Path(out_path) if out_path is not None else None)
        if out_path is not None:
            Path(out_path).write_text(text, encoding="utf-8")
    except (OSError, ValueError) as exc:  # SchemaError and pandas parse errors are ValueErrors
        print(f"fedsynth schema draft: {exc}", file=sys.stderr)
        return 2
    print(draft_warning(), file=sys.stderr)
    if out_path is None:
        sys.stdout.write(text)
    summary_stream = sys.stdout if out_path is not None else sys.stderr
    print(_draft_summary(schema, len(df), out_path), file=summary_stream)
    return 0


def _draft_text(schema: Schema, out_path: Path | None) -> str:
    fmt = "yaml" if out_path is None else _writable_format(out_path)
    if fmt == "json":
        return schema.dumps("json")
    comment = "".join(f"# {line}\n" for line in draft_warning().splitlines())
    return comment + schema.dumps("yaml")


def _draft_summary(schema: Schema, n_rows: int, out_path: str | Path | None) -> str:
    kinds = [column.kind for column in schema.columns]
    counts = ", ".join(f"{kinds.count(kind)} {kind}" for kind in KINDS if kind in kinds)
    with_missing = sum(column.missing for column in schema.columns)
    target = f"wrote {out_path}" if out_path is not None else "printed above"
    return (f"Drafted schema {schema.name!r} from {n_rows} rows: {len(kinds)} columns "
            f"({counts}), {with_missing} allowing missing values; {target}.\n"
            f"It is PRIVATE until reviewed (see the warning on stderr); set 'label' by hand.")


def run_validate(data_path: str | Path, schema_path: str | Path) -> int:
    """CLI ``fedsynth schema validate``: print the report; exit 0 ok, 1 violations,
    2 when the schema or the data file cannot be read."""
    try:
        schema = load_schema(schema_path)
        df = schema.read_csv(data_path)
    except (OSError, ValueError) as exc:
        print(f"fedsynth schema validate: {exc}", file=sys.stderr)
        return 2
    report = schema.validate(df)
    print(report)
    return 0 if report.ok else 1
