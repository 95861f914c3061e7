"""Bad input never crashes the tool: one table of files, schemas, tables, options and configs.

Each case runs the real CLI in-process (``fedsynth.cli.main``) and checks what the user sees:
exit code 2, a message on stderr that names the file/column/option/value, no traceback, and no
release and no ``.partial`` folder left behind. Every refusal happens before Flower starts, so
the table is fast. Two cases run a real process (``--version``, and a traceback check).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

import fedsynth
from fedsynth.cli import main
from fedsynth.server.job import staged

ADULT = Path(fedsynth.__file__).parent / "data" / "adult.csv"
ADULT_SCHEMA = Path(fedsynth.__file__).parent / "data" / "adult.schema.yaml"

SMALL_SCHEMA = """\
name: small
label: y
na_values: ["?"]
columns:
  - {name: age, kind: integer, lower: 0, upper: 120, bins: [0, 18, 65, 120]}
  - {name: sex, kind: categorical, categories: [F, M]}
  - {name: y, kind: categorical, categories: ["0", "1"]}
"""
SMALL_ROWS = "age,sex,y\n30,F,0\n41,M,1\n52,F,1\n63,M,0\n70,F,0\n25,M,1\n"


@dataclass(frozen=True)
class Case:
    """``argv`` after ``fedsynth``; ``files`` written in tmp_path first (text or bytes);
    ``{tmp}`` in argv is tmp_path; OUT is ``{tmp}/release``."""

    id: str
    argv: tuple[str, ...]
    expected: tuple[str, ...]
    files: tuple[tuple[str, str | bytes], ...] = ()


def sim(*args: str, files: tuple = (), expect: str | tuple[str, ...] = ()) -> Callable[[str], Case]:
    expected = (expect,) if isinstance(expect, str) else expect
    return lambda name: Case(name, ("simulate", "--out", "{tmp}/release", *args), expected, files)


def small(*args: str, rows: str = SMALL_ROWS, schema: str = SMALL_SCHEMA, expect="") -> Callable[[str], Case]:
    """A simulate run on a small table and schema written in tmp_path."""
    return sim("--data", "{tmp}/t.csv", "--schema", "{tmp}/s.yaml", *args,
               files=(("t.csv", rows), ("s.yaml", schema)), expect=expect)


def cmd(*argv: str, files: tuple = (), expect: str | tuple[str, ...] = ()) -> Callable[[str], Case]:
    expected = (expect,) if isinstance(expect, str) else expect
    return lambda name: Case(name, argv, expected, files)


NO_LABEL_SCHEMA = SMALL_SCHEMA.replace("label: y", "label: null")
PARQUET_MAGIC = b"PAR1" + bytes(range(256)) * 4 + b"PAR1"

CASES = {
    # ---- data files
    "data-missing": sim("--data", "{tmp}/nope.csv", expect="data file {tmp}/nope.csv does not exist"),
    "data-is-a-folder": sim("--data", "{tmp}", expect="is a folder"),
    "data-empty-0-bytes": sim("--data", "{tmp}/e.csv", files=(("e.csv", b""),), expect="is empty"),
    "data-binary": sim("--data", "{tmp}/b.csv", files=(("b.csv", bytes(range(128, 256)) * 8),),
                       expect=("is not UTF-8 text", "name it *.parquet")),
    "data-broken-parquet": sim("--data", "{tmp}/b.parquet", files=(("b.parquet", PARQUET_MAGIC),),
                               expect="is not a readable Parquet file"),
    "data-semicolons": small(rows=SMALL_ROWS.replace(",", ";"), expect="separated by semicolons"),
    "data-tabs": small(rows=SMALL_ROWS.replace(",", "\t"), expect="separated by tabs"),
    "data-duplicate-header": small(rows="age,sex,sex,y\n30,F,F,0\n", expect="'sex' appear more than once"),
    "data-ragged-row": small(rows=SMALL_ROWS + "1,2,3,4,5\n",
                             expect=("is not a readable CSV file", "Expected 3 fields in line 8, saw 5")),
    "data-header-only": small(rows="age,sex,y\n", expect="the table has no rows"),
    "data-unreadable": small(expect="{tmp}/t.csv cannot be read (permission denied)"),  # chmod 000 below
    # ---- schema files
    "schema-missing": sim("--schema", "{tmp}/none.yaml", expect="schema file {tmp}/none.yaml does not exist"),
    "schema-bad-suffix": sim("--schema", "{tmp}/s.txt", files=(("s.txt", SMALL_SCHEMA),),
                             expect="unknown schema file type '.txt'"),
    "schema-invalid-yaml": small(schema="name: [unclosed\ncolumns: {", expect="not a readable yaml file"),
    "schema-not-utf8": small(schema=b"\xff\xfe\x00name", expect="is not UTF-8 text"),
    "schema-top-level-list": small(schema="- a\n- b\n", expect="the top level must be a mapping"),
    "schema-duplicate-key": small(schema=SMALL_SCHEMA.replace("label: y", "label: y\nlabel: sex"),
                                  expect="key 'label' appears twice"),
    "schema-duplicate-columns": small(
        schema=SMALL_SCHEMA + "  - {name: sex, kind: categorical, categories: [F, M]}\n",
        expect="column 'sex' is defined 2 times"),
    "schema-unknown-kind": small(schema=SMALL_SCHEMA.replace("kind: categorical, categories: [F, M]", "kind: text"),
                                 expect="unknown kind 'text'"),
    "schema-no-bounds": small(schema=SMALL_SCHEMA.replace("lower: 0, upper: 120, bins: [0, 18, 65, 120]", "bins: 3"),
                              expect="integer columns need 'lower'"),
    "schema-label-not-a-column": small(schema=SMALL_SCHEMA.replace("label: y", "label: Z"),
                                       expect="label 'Z' is not a column"),
    "schema-no-columns": small(schema="name: x\ncolumns: []\n", expect="'columns' must be a non-empty list"),
    "schema-draft": small(schema=SMALL_SCHEMA.replace("na_values", "draft: true\nna_values"),
                          expect=("is a DRAFT", "delete line 3 of {tmp}/s.yaml (`draft: true`)")),
    "schema-explicit-labels-without-label-column": small(
        "--labels", "sample", schema=NO_LABEL_SCHEMA, expect="labels 'sample' need a teacher"),
    "schema-default-labels-without-label-column": small(
        "--rows", "0", schema=NO_LABEL_SCHEMA,
        expect=("names no label column", "--labels generator", "rows (synthetic rows to release) must be at least 1")),
    # ---- tables that break the schema
    "table-unknown-category": small(rows=SMALL_ROWS + "40,X,0\n",
                                    expect=("column 'sex', unknown_category", "'X'")),
    "table-blank-in-non-nullable": small(rows=SMALL_ROWS + ",F,0\n", expect="column 'age', missing_value"),
    "table-na-token-in-non-nullable": small(rows=SMALL_ROWS + "?,F,0\n", expect="column 'age', missing_value"),
    "table-out-of-range": small(rows=SMALL_ROWS + "130,F,0\n", expect=("column 'age', out_of_range", "[0, 120]")),
    "table-text-in-number": small(rows=SMALL_ROWS + "old,F,0\n", expect=("column 'age', wrong_type", "'old'")),
    "table-missing-column": small(rows="age,y\n30,0\n", expect="column 'sex', missing_column"),
    "table-extra-column": small(rows="age,sex,y,zip\n30,F,0,02134\n", expect="column 'zip', unknown_column"),
    # ---- options
    "rows-negative": sim("--rows", "-5", expect="rows (synthetic rows to release) must be at least 1, got -5"),
    "rows-zero": sim("--rows", "0", expect="must be at least 1, got 0"),
    "parties-beyond-rows": sim("--parties", "100000", expect=("--parties 100000 exceeds the table's 5,000 rows",
                                                               "at most 5,000 parties")),
    "parties-beyond-small-table": small("--parties", "7", "--min-survivors", "6",
                                        expect="--parties 7 exceeds the table's 6 rows"),
    "parties-zero": sim("--parties", "0", expect="at least one organisation, got 0"),
    "split-leaves-an-organisation-empty": small("--parties", "5", "--min-survivors", "4", "--split", "dirichlet:0.01",
                                                expect=("split 'dirichlet:0.01' leaves", "with no rows")),
    "split-by-unknown-column": sim("--split", "by-column:NOPE", expect="no column 'NOPE'"),
    "split-dirichlet-negative": sim("--split", "dirichlet:-1", expect="dirichlet alpha must be a finite number > 0"),
    "split-dirichlet-infinite": sim("--split", "dirichlet:inf", expect="got 'inf'"),
    "split-iid-with-argument": sim("--split", "iid:3", expect="iid takes no argument"),
    "split-dirichlet-not-a-number": sim("--split", "dirichlet:x", expect="dirichlet needs a number"),
    "split-unknown": sim("--split", "random", expect="unknown split 'random'"),
    "budget-split-not-summing-to-1": sim("--budget-split", "generator=0.9,teacher=0.3",
                                         expect="the shares sum to 1.2, not 1"),
    "budget-split-missing-phase": sim("--budget-split", "generator=1", expect="gives no share to teacher"),
    "budget-split-unknown-phase": sim("--budget-split", "gen=0.5,teacher=0.5", expect="phases are generator, teacher"),
    "budget-split-not-a-number": sim("--budget-split", "generator=x", expect="'generator=x' is not PHASE=SHARE"),
    "budget-split-negative": sim("--budget-split", "generator=1.5,teacher=-0.5",
                                 expect="every share must be a positive number"),
    "epsilon-zero": sim("--epsilon", "0", expect="epsilon must be a positive finite number, e.g. 1.0; got 0.0"),
    "epsilon-negative": sim("--epsilon", "-1", expect="got -1.0"),
    "epsilon-nan": sim("--epsilon", "nan", expect="epsilon must be a positive finite number, e.g. 1.0; got nan"),
    "epsilon-not-a-number": sim("--epsilon", "abc", expect="argument --epsilon: invalid float value: 'abc'"),
    "delta-zero": sim("--delta", "0", expect="delta must be between 0 and 1 (exclusive), e.g. 1e-6; got 0.0"),
    "delta-above-one": sim("--delta", "1.5", expect="got 1.5"),
    "min-survivors-zero": sim("--min-survivors", "0", expect="min_survivors (t) must be at least 1"),
    "min-survivors-all": sim("--min-survivors", "4", expect="at most the number of organisations (3)"),
    "min-survivors-below-two-thirds": sim("--parties", "5", "--min-survivors", "3", expect="use t of at least 4"),
    "max-rows-zero": sim("--max-rows", "0", expect="max_rows (the per-organisation row cap) must be at least 1, got 0"),
    "cap-below-epsilon": sim("--cap", "0.5", expect="above the cap 0.5"),
    "cap-not-a-number": sim("--cap", "nan", expect="cap (the federation's total epsilon) must be a positive"),
    "out-without-a-name": sim("--out", "{tmp}/..", expect="out must name the release folder"),
    "labels-unknown": sim("--labels", "vote", expect="argument --labels: invalid choice: 'vote'"),
    "out-is-a-file": sim("--out", "{tmp}/file.txt", files=(("file.txt", "keep me"),),
                         expect="out {tmp}/file.txt is an existing file"),
    "ledger-in-missing-folder": sim("--ledger", "{tmp}/nowhere/ledger.jsonl",
                                    expect="folder {tmp}/nowhere does not exist"),
    "ledger-is-a-folder": sim("--ledger", "{tmp}", expect="is a folder; name the ledger file"),
    "log-level-unknown": cmd("--log-level", "LOUD", "schema", "validate", "x.csv", "--schema", "s.yaml",
                             expect="argument --log-level: invalid choice: 'LOUD'"),
    # ---- schema commands and the daemon's config
    "validate-data-missing": cmd("schema", "validate", "{tmp}/nope.parquet", "--schema", str(ADULT_SCHEMA),
                                 expect="fedsynth schema validate: data file {tmp}/nope.parquet does not exist"),
    "validate-schema-missing": cmd("schema", "validate", str(ADULT), "--schema", "{tmp}/no.yaml",
                                   expect="schema file {tmp}/no.yaml does not exist"),
    "draft-binary-data": cmd("schema", "draft", "{tmp}/b.csv", "-o", "{tmp}/d.yaml",
                             files=(("b.csv", bytes(range(128, 256))),), expect="is not UTF-8 text"),
    "client-config-missing": cmd("client", "--config", "{tmp}/org.toml", "--check", expect="org.toml"),
}


def materialise(case: Case, tmp: Path) -> list[str]:
    for name, content in case.files:
        path = tmp / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return [arg.replace("{tmp}", str(tmp)) for arg in case.argv]


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own errors
        return int(exit_.code)


@pytest.mark.parametrize("name", CASES)
def test_a_bad_input_gets_a_precise_message_exit_2_and_leaves_nothing(name, tmp_path, capsys):
    case = CASES[name](name)
    argv = materialise(case, tmp_path)
    if name == "data-unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        (tmp_path / "t.csv").chmod(0)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    for fragment in case.expected:
        assert fragment.replace("{tmp}", str(tmp_path)) in err, err
    assert "Traceback" not in err
    out = tmp_path / "release"
    assert not out.exists() and not out.with_name("release.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing removed
    if case.id == "out-is-a-file":
        assert (tmp_path / "file.txt").read_text() == "keep me"


def test_the_table_holds_at_least_40_cases_over_every_kind_of_input():
    assert len(CASES) >= 40
    kinds = {name.split("-")[0] for name in CASES}
    assert {"data", "schema", "table", "rows", "parties", "split", "budget", "epsilon", "delta", "client"} <= kinds


def test_a_refused_job_removes_only_the_staging_folder_it_created(tmp_path):
    staging = tmp_path / "release.partial"
    with pytest.raises(RuntimeError), staged(staging):
        (staging / "ledger.jsonl").write_text("")
        raise RuntimeError("refused")
    assert not staging.exists()
    staging.mkdir()  # an unfinished job's folder: not this job's to remove
    (staging / "ledger.jsonl").write_text("spent")
    with pytest.raises(RuntimeError), staged(staging):
        raise RuntimeError("refused")
    assert (staging / "ledger.jsonl").read_text() == "spent"


def test_a_real_process_prints_no_traceback_and_knows_its_version(tmp_path):
    command = [sys.executable, "-m", "fedsynth.cli"]
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"fedsynth {fedsynth.__version__}"
    missing = subprocess.run([*command, "simulate", "--data", str(tmp_path / "nope.csv"), "--out",
                              str(tmp_path / "release")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"data file {tmp_path / 'nope.csv'} does not exist" in missing.stderr
    assert sorted(tmp_path.iterdir()) == []
