"""Structural rules: public facts about how columns relate, agreed before any data is touched.

A rule is public metadata like a category list: it comes from a code book or a survey's
documentation ("MSP is N/A for persons under 15"), never from the rows. Two forms::

    rules:
      # implication: holds when the `if` part is false or the `then` part is true
      - {name: under-15-not-married, if: {AGEP: {max: 14}}, then: {MSP: missing}}
      # hierarchy: the child's value fixes the parent's; each parent category lists the
      # child values it allows (the lists must not overlap)
      - name: industry-in-sector
        parent: INDP_CAT
        child: INDP
        map: {"0": {min: 170, max: 290}, "1": {min: 370, max: 490}}

A condition on one column is ``missing``, ``present``, or a mapping of ``in`` (a list of
categories or values), ``min``/``max`` (inclusive bounds, numeric and integer columns) and
``less_than`` (another numeric column; both present and this one strictly smaller). Keys in
one mapping must all hold; several columns in ``if``/``then`` must all hold. A mapping
condition is false on a missing value. A hierarchy holds when the parent or the child is
missing (link their missingness with two implications), and otherwise when the child's
value satisfies the parent's entry; a parent category without an entry allows no child.

Rules are checked against the columns when the schema loads; evaluated on a decoded frame
(typed values as ``Schema.decode`` returns them, missing as NA) they give each row's
violations. Using them to filter synthetic rows is post-processing of the released model:
it costs no privacy budget.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .columns import (CATEGORY_KINDS, NUMBER_KINDS, Column, SchemaError, bullets, is_integer,
                      is_number, unknown_key_problems)

STATES = ("missing", "present")
CONDITION_KEYS = ("in", "min", "max", "less_than")
IMPLICATION_KEYS = ("name", "if", "then")
HIERARCHY_KEYS = ("name", "parent", "child", "map")


@dataclass(frozen=True)
class Condition:
    """What one column must satisfy: a ``state`` (missing/present) or in/min/max/less_than."""

    column: str
    state: str | None = None
    values: tuple[Any, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None
    less_than: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,) if self.less_than is None else (self.column, self.less_than)

    def holds(self, frame: pd.DataFrame) -> np.ndarray:
        """Per row of a decoded frame: does the condition hold? (False on missing values.)"""
        series = frame[self.column]
        present = ~series.isna().to_numpy()
        if self.state is not None:
            return present if self.state == "present" else ~present
        ok = present.copy()
        if self.values is not None:
            ok &= series.isin(list(self.values)).to_numpy(dtype=bool, na_value=False)
        if self.min is not None or self.max is not None or self.less_than is not None:
            ok &= self.accepts(_numbers(series), _numbers(frame[self.less_than])
                               if self.less_than is not None else None)
        return ok

    def accepts(self, values: np.ndarray, smaller_than: np.ndarray | None = None) -> np.ndarray:
        """Per present value: does it satisfy in/min/max (and ``< smaller_than``)?"""
        ok = np.ones(len(values), dtype=bool)
        if self.values is not None:
            ok &= np.isin(values, np.asarray(self.values, dtype=values.dtype))
        if self.min is not None:
            ok &= values >= self.min
        if self.max is not None:
            ok &= values <= self.max
        if smaller_than is not None:
            ok &= values < smaller_than
        return ok

    def to_spec(self) -> str | dict[str, Any]:
        if self.state is not None:
            return self.state
        spec: dict[str, Any] = {}
        if self.values is not None:
            spec["in"] = list(self.values)
        for key in ("min", "max", "less_than"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        return spec

    def describe(self) -> str:
        if self.state is not None:
            return f"{self.column} is {self.state}"
        parts = []
        if self.values is not None:
            parts.append(f"{self.column} in {list(self.values)}")
        if self.min is not None:
            parts.append(f"{self.column} >= {self.min}")
        if self.max is not None:
            parts.append(f"{self.column} <= {self.max}")
        if self.less_than is not None:
            parts.append(f"{self.column} < {self.less_than}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Implication:
    """``if`` all of ``when`` hold, ``then`` all of ``then`` must hold."""

    name: str
    when: tuple[Condition, ...]
    then: tuple[Condition, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for cond in self.when + self.then for c in cond.columns))

    def violations(self, frame: pd.DataFrame) -> np.ndarray:
        return _all_hold(self.when, frame) & ~_all_hold(self.then, frame)

    @property
    def consequents(self) -> tuple[str, ...]:
        """The columns a repair may change: those the ``then`` part constrains."""
        return tuple(dict.fromkeys(c for cond in self.then for c in cond.columns))

    def repair_group(self, frame: pd.DataFrame) -> np.ndarray:
        """A row may take its consequents from another row of its group: the ``if`` part holds."""
        return _all_hold(self.when, frame)

    def describe(self) -> str:
        return (f"if {' and '.join(c.describe() for c in self.when)} then "
                f"{' and '.join(c.describe() for c in self.then)}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "if": {c.column: c.to_spec() for c in self.when},
                "then": {c.column: c.to_spec() for c in self.then}}


@dataclass(frozen=True)
class Hierarchy:
    """The ``child`` column's value determines the ``parent`` category: ``map`` lists, per
    parent category, the child values it allows (pairwise disjoint)."""

    name: str
    parent: str
    child: str
    map: tuple[tuple[str, Condition], ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.parent, self.child)

    @property
    def consequents(self) -> tuple[str, ...]:
        """The column a repair may change: the child."""
        return (self.child,)

    def repair_group(self, frame: pd.DataFrame) -> np.ndarray:
        """A row may take its child value from another row of its group: the same parent."""
        return frame[self.parent].astype("string").fillna("").to_numpy(dtype=str)

    def allowed(self, parent_value: str) -> Condition | None:
        """The condition the child must meet under ``parent_value`` (None: no child allowed)."""
        return dict(self.map).get(parent_value)

    def violations(self, frame: pd.DataFrame) -> np.ndarray:
        parent = frame[self.parent]
        both = ~parent.isna().to_numpy() & ~frame[self.child].isna().to_numpy()
        fits = np.zeros(len(frame), dtype=bool)
        for value, condition in self.map:
            fits |= parent.isin([value]).to_numpy(dtype=bool, na_value=False) & condition.holds(frame)
        return both & ~fits

    def describe(self) -> str:
        return f"{self.child} must lie in the range its {self.parent} category lists"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "parent": self.parent, "child": self.child,
                "map": {value: condition.to_spec() for value, condition in self.map}}


Rule = Implication | Hierarchy


def rule_violations(rules: tuple[Rule, ...], frame: pd.DataFrame) -> pd.DataFrame:
    """Booleans, rows x rule names: True where the row breaks the rule."""
    absent = sorted({c for rule in rules for c in rule.columns if c not in frame.columns})
    if absent:
        raise SchemaError(f"the frame lacks column(s) {absent} that the schema's rules use; "
                          f"pass a frame decoded with this schema (Schema.decode)")
    return pd.DataFrame({rule.name: rule.violations(frame) for rule in rules},
                        index=frame.index, columns=[rule.name for rule in rules], dtype=bool)


def _all_hold(conditions: tuple[Condition, ...], frame: pd.DataFrame) -> np.ndarray:
    ok = np.ones(len(frame), dtype=bool)
    for condition in conditions:
        ok &= condition.holds(frame)
    return ok


def _numbers(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


# --------------------------------------------------------------------------- reading from a file


def rule_from_dict(data: Any, position: int) -> Rule:
    """Read one rule's syntax (keys and shapes); :func:`rule_problems` checks its columns."""
    if not isinstance(data, Mapping):
        raise SchemaError(f"rule #{position + 1}: must be a mapping with name and either if/then "
                          f"or parent/child/map, got {data!r}")
    name = data.get("name")
    label = f"rule {name!r}" if name is not None else f"rule #{position + 1}"
    is_hierarchy = any(key in data for key in ("parent", "child", "map"))
    allowed = HIERARCHY_KEYS if is_hierarchy else IMPLICATION_KEYS
    problems = unknown_key_problems(label, data, allowed)
    if not isinstance(name, str) or not name:
        problems.append(f"{label}: 'name' must be a non-empty text that says what the rule "
                        f"means, e.g. under-15-not-married")
    missing = [key for key in allowed if key not in data and key != "name"]
    if missing:
        problems.append(f"{label}: needs {', '.join(repr(k) for k in missing)}; a rule is either "
                        f"{{name, if, then}} or {{name, parent, child, map}}")
    if problems:
        raise SchemaError(bullets(f"{label} is invalid:", problems), problems)
    if is_hierarchy:
        return _hierarchy_from_dict(data, label)
    sides = {}
    for key in ("if", "then"):
        try:
            sides[key] = _conditions(data[key], f"{label}, {key!r}")
        except SchemaError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SchemaError(bullets(f"{label} is invalid:", problems), problems)
    return Implication(name, sides["if"], sides["then"])


