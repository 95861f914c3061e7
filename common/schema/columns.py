"""One column of the public schema: its kind, its public value set, its bins.

A :class:`Column` checks itself when built, so an invalid combination (an integer column
without bounds, bins that leave values without a bin, a list of codes with an empty bin)
can never reach the encoder. :func:`column_from_dict` reads a column from a schema file and
names every unknown or misplaced key. Everything here is public metadata: nothing is read
from data.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .datetimes import MAX_BINS, iso_text, parse_iso, to_units, unit_of, width_units

KINDS = ("categorical", "ordinal", "boolean", "numeric", "integer", "datetime")
CATEGORY_KINDS = ("categorical", "ordinal")
NUMBER_KINDS = ("numeric", "integer")
OUT_OF_RANGE_RULES = ("error", "clip")
DECODE_RULES = ("uniform", "midpoint")
#: Suffix of a column's fine grid in the generator's measured domain (``Schema.fine_domain``).
FINE_SUFFIX = ":fine"
MAX_FINE_CELLS = 1000  # cells of one fine grid (its 1-way marginal is one count vector)

COMMON_COLUMN_KEYS = ("name", "kind", "missing")
KIND_KEYS = {
    "categorical": ("categories", "other"),
    "ordinal": ("categories", "other"),
    "boolean": (),
    "numeric": ("lower", "upper", "bins", "fine", "constant_per", "out_of_range", "decode"),
    "integer": ("lower", "upper", "bins", "fine", "codes", "constant_per", "out_of_range", "decode"),
    "datetime": ("lower", "upper", "bins", "fine", "out_of_range", "decode"),
}
_KIND_ALIASES = {
    "float": "numeric", "double": "numeric", "real": "numeric", "continuous": "numeric",
    "int": "integer", "count": "integer", "bool": "boolean", "binary": "boolean",
    "str": "categorical", "string": "categorical", "category": "categorical",
    "nominal": "categorical", "ordered": "ordinal",
    "date": "datetime", "timestamp": "datetime", "time": "datetime",
}
_TUPLE_KEYS = ("categories", "bins", "codes", "fine")


class SchemaError(ValueError):
    """A schema that cannot be loaded, or data that does not conform to its schema.

    ``problems`` lists each problem on its own; ``report`` carries the full
    :class:`~fedsynth.common.schema.ValidationReport` when the error comes from strict
    validation.
    """

    def __init__(self, message: str, problems: Sequence[str] = (), report: Any = None) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)
        self.report = report


def bullets(header: str, problems: Iterable[str]) -> str:
    return header + "".join(f"\n  - {problem}" for problem in problems)


def unknown_key_problems(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> list[str]:
    problems = []
    for key in data:
        if key not in allowed:
            guess = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            problems.append(f"{where}: unknown key {key!r}{hint}; allowed keys are "
                            f"{', '.join(allowed)}")
    return problems


def as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    return is_number(value) and value == math.floor(value)


@dataclass(frozen=True)
class Column:
    """One column of the public schema. Invalid combinations raise :class:`SchemaError`.

    ``codes`` (integer columns only) is the public list of valid values, e.g. the industry
    codes of a code book: data outside it is flagged, and decoding a bin picks only among
    the listed codes inside it.

    ``fine`` (numeric, integer and datetime columns) is a public fine grid: a width (``1`` for
    single years of age; a width such as ``1D`` for a datetime) or a list of edges (a log grid for
    incomes). Its cells are the grid cut at every coarse edge too, so each lies inside one coarse
    bin (:attr:`fine_bins`); an integer or datetime column's listed grid that ends at ``upper``
    gives the upper bound a cell of its own (a top code): the model's higher-order marginals use the coarse bins, the generator
    also measures the fine grid's 1-way marginal, and values decode from the fine distribution
    within their coarse bin (``codec``).

    ``constant_per`` (numeric and integer columns) names a categorical column of which
    this one is a function, by public knowledge (a region's population density: one value per
    region). The generator then measures the column's finest grid jointly with that column, and
    a synthetic table gives every row of one group the same value (``sampling``).
    """

    name: str
    kind: str
    categories: tuple[str, ...] | None = None
    lower: int | float | None = None
    upper: int | float | None = None
    bins: int | tuple[int | float, ...] | None = None
    missing: bool = False
    out_of_range: str = "error"
    decode: str = "uniform"
    codes: tuple[int, ...] | None = None
    fine: int | float | str | tuple[int | float, ...] | None = None
    other: str | None = None  # the listed category every unlisted value maps to (None: unlisted is an error)
    constant_per: str | None = None  # a categorical column this one is a function of (one value per group)

    def __post_init__(self) -> None:
        for key in _TUPLE_KEYS:
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        if self.kind == "datetime":  # YAML reads unquoted dates as dates: keep their ISO text
            for key in ("lower", "upper"):
                object.__setattr__(self, key, iso_text(getattr(self, key)))
        problems = _column_problems(self)
        if problems:
            raise SchemaError(bullets(f"column {self.name!r} is invalid:", problems), problems)

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

    @property
    def unit(self) -> str:
        """A datetime column's unit: ``D`` (whole days) or ``s`` (whole seconds) since 1970."""
        return unit_of(self.lower, self.upper)

    @cached_property
    def bounds(self) -> tuple[float, float]:
        """(lower, upper) as numbers: a datetime column's in its units since 1970."""
        if self.kind == "datetime":
            return tuple(to_units(parse_iso(b), self.unit) for b in (self.lower, self.upper))
        return float(self.lower), float(self.upper)

    @cached_property
    def edges(self) -> np.ndarray:
        """Bin edges e_0 = lower < ... < e_N = upper (numeric, integer and datetime columns)."""
        low, high = self.bounds
        if isinstance(self.bins, str):  # a datetime bin width, e.g. 30D
            edges = np.append(np.arange(low, high, width_units(self.bins, self.unit)), high)
        elif isinstance(self.bins, int):
            edges = np.linspace(low, high, self.bins + 1)
        else:
            edges = np.asarray(self.bins, dtype=np.float64)
        return read_only(edges)

    @property
    def fine_name(self) -> str:
        """The fine grid's name in the generator's measured domain."""
        return self.name + FINE_SUFFIX

    @cached_property
    def fine_edges(self) -> np.ndarray:
        """Edges of the fine grid's cells: the grid's points and every coarse edge; for integer and
        datetime columns each rounded up to a whole unit, which keeps every integer in its coarse
        bin and leaves no cell without an integer. Only for a column with ``fine``."""
        low, high = self.bounds
        if isinstance(self.fine, tuple):
            points = np.asarray(self.fine, dtype=np.float64)
        else:
            width = width_units(self.fine, self.unit) if isinstance(self.fine, str) else float(self.fine)
            points = np.arange(low, high, width)
        points = np.concatenate([points[(points > low) & (points < high)], self.edges])
        if self.kind != "numeric":
            points = np.ceil(points)
        edges = np.unique(points)
        if self.has_top_cell:  # the upper bound's own cell [upper, upper + 1): one whole unit
            edges = np.append(edges, high + 1.0)
        return read_only(edges)

    @property
    def has_top_cell(self) -> bool:
        """Whether the fine grid gives the upper bound a cell of its own: an integer or datetime
        column whose listed fine edges end at ``upper`` (a top code, e.g. POVPIP's 501 "above 5 x
        the poverty line"). The coarse bins keep it inside their last bin."""
        return self.kind != "numeric" and isinstance(self.fine, tuple) and float(self.fine[-1]) == self.bounds[1]

    @property
    def n_fine_values(self) -> int:
        return len(self.fine_edges) - 1

    @property
    def n_fine_codes(self) -> int:
        """Codes of the fine grid, with the extra last code for "missing" when allowed."""
        return self.n_fine_values + int(self.missing)

    @cached_property
    def fine_bins(self) -> np.ndarray:
        """The coarse bin of each fine cell (the hierarchy that ties the grid to the bins)."""
        bins = bin_of(self.edges, self.fine_edges[:-1])
        return read_only(bins)

    @cached_property
    def fine_widths(self) -> np.ndarray:
        """How many values each fine cell holds: its integers (integer and datetime columns), else
        its length (numeric)."""
        if self.kind == "numeric":
            return read_only(np.diff(self.fine_edges))
        first, last = self.fine_integers
        return read_only((last - first + 1).astype(np.float64))

    @cached_property
    def fine_integers(self) -> tuple[np.ndarray, np.ndarray]:
        """(first, last) integer inside each fine cell, inclusive; the last cell is closed."""
        first, last = integers_in_bins(self.fine_edges)
        last[-1] = math.floor(self.bounds[1])  # a top cell [upper, upper + 1) holds upper alone
        return read_only(first), read_only(last)

    @cached_property
    def bin_integers(self) -> tuple[np.ndarray, np.ndarray]:
        """(first, last) integer inside each bin, inclusive; the last bin is closed."""
        first, last = integers_in_bins(self.edges)
        return read_only(first), read_only(last)

    @cached_property
    def sorted_codes(self) -> np.ndarray:
        """The listed codes, sorted (integer columns with ``codes``)."""
        codes = np.sort(np.asarray(self.codes, dtype=np.int64))
        return read_only(codes)

    @cached_property
    def code_bins(self) -> np.ndarray:
        """Bin index of each of :attr:`sorted_codes`."""
        return read_only(bin_of(self.edges, self.sorted_codes.astype(np.float64)))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with only the keys that differ from their defaults."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.kind in NUMBER_KINDS or self.kind == "datetime":
            out["lower"], out["upper"] = self.lower, self.upper
            out["bins"] = self.bins if isinstance(self.bins, (int, str)) else list(self.bins)
        if self.codes is not None:
            out["codes"] = list(self.codes)
        if self.other is not None:
            out["other"] = self.other
        if self.missing:
            out["missing"] = True
        if self.out_of_range != "error":
            out["out_of_range"] = self.out_of_range
        if self.decode != "uniform":
            out["decode"] = self.decode
        if self.fine is not None:
            out["fine"] = list(self.fine) if isinstance(self.fine, tuple) else self.fine
        if self.constant_per is not None:
            out["constant_per"] = self.constant_per
        return out


