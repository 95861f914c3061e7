"""NIST SDNist 2.4 as the judge of an ACS MA2019 release: its own k-marginal, pmse and inconsistencies.

SDNist pins older pandas, numpy and scikit-learn than fedsynth, so it runs in its own virtualenv,
built once with ``pip install sdnist==2.4`` (the package registry; no other download) and kept in
``--cache`` (default ``~/.cache/fedsynth-sdnist``). The scores are SDNist's code, unchanged: this
script copies an SDNist data root (``--sdnist-root``: its ``config.json``, ``data_dictionary.json``,
``mappings.json`` and ``massachusetts/ma2019.json``, the column description of the target) into a
temporary folder with the real ``ma2019.csv`` from ``--data-root``, runs SDNist's report
(``sdnist.report.__main__.run``, target MA, no download) in that virtualenv on the synthetic CSV, and
reads its ``report.json``:

* ``k_marginal``: ``k_marginal.k_marginal_synopsys.k_marginal_score`` (0..1000; SDNist 2.4: 1000 x
  (1 - mean TVD) over the pairs of the 22 columns other than PUMA and INDP, with AGEP, POVPIP, PINCP,
  PWGTP and WGTP cut into 20 percentile bins of the real rows, DENSITY into its own bins);
* ``pmse``: ``propensity mean square error.pmse_score`` (0 = indistinguishable);
* ``violations``: the records SDNist finds inconsistent, per rule group (age, work, housing) and
  their sum over the groups.

One SDNist 2.4 bug is worked round, in its plots only: the univariate plots of the worst PUMA's
breakdown read each feature's two most common values and fail on a feature with one value there
(``IndexError`` in ``save_distribution_plot``), which DENSITY is, one value per PUMA, once a release
puts each PUMA's rows in its real density bin; the driver leaves such features out of those plots.
No score reads them.

A release is scored as written (``synthetic.csv``, missing values as ``N``). One report takes about
45 s on 2 cores (most of it SDNist's k-marginal).

    python benchmarks/sdnist.py SYNTHETIC.csv [--data-root DIR] [--sdnist-root DIR] [--cache DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from common import add_data_root, data_root

SDNIST = "sdnist==2.4"
DEFAULT_CACHE = Path.home() / ".cache" / "fedsynth-sdnist"
DEFAULT_SDNIST_ROOT = Path(__file__).resolve().parents[2] / "shared" / "sdnist" / "root"
ROOT_FILES = ("config.json", "data_dictionary.json", "mappings.json", "massachusetts/ma2019.json")
ROOT_SOURCE = (
    "an SDNist 2.4 data root: config.json, data_dictionary.json, mappings.json and "
    "massachusetts/ma2019.json from https://github.com/usnistgov/SDNist (folder "
    "'nist diverse communities data excerpts', its data dictionary and the MA excerpt's JSON)"
)
#: Run inside SDNist's virtualenv: its report on argv[1] against the MA target, then the figures.
DRIVER = """
import json, sys
from pathlib import Path
from sdnist.load import TestDatasetName
from sdnist.report.__main__ import run
from sdnist.report.plots.univariate import UnivariatePlots
plot = UnivariatePlots.save_distribution_plot
def plot_features_with_two_values(self, dataset, synthetic, target, features, *args, **kwargs):
    features = [f for f in features if len(set(target[f].unique()) | set(synthetic[f].unique())) > 1]
    return plot(self, dataset, synthetic, target, features, *args, **kwargs)
UnivariatePlots.save_distribution_plot = plot_features_with_two_values
synthetic, out, root = map(Path, sys.argv[1:4])
run(synthetic, out, TestDatasetName.ma2019, root, None, False, False)
report = json.loads((out / "report.json").read_text())
groups = {g["Inconsistency Group"]: int(g["Number of Records Inconsistent"])
          for g in report["inconsistencies"]["summary"]}
print("SDNIST-SCORES " + json.dumps({
    "k_marginal": float(report["k_marginal"]["k_marginal_synopsys"]["k_marginal_score"]),
    "pmse": float(report["propensity mean square error"]["pmse_score"]),
    "violations": sum(groups.values()),
    "violations_by_group": groups,
}))
"""


@dataclass(frozen=True)
class SdnistScores:
    """SDNist 2.4's own figures for one synthetic table against MA2019."""

    k_marginal: float
    pmse: float
    violations: int  # records inconsistent, summed over SDNist's rule groups
    violations_by_group: dict[str, int]


class SdnistUnavailable(RuntimeError):
    """SDNist's virtualenv could not be built, its data root is incomplete, or its report failed."""