def _hierarchy_from_dict(data: Mapping[str, Any], label: str) -> Hierarchy:
    problems = [f"{label}: {key!r} must be a column name, got {data[key]!r}"
                for key in ("parent", "child") if not isinstance(data[key], str)]
    entries = data["map"]
    if not isinstance(entries, Mapping) or not entries:
        problems.append(f"{label}: 'map' must be a non-empty mapping from each {data['parent']!r} "
                        f"category to the {data['child']!r} values it allows, e.g. "
                        f"{{\"0\": {{min: 170, max: 290}}}}")
        entries = {}
    conditions = []
    for value, spec in entries.items():
        try:
            condition = _condition(data["child"], spec, f"{label}, map entry {value!r}")
        except SchemaError as exc:
            problems.extend(exc.problems)
            continue
        if condition.state is not None or condition.less_than is not None:
            problems.append(f"{label}, map entry {value!r}: use in/min/max to list the child's "
                            f"values; missing/present/less_than do not apply here")
        conditions.append((value, condition))
    if problems:
        raise SchemaError(bullets(f"{label} is invalid:", problems), problems)
    return Hierarchy(data["name"], data["parent"], data["child"], tuple(conditions))


def _conditions(data: Any, where: str) -> tuple[Condition, ...]:
    if not isinstance(data, Mapping) or not data:
        raise SchemaError(f"{where}: must be a non-empty mapping from column to condition, e.g. "
                          f"{{AGEP: {{max: 14}}}} or {{MSP: missing}}; got {data!r}")
    problems, conditions = [], []
    for column, spec in data.items():
        try:
            conditions.append(_condition(column, spec, where))
        except SchemaError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SchemaError(bullets(f"{where} is invalid:", problems), problems)
    return tuple(conditions)


