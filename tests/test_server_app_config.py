"""The deployment ServerApp's run-config parsing (Flower passes every key with its default)."""

import tomllib
from pathlib import Path

import pytest

from fedsynth.cli import bundled
from fedsynth.server.app import config_from_run_config

DEFAULTS = tomllib.loads((Path(__file__).resolve().parents[1] / "fedsynth/flower_app/pyproject.toml").read_text())[
    "tool"]["flwr"]["app"]["config"]


def test_app_defaults_with_a_schema_make_a_valid_job():
    config = config_from_run_config({**DEFAULTS, "schema": str(bundled("adult.schema.yaml")), "parties": 4})
    assert config.min_survivors == 3  # 0 means parties - 1
    assert config.rows is None and config.timeout == 600.0
    assert config.schema.name == "adult"


def test_explicit_min_survivors_is_kept():
    run = {**DEFAULTS, "schema": str(bundled("adult.schema.yaml")), "parties": 5, "min-survivors": 3}
    assert config_from_run_config(run).min_survivors == 3


def test_missing_schema_is_a_clear_error():
    with pytest.raises(ValueError, match="run-config 'schema' is required"):
        config_from_run_config(dict(DEFAULTS))


def test_labeller_keys_reach_the_job():
    run = {**DEFAULTS, "schema": str(bundled("adult.schema.yaml")), "labels": "argmax",
           "budget-split": "generator=0.5,teacher=0.5", "teacher": "mlp", "teacher-steps": 7}
    config = config_from_run_config(run)
    assert config.labels == "argmax" and config.budget_split == {"generator": 0.5, "teacher": 0.5}
    assert config.teacher.model == "mlp" and config.teacher.steps == 7
    default = config_from_run_config({**DEFAULTS, "schema": str(bundled("adult.schema.yaml"))})
    assert default.labels == "sample" and default.teacher.steps == 30
