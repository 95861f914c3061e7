"""CLI runners: ``fedsynth schema draft`` and ``fedsynth schema validate``.

Both print what to do next and return an exit code instead of raising: 0 for success, 1 when
``validate`` finds problems in the data (column values or broken rules), 2 when a file cannot
be read or written. ``validate`` prints example rows: run it where the data lives.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .columns import KINDS
from .draft import draft_schema, draft_warning
from .io import read_text_table, writable_format
from .model import Schema, load_schema
from .validate import is_blank


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
        df = read_text_table(data_path, na_values)
        schema = draft_schema(df, name=data_path.stem, na_values=na_values)
        text = _draft_text(schema, Path(out_path) if out_path is not None else None)
        if out_path is not None:
            Path(out_path).write_text(text, encoding="utf-8")
    except (OSError, ValueError) as exc:  # SchemaError and pandas parse errors are ValueErrors
        print(f"fedsynth schema draft: {exc}", file=sys.stderr)
        return 2
    print(draft_warning(), file=sys.stderr)
    blank = _blank_columns(df)
    if blank:
        print(f"NOTE: blank cells found in column(s) {', '.join(blank)}; they were read as MISSING "
              f"values (those columns got missing: true). If a blank means something else in "
              f"your data, fill it in before any job.", file=sys.stderr)
    if out_path is None:
        sys.stdout.write(text)
    summary_stream = sys.stdout if out_path is not None else sys.stderr
    print(_draft_summary(schema, len(df), out_path), file=summary_stream)
    return 0


def _blank_columns(df) -> list[str]:
    """Columns holding at least one blank cell (read as missing)."""
    return [str(name) for name in df.columns if is_blank(df[name].dropna()).any()]


def _draft_text(schema: Schema, out_path: Path | None) -> str:
    fmt = "yaml" if out_path is None else writable_format(out_path)
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
    """CLI ``fedsynth schema validate``: print the report (column problems and broken
    rules, each with a count and up to 5 example rows); exit 0 ok, 1 problems in the data,
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