def sdnist_python(cache: Path = DEFAULT_CACHE) -> Path:
    """The Python of a virtualenv holding SDNist 2.4: built on first use, then reused.

    A ``complete`` marker is written only after ``pip install`` succeeds and ``pip check`` finds
    every requirement installed (one build here exited 0 without pandas' dateutil), so an
    interrupted or partial build is redone rather than trusted.
    """
    venv = cache / "venv"
    python, marker = venv / "bin" / "python", venv / "complete"
    if marker.is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"sdnist: building SDNist's virtualenv in {venv} (once; a few minutes)", file=sys.stderr)
    steps = ([sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", SDNIST],
             [str(python), "-m", "pip", "check", "--disable-pip-version-check"])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise SdnistUnavailable(f"could not build SDNist's virtualenv ({' '.join(step[2:4])}):\n{(done.stderr or done.stdout)[-2000:]}")
    marker.write_text(SDNIST + "\n")
    return python


def check_sdnist_root(root: Path | None) -> Path:
    """``root`` once every file SDNist needs is there; else :class:`SdnistUnavailable` naming them."""
    missing = [name for name in ROOT_FILES if root is None or not (root / name).is_file()]
    if missing:
        where = "no --sdnist-root given" if root is None else f"no {', '.join(missing)} under {root}"
        raise SdnistUnavailable(f"{where}; pass --sdnist-root DIR holding {ROOT_SOURCE}")
    return root


def sdnist_scores(synthetic_csv: Path, acs_folder: Path, sdnist_root: Path, cache: Path = DEFAULT_CACHE) -> SdnistScores:
    """SDNist 2.4's k-marginal, pmse and inconsistencies of ``synthetic_csv`` against
    ``acs_folder/ma2019.csv`` (SDNist's own code, in its own virtualenv)."""
    python = sdnist_python(cache)
    root = check_sdnist_root(sdnist_root)
    # -I: isolated from this process's PYTHONPATH (Ray puts the benchmarks folder there, whose
    # sdnist.py would shadow SDNist's package) and from the user's site-packages.
    with tempfile.TemporaryDirectory(prefix="fedsynth-sdnist-") as tmp:
        work = Path(tmp) / "root"
        shutil.copytree(root, work)
        for path in work.rglob("*"):  # a read-only source root stays read-only in the copy
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.copyfile(acs_folder / "ma2019.csv", work / "massachusetts" / "ma2019.csv")
        out = Path(tmp) / "report"
        out.mkdir()
        done = subprocess.run(
            [str(python), "-I", "-c", DRIVER, str(Path(synthetic_csv).resolve()), str(out), str(work)],
            capture_output=True, text=True, cwd=tmp, env={**os.environ, "MPLBACKEND": "Agg"},
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("SDNIST-SCORES ")]
    if done.returncode != 0 or not lines:
        raise SdnistUnavailable(f"SDNist's report failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
    return SdnistScores(**json.loads(lines[-1].removeprefix("SDNIST-SCORES ")))


def add_sdnist_options(parser: argparse.ArgumentParser) -> None:
    """``--sdnist-root`` and ``--sdnist-cache``, for every benchmark that asks SDNist."""
    parser.add_argument("--sdnist-root", type=Path,
                        default=DEFAULT_SDNIST_ROOT if DEFAULT_SDNIST_ROOT.is_dir() else None,
                        help=f"SDNist data root: {ROOT_SOURCE} (default: shared/sdnist/root beside the repository)")
    parser.add_argument("--sdnist-cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where SDNist's virtualenv is built and kept (default {DEFAULT_CACHE})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("synthetic", type=Path, help="a release's synthetic.csv (ACS MA2019 schema)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    add_data_root(parser)
    add_sdnist_options(parser)
    args = parser.parse_args()
    if not args.synthetic.is_file():
        print(f"sdnist.py: no file {args.synthetic}; pass a release's synthetic.csv", file=sys.stderr)
        sys.exit(2)
    root = data_root(args.data_root, ["acs"], "sdnist.py")
    try:
        scores = sdnist_scores(args.synthetic, root / "acs", args.sdnist_root, args.sdnist_cache)
    except SdnistUnavailable as exc:
        print(f"sdnist.py: {exc}", file=sys.stderr)
        sys.exit(2)
    groups = ", ".join(f"{g} {n}" for g, n in scores.violations_by_group.items())
    print(f"SDNist 2.4 on {args.synthetic} (target MA2019)")
    print(f"  k-marginal  {scores.k_marginal:.0f}")
    print(f"  pmse        {scores.pmse:.4f}")
    print(f"  violations  {scores.violations} ({groups})")
    if args.json:
        args.json.write_text(json.dumps(asdict(scores), indent=2) + "\n")


if __name__ == "__main__":
    main()
