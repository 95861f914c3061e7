"""``fedsynth report`` and ``fedsynth evaluate`` warn when a small group vanishes from a release.

One release is made in-process (the job's own code on a ``CentralAggregator``) from the bundled
Adult sample at a high epsilon, so that groups of a few tenths of a percent stand out of the
measurements' noise. A group of 0.2-1% of the measured rows that the release keeps is then
dropped from a copy of ``synthetic.csv`` (its rows get the column's most common value): both
commands must name it, and neither may name it for the release as made.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedsynth.cli import bundled, main
from fedsynth.client.organisation import Organisation
from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.schema import load_schema
from fedsynth.common.shares import SIGMAS, one_way, vanishing_groups
from fedsynth.server.central import CentralAggregator
from fedsynth.server.job import JobConfig, run_job_with
from fedsynth.simulations.split import split_table

SCHEMA = load_schema(bundled("adult.schema.yaml"))


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shares") / "release"
    settings = GeneratorSettings(rounds=1, per_round=2, fit_iters=50, final_iters=100, score_sample=5_000)
    config = JobConfig(schema=SCHEMA, parties=3, epsilon=20.0, delta=1e-6, out=out, min_survivors=3,
                       generator=settings, labels="generator")
    parties = split_table(SCHEMA.read_csv(bundled("adult.csv")), 3, "iid", SCHEMA.label, seed=0)
    orgs = [Organisation(f"org-{i}", lambda _s, t=t: t, accepts=SCHEMA) for i, t in enumerate(parties)]
    run_job_with(lambda ledger: CentralAggregator(orgs, ledger, seed=0), config, lambda _m: None)
    return out


def measurements(folder: Path) -> list:
    return [(m["clique"], np.asarray(m["counts"]), m["sigma"]) for m in json.loads((folder / "measurements.json").read_text())]


def small_kept_group(folder: Path) -> tuple[str, str]:
    """A category with 0.2-1% of the measured rows, clear of the noise, that the release keeps."""
    codes = SCHEMA.encode(SCHEMA.read_csv(folder / "synthetic.csv"))
    flagged = {(g.column, g.code) for g in vanishing_groups(measurements(folder), codes, SCHEMA.domain())}
    for column, (noisy, sigma) in one_way(measurements(folder), SCHEMA.domain()).items():
        shares = np.clip(noisy, 0, None) / np.clip(noisy, 0, None).sum()
        for code in np.flatnonzero((shares > 0.002) & (shares < 0.01) & (noisy > 2 * SIGMAS * sigma)):
            if SCHEMA[column].categories is not None and code < len(SCHEMA[column].categories) and (column, code) not in flagged:
                return column, SCHEMA[column].categories[code]
    raise AssertionError("no small group clear of the noise in this release")


@pytest.fixture(scope="module")
def dropped(release, tmp_path_factory) -> tuple[Path, str, str]:
    column, value = small_kept_group(release)
    copy = tmp_path_factory.mktemp("dropped") / "release"
    shutil.copytree(release, copy)
    rows = SCHEMA.read_csv(copy / "synthetic.csv")
    assert (rows[column] == value).any()
    rows.loc[rows[column] == value, column] = rows[column].mode()[0]
    rows.to_csv(copy / "synthetic.csv", index=False)
    return copy, column, value


def test_the_report_warns_of_a_dropped_small_group_in_its_summary(release, dropped):
    copy, column, value = dropped
    assert main(["report", str(copy)]) == 0
    summary = (copy / "report.html").read_text(encoding="utf-8").split('<section id="privacy">')[0]
    assert f"{column} = {value}: " in summary and "nearly vanished from the release" in summary
    assert "0.00% of the released rows" in summary
    assert main(["report", str(release), "--out", str(copy / "original.html")]) == 0
    assert f"{column} = {value}: " not in (copy / "original.html").read_text(encoding="utf-8")


def test_evaluate_warns_of_a_dropped_small_group(dropped, tmp_path, capsys):
    copy, column, value = dropped
    real = bundled("adult.csv")
    assert main(["evaluate", str(copy), "--real", str(real), "--out", str(tmp_path / "eval"), "--attacks", "20"]) == 0
    out = capsys.readouterr().out
    assert f"warning: {column} = {value}: " in out and "nearly vanished" in out
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert any(w.startswith(f"{column} = {value}: ") for w in result["share_warnings"])
    assert f"{column} = {value}: " in (tmp_path / "eval" / "evaluation.html").read_text(encoding="utf-8")