def read_only(array: np.ndarray) -> np.ndarray:
    """``array``, marked read-only: a column's cached arrays are shared by every user of its schema
    (an organisation's warm process keeps its schema for every task, ``client.app.warm_tables``)."""
    array.flags.writeable = False
    return array


def bin_of(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin index of each value: bins are [e_k, e_k+1) except the last, which is closed."""
    bins = np.searchsorted(edges, values, side="right").astype(np.int64) - 1
    return np.clip(bins, 0, len(edges) - 2)


def integers_in_bins(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first = np.ceil(edges[:-1]).astype(np.int64)
    last = np.ceil(edges[1:]).astype(np.int64) - 1
    last[-1] = math.floor(edges[-1])
    return first, last


# --------------------------------------------------------------------------- reading from a file


def column_from_dict(data: Any, position: int) -> Column:
    """Build one column from its schema-file mapping; every problem in one SchemaError."""
    if not isinstance(data, Mapping):
        raise SchemaError(f"column #{position + 1}: must be a mapping with at least name and "
                          f"kind, got {data!r}")
    label = f"column {data.get('name', f'#{position + 1}')!r}"
    kind = data.get("kind")
    allowed = COMMON_COLUMN_KEYS + KIND_KEYS.get(kind, tuple(dict.fromkeys(sum(KIND_KEYS.values(), ()))))
    problems = []
    for key in data:
        if key in allowed:
            continue
        if kind in KIND_KEYS and any(key in keys for keys in KIND_KEYS.values()):
            problems.append(f"{label}: key {key!r} does not apply to a {kind} column; "
                            f"remove it or change the kind")
        else:
            problems.extend(unknown_key_problems(label, {key: None}, allowed))
    fields = {key: as_tuple(value) if key in _TUPLE_KEYS else value
              for key, value in data.items() if key in allowed}
    fields.setdefault("name", None)
    fields.setdefault("kind", None)
    try:
        column = Column(**fields)
    except SchemaError as exc:
        problems.extend(exc.problems)
    if problems:
        raise SchemaError(bullets(f"{label} is invalid:", problems), problems)
    return column


# --------------------------------------------------------------------------- checks


def _column_problems(column: Column) -> list[str]:
    label = f"column {column.name!r}"
    if not isinstance(column.name, str) or not column.name:
        return [f"{label}: 'name' must be a non-empty text"]
    if column.kind not in KINDS:
        return [_unknown_kind_problem(label, column.kind)]
    problems = _missing_flag_problems(label, column)
    if column.kind in CATEGORY_KINDS:
        problems += _category_problems(label, column.categories)
        if column.other is not None and column.other not in (column.categories or ()):
            problems.append(f"{label}: other {column.other!r} must be one of the listed categories (the one "
                            f"every unlisted value maps to); add it to categories")
    elif column.kind in NUMBER_KINDS:
        problems += _bound_problems(label, column)
        if not problems:
            problems += _bin_problems(label, column)
        if not problems and column.codes is not None:
            problems += _code_problems(label, column)
        if not problems and column.fine is not None:
            problems += _fine_problems(label, column)
        problems += _choice_problems(label, "out_of_range", column.out_of_range, OUT_OF_RANGE_RULES)
        problems += _choice_problems(label, "decode", column.decode, DECODE_RULES)
    elif column.kind == "datetime":
        problems += _datetime_problems(label, column)
        if not problems and column.fine is not None:
            problems += _fine_problems(label, column)
        problems += _choice_problems(label, "out_of_range", column.out_of_range, OUT_OF_RANGE_RULES)
        problems += _choice_problems(label, "decode", column.decode, DECODE_RULES)
    for key in ("categories", "lower", "upper", "bins", "codes", "fine", "other", "constant_per"):
        if getattr(column, key) is not None and key not in KIND_KEYS[column.kind]:
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


def _bound_problems(label: str, column: Column) -> list[str]:
    problems = []
    for key in ("lower", "upper"):
        value = getattr(column, key)
        if value is None:
            problems.append(f"{label}: {column.kind} columns need '{key}' (inclusive), taken "
                            f"from public knowledge, never from the data")
        elif not is_number(value):
            problems.append(f"{label}: {key} must be a finite number, got {value!r}")
        elif column.kind == "integer" and value != math.floor(value):
            problems.append(f"{label}: an integer column needs integer bounds; {key} is {value}")
    if not problems and column.lower >= column.upper:
        problems.append(f"{label}: lower ({column.lower}) must be smaller than upper "
                        f"({column.upper}); fix or swap them")
    return problems


def _datetime_problems(label: str, column: Column) -> list[str]:
    problems = []
    for key in ("lower", "upper"):
        value = getattr(column, key)
        if value is None:
            problems.append(f"{label}: datetime columns need '{key}' (inclusive), an ISO date such as "
                            f"2020-01-01 or datetime such as 2020-01-01T00:00:00, from public knowledge")
        elif parse_iso(value) is None:
            problems.append(f"{label}: {key} must be an ISO date (2020-01-01) or datetime "
                            f"(2020-01-01T08:30:00), got {value!r}")
    if problems:
        return problems
    low, high = column.bounds
    if not low < high:
        return [f"{label}: lower ({column.lower}) must be before upper ({column.upper}); fix or swap them"]
    bins = column.bins
    unit = {"D": "days", "s": "seconds"}[column.unit]
    if isinstance(bins, str):
        width = width_units(bins, column.unit)
        if width is None or width <= 0 or width != int(width):
            return [f"{label}: bins {bins!r} is not a positive whole number of {unit}; use a width "
                    f"such as 30D or 7D (or 12h when the bounds have times), or a number of bins"]
        count = int(np.ceil((high - low) / width))
    elif isinstance(bins, int) and not isinstance(bins, bool) and bins >= 1:
        count = bins
    else:
        return [f"{label}: bins must be a number of equal-width bins (e.g. 12) or a bin width such "
                f"as 30D, got {bins!r}"]
    if count > MAX_BINS:
        return [f"{label}: bins {bins!r} make {count} bins between {column.lower} and {column.upper}; "
                f"use at most {MAX_BINS} (a wider width or fewer bins)"]
    first, last = column.bin_integers
    if (first > last).any():
        return [f"{label}: {bins} bins between {column.lower} and {column.upper} leave bins without a "
                f"whole one of their {unit}; use fewer bins or a bin width such as 30D"]
    return []


def _bin_problems(label: str, column: Column) -> list[str]:
    bins = column.bins
    if bins is None:
        return [f"{label}: {column.kind} columns need 'bins': a number of equal-width bins "
                f"(e.g. bins: 10) or a list of edges from lower to upper"]
    if isinstance(bins, int) and not isinstance(bins, bool):
        if bins < 1:
            return [f"{label}: bins must be at least 1, got {bins}"]
    elif not isinstance(bins, tuple) or len(bins) < 2 or not all(map(is_number, bins)):
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


def _fine_problems(label: str, column: Column) -> list[str]:
    fine = column.fine
    if column.codes is not None:
        return [f"{label}: 'fine' does not apply to a column with listed 'codes' (decoding picks among the "
                f"codes); remove one of the two"]
    if column.kind == "datetime":
        width = width_units(fine, column.unit) if isinstance(fine, str) else None
        if width is None or width <= 0 or width != int(width):
            return [f"{label}: fine must be a width such as 1D (or 1h when the bounds have times), got {fine!r}"]
    elif isinstance(fine, tuple):
        if len(fine) < 1 or not all(map(is_number, fine)) or any(a >= b for a, b in zip(fine, fine[1:])):
            return [f"{label}: fine must be a width (e.g. 1) or a strictly increasing list of edges, got {list(fine)}"]
        low, high = column.bounds
        if fine[0] < low or fine[-1] > high:
            return [f"{label}: fine edges must lie within [{column.lower}, {column.upper}]; they run from "
                    f"{fine[0]} to {fine[-1]}"]
    elif not is_number(fine) or fine <= 0:
        return [f"{label}: fine must be a positive width (e.g. 1 for whole units) or a list of edges, got {fine!r}"]
    elif column.kind == "integer" and fine != math.floor(fine):
        return [f"{label}: an integer column's fine width must be a whole number, got {fine}"]
    if not isinstance(fine, tuple):  # before the grid is built: a tiny width would make millions of points
        width = width_units(fine, column.unit) if isinstance(fine, str) else fine
        low, high = column.bounds
        if (high - low) / width > MAX_FINE_CELLS:
            return [f"{label}: fine {fine!r} makes {math.ceil((high - low) / width)} cells between {column.lower} "
                    f"and {column.upper}; use at most {MAX_FINE_CELLS} (a wider width or a list of edges)"]
    if column.n_fine_values > MAX_FINE_CELLS:
        return [f"{label}: fine {fine!r} makes {column.n_fine_values} cells between {column.lower} and "
                f"{column.upper}; use at most {MAX_FINE_CELLS} (a wider width or fewer edges)"]
    return []


def _bin_text(edges: np.ndarray, k: int) -> str:
    closing = "]" if k == len(edges) - 2 else ")"
    return f"bin #{k} [{edges[k]:g}, {edges[k + 1]:g}{closing}"


def _empty_integer_bin_problems(label: str, column: Column) -> list[str]:
    first, last = column.bin_integers
    return [f"{label}: {_bin_text(column.edges, k)} contains no integer; merge it with a "
            f"neighbour or use fewer bins" for k in np.flatnonzero(first > last)]


def _code_problems(label: str, column: Column) -> list[str]:
    codes = column.codes
    if not isinstance(codes, tuple) or not codes:
        return [f"{label}: 'codes' must be a non-empty list of integers (the public code "
                f"list), got {codes!r}"]
    wrong = [code for code in codes if not is_integer(code)]
    if wrong:
        return [f"{label}: codes must be integers; {wrong[0]!r} is not "
                f"({len(wrong)} such entries)"]
    problems = [f"{label}: code {code} is listed more than once; list each code once"
                for code in sorted({c for c in codes if codes.count(c) > 1})]
    outside = [code for code in codes if not column.lower <= code <= column.upper]
    if outside:
        problems.append(f"{label}: codes {outside[:5]} lie outside [{column.lower}, "
                        f"{column.upper}]; widen the bounds or fix the code list")
        return problems
    empty = np.setdiff1d(np.arange(column.n_values), column.code_bins)
    problems += [f"{label}: {_bin_text(column.edges, int(k))} contains none of the listed "
                 f"codes, so it could never be decoded; merge it with a neighbour or move its "
                 f"edges" for k in empty]
    return problems