def _condition(column: Any, spec: Any, where: str) -> Condition:
    label = f"{where}, column {column!r}"
    if spec in STATES:
        return Condition(column, state=spec)
    if not isinstance(spec, Mapping) or not spec:
        raise SchemaError(f"{label}: a condition is missing, present, or a mapping of "
                          f"{', '.join(CONDITION_KEYS)}; got {spec!r}")
    problems = unknown_key_problems(label, spec, CONDITION_KEYS)
    values = spec.get("in")
    if values is not None and (not isinstance(values, list) or not values):
        problems.append(f"{label}: 'in' must be a non-empty list, got {values!r}")
    for key in ("min", "max"):
        if key in spec and not is_number(spec[key]):
            problems.append(f"{label}: {key} must be a finite number, got {spec[key]!r}")
    if "less_than" in spec and not isinstance(spec["less_than"], str):
        problems.append(f"{label}: less_than must be a column name, got {spec['less_than']!r}")
    if problems:
        raise SchemaError(bullets(f"{label} is invalid:", problems), problems)
    return Condition(column, values=tuple(values) if values is not None else None,
                     min=spec.get("min"), max=spec.get("max"), less_than=spec.get("less_than"))


# --------------------------------------------------------------------------- checks against columns


def rule_problems(rules: tuple[Rule, ...], columns: tuple[Column, ...]) -> list[str]:
    """Every way the rules disagree with the columns (unknown names, values, bounds)."""
    by_name = {column.name: column for column in columns}
    problems = []
    names = [rule.name for rule in rules]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"rule {name!r} is defined {names.count(name)} times; rule names must "
                        f"be unique")
    for rule in rules:
        if not isinstance(rule, (Implication, Hierarchy)):
            problems.append(f"rules must be Implication or Hierarchy objects, got {rule!r}")
        elif isinstance(rule, Hierarchy):
            problems += _hierarchy_problems(rule, by_name)
        else:
            for condition in rule.when + rule.then:
                problems += _condition_problems(f"rule {rule.name!r}", condition, by_name)
    return problems


