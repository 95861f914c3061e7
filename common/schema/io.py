"""Schema files and data files as text: strict readers, writers, and the CSV convention.

A schema file is YAML, JSON or TOML; a key written twice in one mapping is an error (plain
parsers keep the last value silently, so a signed-off file could say two things). Data files
are read with every cell as text so that type checking is the schema's, and only the
schema's ``na_values`` mean missing.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .columns import SchemaError

READABLE_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


def read_mapping(path: Path) -> Mapping[str, Any]:
    """The top-level mapping of a ``.yaml``/``.yml``, ``.json`` or ``.toml`` schema file."""
    suffix = path.suffix.lower()
    if suffix not in READABLE_SUFFIXES:
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
    return data


def writable_format(path: Path) -> str:
    """``yaml`` or ``json`` by the file's extension (TOML is read-only: no writer in stdlib)."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise SchemaError(f"{path}: can only write .yaml, .yml or .json schema files, not {suffix!r}")


def dump_text(data: Mapping[str, Any], fmt: str) -> str:
    """A schema mapping as YAML or JSON text."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True,
                              default_flow_style=None, width=100)
    raise ValueError(f"unknown schema format {fmt!r}; use 'yaml' or 'json'")


def read_text_table(path: str | Path, na_values: Sequence[str]) -> pd.DataFrame:
    """A CSV file with every cell as text; ``na_values`` become missing, pandas' default NA
    tokens ("NA", "null", "") do not."""
    return pd.read_csv(path, dtype=str, na_values=list(na_values), keep_default_na=False,
                       skipinitialspace=True)


def _mapping_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON hook: a key written twice is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object; keep one")
        out[key] = value
    return out


class _StrictYamlLoader(yaml.SafeLoader):
    """Safe YAML loader that rejects a key written twice in one mapping."""

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
