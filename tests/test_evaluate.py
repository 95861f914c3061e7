"""`fedsynth evaluate`'s figures on small frames, and its command line on bad input."""

import json

import numpy as np
import pytest

from fedsynth.cli import bundled, main
from fedsynth.client.evaluate import Tables, figures, fidelity, privacy_probes, wilson

SCHEMA_PATH = bundled("adult.schema.yaml")


@pytest.fixture(scope="module")
def schema():
    from fedsynth.common.schema import load_schema

    return load_schema(SCHEMA_PATH)


@pytest.fixture(scope="module")
def adult(schema):
    return schema.read_csv(bundled("adult.csv"))


#: Columns the schema's rules tie together, permuted as one so that the rows keep the rules.
TIED = ({"education", "education-num"}, {"relationship", "marital-status"})


def shuffled_columns(frame, seed=0):
    """Every column (or group of tied columns) permuted on its own: the same 1-way marginals,
    independent columns."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    groups = list(TIED) + [{c} for c in frame.columns if not any(c in g for g in TIED)]
    for group in groups:
        cols = [c for c in frame.columns if c in group]
        out[cols] = out[cols].to_numpy()[rng.permutation(len(out))]
    return out


def test_identical_frames_score_perfectly(schema, adult):
    real = adult.iloc[:800]
    f = fidelity(Tables.from_frames(schema, real, real), seed=0)
    assert f["quality_score"] == pytest.approx(1.0)
    assert all(c["score"] == pytest.approx(1.0) for c in f["column_shapes"]["columns"])
    assert all(p["score"] == pytest.approx(1.0) for p in f["column_pair_trends"]["pairs"])
    assert f["tvd"]["two_way"] == pytest.approx(0.0) and f["tvd"]["three_way"] == pytest.approx(0.0)


def test_independent_columns_keep_shapes_but_lose_pair_trends(schema, adult):
    real, same_population = adult.iloc[:2000], adult.iloc[2000:4000]
    f = fidelity(Tables.from_frames(schema, shuffled_columns(real), real), seed=0)
    baseline = fidelity(Tables.from_frames(schema, same_population, real), seed=0)
    assert f["column_shapes"]["score"] == pytest.approx(1.0)  # a permutation keeps every column's values
    assert f["column_pair_trends"]["score"] < baseline["column_pair_trends"]["score"] - 0.02
    trends = {tuple(p["columns"]): p for p in f["column_pair_trends"]["pairs"]}
    assert trends[("education", "education-num")]["score"] == pytest.approx(1.0)  # permuted together
    assert trends[("relationship", "sex")]["score"] < 0.8  # husbands are men, wives women: not any more
    assert trends[("age", "fnlwgt")]["metric"] == "CorrelationSimilarity"
    assert trends[("relationship", "sex")]["metric"] == "ContingencySimilarity"
    assert f["tvd"]["two_way"] > baseline["tvd"]["two_way"] + 0.01
    assert f["tvd"]["three_way"] > baseline["tvd"]["three_way"] + 0.03


def test_tstr_learns_from_real_like_rows_and_not_from_independent_ones(schema, adult):
    real, other = adult.iloc[:1500], adult.iloc[1500:3000]
    good = figures(Tables.from_frames(schema, other, real), attacks=50)["tstr"]
    bad = figures(Tables.from_frames(schema, shuffled_columns(other), real), attacks=50)["tstr"]
    assert good["label"] == "Y" and good["synthetic"]["auc"] > 0.8
    assert abs(good["synthetic"]["auc"] - good["real"]["auc"]) < 0.05  # rows of the same population
    assert bad["synthetic"]["auc"] < 0.6  # no feature says anything about the label


def test_a_copied_release_is_caught_by_the_probes_and_a_fresh_one_is_not(schema, adult):
    real, control, fresh = adult.iloc[:600], adult.iloc[600:1200], adult.iloc[1200:1800]
    copied = privacy_probes(Tables.from_frames(schema, real, real, control), seed=0, attacks=200)
    honest = privacy_probes(Tables.from_frames(schema, fresh, real, control), seed=0, attacks=200)
    # Linkability links through rows equal on one half's codes (ties broken at random): it finds
    # the very row less often than singling out does, still far above any control.
    for name, floor in (("singling_out", 0.9), ("linkability", 0.2)):
        assert copied[name]["risk_against"] == "control"
        assert copied[name]["risk"]["low"] > floor, name  # the release holds the very rows
        assert honest[name]["risk"]["risk"] < copied[name]["risk"]["low"], name
    assert copied["inference"]["attack"]["rate"] > 0.95  # each target's own row is its nearest
    assert honest["inference"]["risk"]["low"] < 0.2


def test_wilson_interval_holds_the_rate():
    p, low, high = wilson(30, 100)
    assert p == 0.3 and 0.21 < low < 0.3 < high < 0.4
    assert wilson(0, 50)[1] == pytest.approx(0.0, abs=1e-12)


@pytest.fixture
def fake_release(tmp_path, adult):
    """A directory shaped like a release (its synthetic rows: other rows of the same table)."""
    release = tmp_path / "release"
    release.mkdir()
    adult.iloc[2000:3500].to_csv(release / "synthetic.csv", index=False, na_rep="?")
    (release / "privacy.json").write_text("{}\n")
    real = tmp_path / "local.csv"
    adult.iloc[:1000].to_csv(real, index=False, na_rep="?")
    return release, real


def test_the_command_prints_headlines_and_writes_json_and_html(fake_release, tmp_path, capsys):
    release, real = fake_release
    (release / "schema.yaml").write_text(SCHEMA_PATH.read_text())  # the default schema: RELEASE/schema.yaml
    out = tmp_path / "out"
    assert main(["evaluate", str(release), "--real", str(real), "--out", str(out), "--attacks", "50"]) == 0
    printed = capsys.readouterr().out
    for headline in ("quality score", "mean TVD 2-way", "TSTR (Y): AUC", "singling out", "distance to closest record"):
        assert headline in printed
    result = json.loads((out / "evaluation.json").read_text())
    assert result["real"]["rows"] == 1000 and result["privacy_risk"]["inference"]["risk_against"] == "baseline"
    page = (out / "evaluation.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "http://" not in page and "https://" not in page


@pytest.mark.parametrize(
    "change, args, message",
    [
        ("no-privacy", [], "is not a release: it needs synthetic.csv and privacy.json"),
        ("no-schema", [], "this release has no schema.yaml, so give the job's schema with --schema"),
        ("bad-real", ["--schema", str(SCHEMA_PATH)], "real file"),
        ("no-column", ["--schema", str(SCHEMA_PATH)], "lacks the schema's column(s) workclass"),
        ("", ["--schema", str(SCHEMA_PATH), "--attacks", "0"], "--attacks must be at least 1, got 0"),
        ("empty-real", ["--schema", str(SCHEMA_PATH)], "cannot be read as CSV"),
    ],
)
def test_bad_input_is_one_precise_line_and_exit_2(fake_release, tmp_path, capsys, change, args, message):
    release, real = fake_release
    if change == "no-privacy":
        (release / "privacy.json").unlink()
    if change == "bad-real":
        real.write_text(real.read_text().replace("Private", "Privat", 1))
    if change == "empty-real":
        real.write_text("")
    if change == "no-column":
        import pandas as pd

        pd.read_csv(real, dtype=str, keep_default_na=False).drop(columns="workclass").to_csv(real, index=False)
    code = main(["evaluate", str(release), "--real", str(real), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fedsynth evaluate: ") and message in err
    if change == "bad-real":
        assert "workclass" in err and "Privat" in err
    assert not (tmp_path / "out").exists()
