"""docs/schema.md: every example YAML block is a complete schema that the schema loader accepts,
and the page covers every column kind and rule form the loader knows."""

import re
from pathlib import Path

import pytest

from fedsynth.common.schema import Hierarchy, Implication, load_schema
from fedsynth.common.schema.columns import KINDS

DOC = Path(__file__).resolve().parents[1] / "docs" / "schema.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_page_has_examples():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("block", BLOCKS, ids=[re.search(r"name: (\S+)", b).group(1) for b in BLOCKS])
def test_every_example_loads_with_the_schema_loader(block, tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_text(block, encoding="utf-8")
    schema = load_schema(path)
    assert schema.columns and not schema.draft


def test_the_examples_cover_every_column_kind_and_rule_form(tmp_path):
    schemas = []
    for k, block in enumerate(BLOCKS):
        path = tmp_path / f"s{k}.yaml"
        path.write_text(block, encoding="utf-8")
        schemas.append(load_schema(path))
    columns = [c for s in schemas for c in s.columns]
    rules = [r for s in schemas for r in s.rules]
    assert {c.kind for c in columns} == set(KINDS)
    assert any(c.codes is not None for c in columns) and any(c.missing for c in columns)
    assert any(isinstance(r, Hierarchy) for r in rules)
    conditions = [c for r in rules if isinstance(r, Implication) for c in r.when + r.then]
    assert {c.state for c in conditions} >= {"missing", "present"}
    assert any(c.less_than for c in conditions) and any(c.values for c in conditions)
    assert any(c.min is not None for c in conditions) and any(c.max is not None for c in conditions)
    text = DOC.read_text(encoding="utf-8")
    for heading in ("### " + kind for kind in KINDS):
        assert heading in text
    for heading in ("### Implications", "### Comparisons", "### Hierarchies", "### Codes"):
        assert heading in text