def _unknown_column(label: str, name: str, by_name: dict[str, Column]) -> str | None:
    if name in by_name:
        return None
    guess = difflib.get_close_matches(str(name), list(by_name), n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return f"{label}: unknown column {name!r}{hint}; rules may only name the schema's columns"


def _condition_problems(label: str, condition: Condition, by_name: dict[str, Column]) -> list[str]:
    unknown = [_unknown_column(label, name, by_name) for name in condition.columns]
    if any(unknown):
        return [problem for problem in unknown if problem]
    column = by_name[condition.column]
    where = f"{label}: column {column.name!r}"
    if condition.state == "missing" and not column.missing:
        return [f"{where} never has missing values (missing: false), so 'missing' can never "
                f"hold; fix the rule or set missing: true on the column"]
    problems = []
    if condition.values is not None:
        problems += _value_problems(where, column, condition.values)
    if condition.min is not None or condition.max is not None or condition.less_than is not None:
        problems += _bound_problems(where, column, condition)
    if condition.less_than is not None:
        other = by_name[condition.less_than]
        if other.kind not in NUMBER_KINDS or other.name == column.name:
            problems.append(f"{where}: less_than needs another numeric or integer column, got "
                            f"{other.name!r} ({other.kind})")
    return problems


def _value_problems(where: str, column: Column, values: tuple[Any, ...]) -> list[str]:
    if column.kind == "datetime":
        return [f"{where}: rules cannot name a datetime column yet; remove the condition"]
    if column.kind in CATEGORY_KINDS:
        wrong = [v for v in values if not isinstance(v, str)]
        if wrong:
            return [f"{where}: category {wrong[0]!r} is a {type(wrong[0]).__name__}, not text; "
                    f"quote it (\"{wrong[0]}\") as in the column's categories"]
        unknown = [v for v in values if v not in column.categories]
        return [f"{where}: category {v!r} is not among the column's categories "
                f"{list(column.categories)}; use one of them" for v in unknown]
    if column.kind == "boolean":
        return [f"{where}: {v!r} is not a boolean; use in: [true] or in: [false]"
                for v in values if not isinstance(v, bool)]
    wrong = [v for v in values if not (is_integer(v) if column.kind == "integer" else is_number(v))]
    if wrong:
        return [f"{where}: {wrong[0]!r} is not a valid {column.kind} value"]
    problems = [f"{where}: value {v} lies outside the column's range [{column.lower}, "
                f"{column.upper}]" for v in values if not column.lower <= v <= column.upper]
    if column.codes is not None:
        problems += [f"{where}: value {v} is not in the column's list of codes"
                     for v in values if v not in column.codes]
    return problems


def _bound_problems(where: str, column: Column, condition: Condition) -> list[str]:
    if column.kind not in NUMBER_KINDS:
        return [f"{where}: min/max/less_than apply to numeric and integer columns, not to a "
                f"{column.kind} column; list the allowed values with in: [...]"]
    problems = [f"{where}: {key} {getattr(condition, key)} lies outside the column's range "
                f"[{column.lower}, {column.upper}]; a bound there can never matter, so it is "
                f"probably a typo" for key in ("min", "max")
                if getattr(condition, key) is not None
                and not column.lower <= getattr(condition, key) <= column.upper]
    if condition.min is not None and condition.max is not None and condition.min > condition.max:
        problems.append(f"{where}: min {condition.min} is above max {condition.max}; swap them")
    return problems


def _hierarchy_problems(rule: Hierarchy, by_name: dict[str, Column]) -> list[str]:
    label = f"rule {rule.name!r}"
    unknown = [_unknown_column(label, name, by_name) for name in rule.columns]
    if any(unknown):
        return [problem for problem in unknown if problem]
    parent = by_name[rule.parent]
    if parent.kind not in CATEGORY_KINDS or rule.parent == rule.child:
        return [f"{label}: parent {rule.parent!r} must be a categorical or ordinal column other "
                f"than the child, got a {parent.kind} column"]
    problems = [f"{label}: map entry {value!r} is not a category of {rule.parent!r} "
                f"{list(parent.categories)}; use the parent's categories as keys" for value, _ in rule.map
                if value not in parent.categories]
    for _, condition in rule.map:
        problems += _condition_problems(label, condition, by_name)
    if not problems:
        problems += _overlap_problems(rule, by_name[rule.child])
    return problems


def _overlap_problems(rule: Hierarchy, child: Column) -> list[str]:
    problems = []
    for i, (first, a) in enumerate(rule.map):
        for second, b in rule.map[i + 1:]:
            if _overlap(a, b, child):
                problems.append(f"rule {rule.name!r}: the {rule.child!r} values of {rule.parent} "
                                f"{first!r} ({a.describe()}) and {second!r} ({b.describe()}) "
                                f"overlap; each child value must belong to one parent")
    return problems


def _overlap(a: Condition, b: Condition, child: Column) -> bool:
    for one, other in ((a, b), (b, a)):
        if one.values is not None:
            values = np.asarray(one.values, dtype=object if child.kind in CATEGORY_KINDS else float)
            return bool((one.accepts(values) & other.accepts(values)).any())
    low = max(x for x in (a.min, b.min, child.lower) if x is not None)
    high = min(x for x in (a.max, b.max, child.upper) if x is not None)
    return low <= high
