"""Schema files and data files as text: strict readers, writers, and the CSV convention.

A schema file is YAML, JSON or TOML; a key written twice in one mapping is an error (plain
parsers keep the last value silently, so a signed-off file could say two things). Data files
(CSV, or Parquet by the ``.parquet`` suffix) are read with every cell as text so that type
checking is the schema's; the schema's ``na_values`` and blank cells mean missing (see
:mod:`.validate`). A file that cannot be read at all raises :class:`TableFileError`, whose
message names the file and what to do; it holds no cell of the file.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise SchemaError(f"schema file {path} {what}; give the path of the job's public schema "
                          f"(draft one with `fedsynth schema draft DATA`)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SchemaError(f"schema file {path} is not UTF-8 text; save it as UTF-8") from None
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


class TableFileError(ValueError):
    """A data file that cannot be read as a table (missing, unreadable, empty, not CSV/Parquet)."""


PARQUET_SUFFIXES = (".parquet", ".pq")


def read_text_table(path: str | Path, na_values: Sequence[str]) -> pd.DataFrame:
    """A CSV or Parquet file (by suffix) with every cell as text.

    ``na_values`` become missing; pandas' default NA tokens ("NA", "null") do not. Parquet's
    typed cells become the text a CSV would hold (nulls stay missing). Raises
    :class:`TableFileError` naming the file and what to do when it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise TableFileError(f"data file {path} {what}; give the path of a .csv or .parquet file")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return as_text_frame(pd.read_parquet(path, engine="pyarrow"))
        table = pd.read_csv(path, dtype=str, na_values=list(na_values), keep_default_na=False,
                            skipinitialspace=True, encoding="utf-8")
    except PermissionError:
        raise TableFileError(f"data file {path} cannot be read (permission denied); "
                             f"check its permissions") from None
    except pd.errors.EmptyDataError:
        raise TableFileError(f"data file {path} is empty; it needs a header line with the "
                             f"schema's column names, then one line per row") from None
    except UnicodeDecodeError as exc:
        raise TableFileError(f"data file {path} is not UTF-8 text (byte {exc.start} cannot be "
                             f"decoded); if it is Parquet, name it *.parquet, otherwise save "
                             f"it as a UTF-8 CSV") from None
    except pd.errors.ParserError as exc:  # says which line has how many fields, no cell
        raise TableFileError(f"data file {path} is not a readable CSV file ({str(exc).strip()}); every line "
                             f"needs as many comma-separated fields as the header") from None
    except (OSError, ValueError) as exc:
        kind = "Parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "CSV"
        raise TableFileError(f"data file {path} is not a readable {kind} file "
                             f"({type(exc).__name__}); check its format") from None
    _refuse_unsplit_header(path, table)
    _refuse_duplicate_header(path)
    return table


def _refuse_duplicate_header(path: Path) -> None:
    """pandas renames a repeated header name ``a`` to ``a.1``; say so instead."""
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                         skipinitialspace=True).iloc[0].tolist()
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise TableFileError(f"data file {path}: header name(s) {', '.join(map(repr, repeated))} "
                             f"appear more than once; keep one column of each name")


def as_text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed cells (Parquet, SQL) as the text a CSV would hold; missing stays missing."""
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    return frame.map(lambda v: np.nan if pd.isna(v) else _cell_text(v)).astype(object)


def _cell_text(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _refuse_unsplit_header(path: Path, table: pd.DataFrame) -> None:
    """A one-column table whose header holds ``;``, tab or ``|``: a CSV with another delimiter."""
    if len(table.columns) != 1:
        return
    header = str(table.columns[0])
    for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
        if delimiter in header:
            raise TableFileError(f"data file {path}: its header is one column {header!r} "
                                 f"separated by {name}; fedsynth reads comma-separated files: "
                                 f"save it with commas (or as Parquet)")


def _mapping_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON hook: a key written twice is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object; keep one")
        out[key] = value
    return out


class _StrictYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser: 7x faster
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
