"""Heterogeneity benchmark (issue 12): how much utility the federated generator loses when the
organisations' rows are not alike, against the same code run by one central curator.

Datasets (from ``--data-root``, default the ``shared/data`` folder beside the repository when it exists):
* Adult (coded): the private-pgm Adult, 80/20 split with seed 0, delta 1e-9 (as
  ``generator_utility.py``), 10 organisations; its label ``income>50K`` drives the Dirichlet skew
  and TSTR; its five numbers (age, fnlwgt, capital gain and loss, hours per week) declared as binned
  integers with a fine grid of every code (:data:`ADULT_ORDINAL`), every figure on the 14 columns'
  own codes;
* ACS MA2019: the NIST excerpt with ``tests/data/acs_ma2019.schema.yaml``, delta 1e-6,
  5 organisations (one per PUMA in the by-column split; ``--parties 20``: each PUMA's rows shared by 4,
  issue 23's 20-organisation case); no label, so the Dirichlet skew is on
  PINCP_DECILE (the income rank, Adult's label's counterpart) and there is no TSTR.

At each epsilon, every split is generated with synthetic rows = real rows: ``central`` (the
generator on the pooled rows, one curator, no secure aggregation), and federated ``iid``,
``dirichlet:0.5`` and ``by-column`` runs through ``fedsynth.simulations.main.simulate`` (the
CLI's entry point: Flower simulation, real SecAgg+, ``--labels`` (default the generator's; ``sample``
is the CLI's default path, teacher and student), seed ``--seed``, t = parties - 1). Each row reports: the epsilon spent (privacy.json; the ledger for central),
wall time, mean TVD over all 2-way marginals and over 200 fixed-seed 3-way marginals, TVD2 as a
ratio of the central and of the IID run's, TSTR AUC (HistGradientBoosting, trained on the
synthetic rows, tested on the real held-out 20%; Adult; ``--json`` also holds TVD2 over the 14 pairs with the
label and over the other pairs), rule violations (rows flagged by
``schema.rule_violations``) and, for ACS, NIST SDNist 2.4's own k-marginal, pmse and
inconsistent records (SDNist's code in its own virtualenv: ``sdnist.py``; ``--no-sdnist`` skips it),
the marginals measured after the 1-way round that hold the by-column split's column (PUMA, occupation),
read from the release's ``measurements.json``, as "held / measured" (how much selection spends on it)
next to the benchmark's own k-marginal (our numpy reimplementation of SDNist 2.x's PUMA-grouped
definition, on the schema's codes: see ``k_marginal``; labelled "own"). For scale, the same figures for real
MA2018 against MA2019 and for independent 1-way marginals (exact, no noise), then the
issue's targets with met / missed.

    python benchmarks/heterogeneity.py [--datasets adult,acs] [--epsilons 1,3] \\
        [--splits central,iid,dirichlet:0.5,by-column] [--labels generator|sample|argmax] [--budget-split S] [--seed N] [--parties N] \\
        [--keep DIR] [--data-root DIR] [--json OUT] [--quick] [--no-sdnist] [--sdnist-root DIR] [--sdnist-cache DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from common import add_data_root, acs_massachusetts, adult_discretised, data_root
from sdnist import SdnistUnavailable, add_sdnist_options, check_sdnist_root, sdnist_scores

from fedsynth.client.organisation import Organisation
from fedsynth.common.accounting import Ledger
from fedsynth.common.generator import GeneratorSettings
from fedsynth.common.marginals import marginal
from fedsynth.common.metrics import all_cliques, mean_tvd, random_cliques, tstr_auc
from fedsynth.common.schema import Schema
from fedsynth.server.central import CentralAggregator
from fedsynth.server.generator import fit_generator, one_way_cliques, sample_rows
from fedsynth.server.job import JobConfig, parse_budget_split, plan_job
from fedsynth.simulations.main import simulate
from fedsynth.simulations.split import split_table

LABEL, POSITIVE = "income>50K", "1"
QUICK_ROWS = 2000  # --quick: fixed-seed subsample of each real table (Adult's test: a quarter)
QUICK_GENERATOR = GeneratorSettings(rounds=1, per_round=2, fit_iters=50, final_iters=100)
ADULT_BY = "occupation"
ADULT_BY_WHY = (
    "occupation (15 values, largest 13%): one organisation per occupational group, like employers or "
    "professional bodies of one trade; greedy balancing gives 10 similar-sized organisations with very "
    "different rows (native-country is 90% one value, workclass and race have fewer than 10 values)"
)
ACS_SKEW_WHY = "no label: Dirichlet(0.5) skew on PINCP_DECILE, the income rank (Adult's label's counterpart)"


@dataclass(frozen=True)
class Dataset:
    """One benchmark table and how it is federated."""

    key: str
    title: str
    schema: Schema
    train: pd.DataFrame  # the real rows the organisations hold
    parties: int
    by_column: str
    skew: str  # column whose values the Dirichlet split spreads unevenly
    delta: float
    notes: tuple[str, ...]
    test: pd.DataFrame | None = None  # real held-out rows for TSTR (None: no label)
    other_year: pd.DataFrame | None = None  # real rows of another year, for scale
    group: str | None = None  # k-marginal's group column (PUMA)
    folder: Path | None = None  # where the real rows' files are (SDNist reads ma2019.csv there)
    resolution: Mapping[str, int] | None = None  # integer codes scored at this resolution (None: schema codes)

    def scored_domain(self) -> dict[str, int]:
        return dict(self.resolution) if self.resolution is not None else self.schema.domain()

    def scored_codes(self, frame: pd.DataFrame, codes: np.ndarray) -> np.ndarray:
        """The codes that figures compare: each value itself for a table scored at its own resolution."""
        if self.resolution is None:
            return codes
        return frame[list(self.resolution)].astype(np.int64).to_numpy()


#: ``judge(frame)``: SDNist's figures of a typed synthetic table, as row keys (see ``sdnist_judge``).
Judge = Callable[[pd.DataFrame], dict]


def sdnist_judge(ds: Dataset, sdnist_root: Path, cache: Path) -> Judge:
    """Scores a typed table with SDNist 2.4 (``sdnist.py``): written as a release writes it
    (missing values as the schema's first ``na_values``), then SDNist's report in its virtualenv."""
    check_sdnist_root(sdnist_root)

    def judge(frame: pd.DataFrame) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "synthetic.csv"
            frame.to_csv(path, index=False, na_rep=ds.schema.na_values[0] if ds.schema.na_values else "")
            scores = sdnist_scores(path, ds.folder, sdnist_root, cache)
        return {"sdnist_k_marginal": scores.k_marginal, "sdnist_pmse": scores.pmse,
                "sdnist_violations": scores.violations}

    return judge


@dataclass
class Scorer:
    """Every figure of one synthetic (or reference) table against the dataset's real rows."""

    dataset: Dataset
    sdnist: Judge | None = None  # SDNist's own figures (ACS MA2019 only)
    real: np.ndarray = field(init=False)
    cliques2: list = field(init=False)
    cliques3: list = field(init=False)

    def __post_init__(self) -> None:
        ds = self.dataset
        domain = ds.scored_domain()
        self.real = ds.scored_codes(ds.train, ds.schema.encode(ds.train))
        self.cliques2, self.cliques3 = all_cliques(domain, 2), random_cliques(domain, 3, 200, seed=0)

    def score(self, codes: np.ndarray, frame: pd.DataFrame) -> dict:
        ds, domain = self.dataset, self.dataset.scored_domain()
        codes = ds.scored_codes(frame, codes)
        row = {
            "tvd2": mean_tvd(self.real, codes, domain, self.cliques2),
            "tvd3": mean_tvd(self.real, codes, domain, self.cliques3),
            "rule_violations": rule_violations(ds.schema, frame),
        }
        if ds.test is not None:
            row["auc_hgb"] = tstr_auc(frame, ds.test, LABEL, POSITIVE, "hgb")
            for name, with_label in (("tvd2_label_pairs", True), ("tvd2_other_pairs", False)):
                pairs = [clique for clique in self.cliques2 if (LABEL in clique) == with_label]
                row[name] = mean_tvd(self.real, codes, domain, pairs)
        if ds.group is not None:
            row["k_marginal"], per_group = k_marginal(self.real, codes, domain, ds.group)
            row["k_marginal_worst"] = min(per_group.values())
            row["k_marginal_per_group"] = {ds.schema[ds.group].categories[g]: s for g, s in per_group.items()}
        if self.sdnist is not None:
            row.update(self.sdnist(frame))
        return row


def k_marginal(real: np.ndarray, synthetic: np.ndarray, domain: Mapping[str, int], group: str) -> tuple[float, dict[int, float]]:
    """SDNist-style k-marginal score (0..1000) of integer-coded tables, overall and per group value.

    As in SDNist 2.x's report (``KMarginal`` with PUMA as its stable feature): every pair of the
    other columns (all pairs, there being fewer than 30) is counted together with ``group``;
    densities are counts over each table's total rows. Overall: 1000 * (1 - mean over pairs of
    half the L1 distance of the densities). Per group value g: the L1 distance of g's cells, capped
    at g's real share and divided by it, averaged over the pairs; score 1000 * (1 - that). Group
    values absent from the real rows get no score.
    """
    columns = list(domain)
    pairs = list(itertools.combinations([c for c in columns if c != group], 2))
    share = np.bincount(real[:, columns.index(group)], minlength=domain[group]) / len(real)
    present = np.flatnonzero(share > 0)
    overall, per_group = 0.0, np.zeros(len(present))
    for pair in pairs:
        clique = (group, *pair)
        t = marginal(real, columns, domain, clique).reshape(domain[group], -1) / len(real)
        s = marginal(synthetic, columns, domain, clique).reshape(domain[group], -1) / max(len(synthetic), 1)
        diff = np.abs(t - s)
        overall += diff.sum() / 2
        per_group += np.minimum(diff.sum(axis=1), share)[present] / share[present]
    scores = 1000 * (1 - per_group / len(pairs))
    return float(1000 * (1 - overall / len(pairs))), {int(g): float(v) for g, v in zip(present, scores)}


def rule_violations(schema: Schema, frame: pd.DataFrame) -> int:
    """Rows of the typed ``frame`` that break any of the schema's rules."""
    return int(schema.rule_violations(frame).any(axis=1).sum())


def subsample(table: pd.DataFrame, rows: int) -> pd.DataFrame:
    picks = np.sort(np.random.default_rng(0).permutation(len(table))[:rows])
    return table.iloc[picks].reset_index(drop=True)


#: Coded Adult's numbers: the five attributes the donors' description (``adult.names``) calls
#: continuous and the coded form keeps in order as codes (age, fnlwgt, capital gain and loss, hours
#: per week; education-num's 16 levels stay categories) as integer columns: coarse public bins of
#: ``width`` codes for the model's higher-order marginals and each code as a fine cell (``fine: 1``),
#: as a user declares numbers (``fedsynth/data/adult.schema.yaml``). Widths are public: equal-width,
#: no row read.
ADULT_ORDINAL = {"age": 5, "fnlwgt": 5, "capital-gain": 5, "capital-loss": 5, "hours-per-week": 5}


def ordinal_adult(schema: Schema) -> Schema:
    """Coded Adult's schema with ``ADULT_ORDINAL``'s columns as binned integers with a fine grid."""
    spec = json.loads(schema.dumps("json"))
    for column in spec["columns"]:
        if column["name"] in ADULT_ORDINAL:
            top, width = len(column.pop("categories")) - 1, ADULT_ORDINAL[column["name"]]
            edges = list(range(0, top, width)) + [top]
            column.update(kind="integer", lower=0, upper=top, bins=edges, fine=1)
    return Schema.from_dict(spec)


def load_adult(folder: Path, quick: bool) -> Dataset:
    schema, train, test = adult_discretised(seed=0, folder=folder / "adult")
    schema = ordinal_adult(schema)
    train, test = schema.conform(train), schema.conform(test)
    if quick:
        train, test = subsample(train, QUICK_ROWS), subsample(test, QUICK_ROWS // 4)
    notes = (f"by-column: {ADULT_BY_WHY}", f"dirichlet: Dirichlet(0.5) label skew on {LABEL}")
    resolution = json.loads((folder / "adult" / "adult-domain.json").read_text())
    notes += (f"{', '.join(ADULT_ORDINAL)}: integer codes in public bins of {', '.join(map(str, ADULT_ORDINAL.values()))}"
              " codes with a fine grid of every code; every figure compares the 14 columns' own codes",)
    return Dataset("adult", "Adult (coded)", schema, train, 10, ADULT_BY, LABEL, 1e-9, notes, test=test,
                   resolution=resolution)


def load_acs(folder: Path, quick: bool) -> Dataset:
    schema, ma2019, ma2018 = acs_massachusetts(folder / "acs")
    if quick:
        ma2019, ma2018 = subsample(ma2019, QUICK_ROWS), subsample(ma2018, QUICK_ROWS)
    notes = ("by-column: one organisation per PUMA", f"dirichlet: {ACS_SKEW_WHY}")
    return Dataset("acs", "ACS MA2019", schema, ma2019, 5, "PUMA", "PINCP_DECILE", 1e-6, notes,
                   other_year=ma2018, group="PUMA", folder=folder / "acs")


LOADERS: dict[str, Callable[[Path, bool], Dataset]] = {"adult": load_adult, "acs": load_acs}


def with_parties(ds: Dataset, parties: int | None) -> Dataset:
    """``ds`` federated among ``parties`` organisations (None: its own number)."""
    if parties is None or parties == ds.parties:
        return ds
    values = ds.train[ds.by_column].nunique()
    shared = parties > values and parties % values == 0
    note = (f"by-column: each {ds.by_column} value's rows shared at random by {parties // values} of the "
            f"{parties} organisations" if shared else f"{parties} organisations (the dataset's default: {ds.parties})")
    others = tuple(n for n in ds.notes if not (shared and n.startswith("by-column:")))
    return replace(ds, parties=parties, notes=others + (note,))


@dataclass(frozen=True)
class Options:
    """How the federated runs label their rows, their seed, and where their releases are kept."""

    labels: str = "generator"  # the central run always labels with the generator (it has no teacher)
    seed: int = 0
    keep: Path | None = None  # a folder for every federated release (None: thrown away)
    budget_split: str | None = None  # the phases' shares with a teacher (None: the job's default)

    def labels_for(self, ds: Dataset, split: str) -> str:
        """A federated run's labels; the generator's for the central run and a table with no label."""
        return self.labels if split != "central" and ds.schema.label is not None else "generator"


def job(ds: Dataset, epsilon: float, parties: int, out: Path, settings: GeneratorSettings, options: Options,
        split: str) -> JobConfig:
    split_option = {} if options.budget_split is None else {"budget_split": parse_budget_split(options.budget_split)}
    return JobConfig(schema=ds.schema, parties=parties, epsilon=epsilon, delta=ds.delta, out=out,
                     min_survivors=parties - 1, rows=len(ds.train), seed=options.seed,
                     labels=options.labels_for(ds, split), generator=settings, **split_option)


def central(config: JobConfig, train: pd.DataFrame, by_column: str) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """The generator on the pooled rows: one curator adding the whole noise (``config`` has t = 1);
    its rows, the ledger's epsilon and which of its marginals hold ``by_column`` (no release: the
    model's own measurements)."""
    plan = plan_job(config)
    ledger = Ledger(config.out / "ledger.jsonl", cap_epsilon=config.epsilon, delta=config.delta)
    agg = CentralAggregator([Organisation("pooled", lambda _schema: train, accepts=config.schema)], ledger, seed=config.seed)
    model = fit_generator(agg, config.schema, plan.generator, np.random.default_rng(config.seed), lambda _m: None)
    frame = sample_rows(model, config.schema, config.rows, np.random.default_rng(config.seed))
    selected = split_column_marginals(config.schema, [m.clique for m in model.measurements], by_column)
    return config.schema.encode(frame), frame, {"spent": ledger.epsilon().epsilon, **selected}


def federated(config: JobConfig, ds: Dataset, split: str) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """One federation through the CLI's entry point; the release's rows, privacy.json's epsilon and
    which of its measured marginals hold the split column (:func:`split_column_marginals`)."""
    parties = split_table(ds.train, config.parties, split, ds.skew, seed=config.seed)
    release = simulate(config, parties, progress=lambda _m: None)
    frame = config.schema.conform(config.schema.read_csv(release.path / "synthetic.csv"))
    spent = json.loads((release.path / "privacy.json").read_text())["epsilon"]
    measured = json.loads((release.path / "measurements.json").read_text())
    selected = split_column_marginals(config.schema, [tuple(m["clique"]) for m in measured], ds.by_column)
    return config.schema.encode(frame), frame, {"spent": spent, **selected}


def split_column_marginals(schema: Schema, measured: Sequence[tuple[str, ...]], column: str) -> dict:
    """Of the marginals a release measured after its 1-way round (``measurements.json`` less the
    schema's :func:`one_way_cliques`), how many hold ``column``: selection's spending on it."""
    ones = set(one_way_cliques(schema))
    selected = [clique for clique in measured if clique not in ones]
    holding = sum(column in clique for clique in selected)
    return {"selected_marginals": len(selected), "split_column_marginals": holding,
            "split_column_share": holding / len(selected) if selected else 0.0,
            "split_column_text": f"{holding}/{len(selected)}"}


def split_spec(ds: Dataset, split: str) -> str:
    return f"by-column:{ds.by_column}" if split == "by-column" else split


def generate(ds: Dataset, epsilon: float, split: str, settings: GeneratorSettings,
             options: Options) -> tuple[np.ndarray, pd.DataFrame, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        if split == "central":  # two nominal parties only to pass JobConfig's t < parties: t = 1
            config = job(ds, epsilon, 2, Path(tmp), replace(settings, organisation_column=False), options, split)
            return central(config, ds.train, ds.by_column)
        name = f"{ds.key}-eps{epsilon:g}-{split.replace(':', '')}-{options.labels_for(ds, split)}-seed{options.seed}"
        out = (options.keep if options.keep is not None else Path(tmp)) / name
        return federated(job(ds, epsilon, ds.parties, out, settings, options, split), ds, split_spec(ds, split))


def independent(ds: Dataset) -> pd.DataFrame:
    """Each column drawn on its own from its exact real 1-way marginal (the real rows' values)."""
    rng = np.random.default_rng(0)
    table = ds.schema.conform(ds.train)
    return pd.DataFrame({c: table[c].to_numpy()[rng.integers(0, len(table), len(table))] for c in table.columns})


def scale_rows(ds: Dataset, scorer: Scorer) -> list[dict]:
    """Rows for scale, read under the schema's columns only: independent draws break its rules (a
    child with an income), which the scores count rather than refuse."""
    columns_only = replace(ds.schema, rules=())
    frame = columns_only.conform(independent(ds))
    rows = [{"run": "independent 1-way (exact)", **scorer.score(columns_only.encode(frame), frame)}]
    if ds.other_year is not None:
        other = columns_only.conform(ds.other_year)
        rows.append({"run": "real MA2018 vs MA2019", **scorer.score(columns_only.encode(other), other)})
    return rows


COLUMNS = [  # header, key, format, width
    ("run", "run", "{}", 36), ("eps", "epsilon", "{:g}", 5), ("spent", "spent", "{:.3f}", 7),
    ("time s", "seconds", "{:.0f}", 7), ("tvd2", "tvd2", "{:.4f}", 8), ("tvd3", "tvd3", "{:.4f}", 8),
    ("/central", "tvd2_vs_central", "{:.3f}", 9), ("/iid", "tvd2_vs_iid", "{:.3f}", 7),
    ("auc hgb", "auc_hgb", "{:.3f}", 8), ("SDNist k-marg", "sdnist_k_marginal", "{:.0f}", 14),
    ("pmse", "sdnist_pmse", "{:.4f}", 7), ("SDNist viol", "sdnist_violations", "{}", 12),
    ("own k-marg", "k_marginal", "{:.0f}", 11), ("own worst PUMA", "k_marginal_worst", "{:.0f}", 15),
    ("rules", "rule_violations", "{}", 6), ("w/ split col", "split_column_text", "{}", 13),
]
SDNIST_KEYS = {"sdnist_k_marginal", "sdnist_pmse", "sdnist_violations"}


def columns_for(ds: Dataset, sdnist: bool) -> list[tuple[str, str, str, int]]:
    skip = {"auc_hgb"} if ds.test is None else {"k_marginal", "k_marginal_worst"} | SDNIST_KEYS
    return [c for c in COLUMNS if c[1] not in skip and (sdnist or c[1] not in SDNIST_KEYS)]


def format_row(row: dict, columns: Sequence[tuple[str, str, str, int]]) -> str:
    cells = []
    for i, (_, key, fmt, width) in enumerate(columns):
        value = row.get(key)
        text = "-" if value is None else fmt.format(value)
        cells.append(f"{text:<{width}}" if i == 0 else f"{text:>{width}}")
    return "".join(cells)


def run_dataset(ds: Dataset, epsilons: Sequence[float], splits: Sequence[str], settings: GeneratorSettings,
                options: Options, judge: Judge | None = None) -> dict:
    scorer = Scorer(ds, judge)
    columns = columns_for(ds, judge is not None)
    print(f"\n== {ds.title}: {len(ds.train):,} rows, {ds.parties} organisations, delta {ds.delta:g}"
          + (f", TSTR on {len(ds.test):,} held-out rows" if ds.test is not None else ""))
    for note in ds.notes:
        print(f"   {note}")
    header = format_row({key: head for head, key, *_ in columns}, [(h, k, "{}", w) for h, k, _, w in columns])
    print(header + "\n" + "-" * len(header))
    runs = []
    for epsilon in epsilons:
        by_split: dict[str, dict] = {}
        for split in splits:
            started = time.time()
            codes, frame, extras = generate(ds, epsilon, split, settings, options)
            seconds = time.time() - started
            labels = options.labels_for(ds, split)
            name = "central (1 curator, same code)" if split == "central" else f"fedsynth {split_spec(ds, split)}, {labels}"
            row = {"run": name, "split": split, "epsilon": epsilon, "seconds": seconds, "labels": labels,
                   "parties": 1 if split == "central" else ds.parties, **extras, **scorer.score(codes, frame)}
            by_split[split] = row
            add_ratios(row, by_split)
            runs.append(row)
            print(format_row(row, columns), flush=True)
    scale = scale_rows(ds, scorer)
    print("for scale:")
    for row in scale:
        print(format_row(row, columns))
    return {"title": ds.title, "rows": len(ds.train), "parties": ds.parties, "delta": ds.delta,
            "notes": list(ds.notes), "runs": runs, "scale": scale}


def add_ratios(row: dict, by_split: Mapping[str, dict]) -> None:
    """TVD2 of a federated row over the central run's, and of the by-column row over IID's."""
    if row["split"] != "central" and "central" in by_split:
        row["tvd2_vs_central"] = row["tvd2"] / by_split["central"]["tvd2"]
    if row["split"] == "by-column" and "iid" in by_split:
        row["tvd2_vs_iid"] = row["tvd2"] / by_split["iid"]["tvd2"]
        if "sdnist_k_marginal" in row:
            row["sdnist_vs_iid"] = row["sdnist_k_marginal"] / by_split["iid"]["sdnist_k_marginal"]
            row["sdnist_gap_vs_iid"] = abs(row["sdnist_vs_iid"] - 1)
        if "split_column_share" in row:
            row["split_column_points_vs_iid"] = 100 * abs(row["split_column_share"] - by_split["iid"]["split_column_share"])


@dataclass(frozen=True)
class Target:
    text: str
    dataset: str
    split: str | None  # None: every federated run
    key: str
    bound: float
    at_most: bool
    labels: str | None = None  # only runs with these labels (None: any)
    parties: int | None = None  # only runs with this many organisations (None: any)


TARGETS = [
    Target("ACS 5 orgs eps 1: by-column TVD2 <= 1.10 x IID TVD2", "acs", "by-column", "tvd2_vs_iid", 1.10, True,
           parties=5),
    Target("ACS 5 orgs eps 1: k-marginal >= 820 (by-column)", "acs", "by-column", "k_marginal", 820, False, parties=5),
    Target("ACS eps 1: zero rule violations (by-column)", "acs", "by-column", "rule_violations", 0, True),
    Target("ACS 5 orgs eps 1: SDNist k-marginal >= 850 (by-column)", "acs", "by-column", "sdnist_k_marginal", 850,
           False, parties=5),
    Target("ACS 5 orgs eps 1: SDNist k-marginal >= 850 (iid)", "acs", "iid", "sdnist_k_marginal", 850, False,
           parties=5),
    Target("ACS 5 orgs eps 1: SDNist pmse <= 0.05 (by-column)", "acs", "by-column", "sdnist_pmse", 0.05, True,
           parties=5),
    Target("ACS eps 1: SDNist 0 inconsistent records (by-column)", "acs", "by-column", "sdnist_violations", 0, True),
    Target("ACS 5 orgs eps 1: SDNist k-marginal by-column >= 0.98 x IID", "acs", "by-column", "sdnist_vs_iid", 0.98,
           False, parties=5),
    Target("ACS 20 orgs eps 1: share of marginals w/ PUMA within 20 points of IID", "acs", "by-column",
           "split_column_points_vs_iid", 20, True, parties=20),
    Target("ACS 20 orgs eps 1: SDNist k-marginal by-column within 2% of IID", "acs", "by-column",
           "sdnist_gap_vs_iid", 0.02, True, parties=20),
    Target("Adult 10 orgs dirichlet:0.5 eps 1, default labels: TVD2 <= 0.047", "adult", "dirichlet:0.5", "tvd2",
           0.047, True, "sample", parties=10),
    Target("Adult 10 orgs dirichlet:0.5 eps 1, default labels: TSTR AUC >= 0.90", "adult", "dirichlet:0.5",
           "auc_hgb", 0.90, False, "sample", parties=10),
    Target("Adult 10 orgs dirichlet:0.5 eps 1, generator labels: TVD2 <= 0.045", "adult", "dirichlet:0.5", "tvd2",
           0.045, True, "generator", parties=10),
    Target("end to end <= 10 min each (slowest federated run)", "*", None, "seconds", 600, True),
]


def judge(target: Target, results: Mapping[str, dict]) -> dict:
    runs = [r for key, res in results.items() if target.dataset in ("*", key) for r in res["runs"]
            if (r["split"] == target.split or (target.split is None and r["split"] != "central"))
            and (target.split is None or r["epsilon"] == 1) and target.labels in (None, r.get("labels"))
            and target.parties in (None, r["parties"])]
    values = [r.get(target.key) for r in runs]
    if not runs:
        return {"target": target.text, "value": None, "status": "not run"}
    if any(v is None for v in values):
        return {"target": target.text, "value": None, "status": "n/a"}
    value = max(values) if target.at_most else min(values)
    met = value <= target.bound if target.at_most else value >= target.bound
    return {"target": target.text, "value": value, "status": "met" if met else "missed"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="adult,acs")
    parser.add_argument("--epsilons", default="1,3")
    parser.add_argument("--splits", default="central,iid,dirichlet:0.5,by-column")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke configuration: first epsilon only, {QUICK_ROWS} real rows (fixed-seed "
                        "subsample), a small generator; figures not comparable with the targets")
    parser.add_argument("--labels", default="generator", choices=["generator", "sample", "argmax"],
                        help="labels of the federated runs (sample: the default path, a DP teacher and its "
                        "student; the central run always uses the generator's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the federated jobs")
    parser.add_argument("--budget-split", default=None,
                        help="the federated runs' shares of the budget with a teacher (--labels sample or argmax), "
                        "as fedsynth's --budget-split, e.g. generator=0.8,teacher=0.2 (default: the job's)")
    parser.add_argument("--parties", type=int, default=None,
                        help="organisations of the federated runs (default: the dataset's, ACS 5 and Adult 10); "
                        "by-column with more organisations than the column's values shares each value among "
                        "parties / values organisations (a multiple of them)")
    parser.add_argument("--keep", type=Path, default=None, help="keep every federated release in this folder")
    parser.add_argument("--no-sdnist", action="store_true", help="skip SDNist's own scores of the ACS runs")
    add_data_root(parser)
    add_sdnist_options(parser)
    args = parser.parse_args()
    keys = args.datasets.split(",")
    unknown = [k for k in keys if k not in LOADERS]
    if unknown:
        sys.exit(f"heterogeneity.py: unknown dataset {', '.join(map(repr, unknown))}; use {', '.join(LOADERS)}")
    root = data_root(args.data_root, keys, "heterogeneity.py")
    epsilons = [float(e) for e in args.epsilons.split(",")][: 1 if args.quick else None]
    settings = QUICK_GENERATOR if args.quick else GeneratorSettings()
    if args.quick:
        print(f"QUICK smoke run: {settings}")
    results = {}
    for key in keys:
        ds = with_parties(LOADERS[key](root, args.quick), args.parties)
        sdnist = None
        if key == "acs" and not args.no_sdnist:
            try:
                sdnist = sdnist_judge(ds, args.sdnist_root, args.sdnist_cache)
            except SdnistUnavailable as exc:
                sys.exit(f"heterogeneity.py: {exc}; or pass --no-sdnist")
        options = Options(args.labels, args.seed, args.keep, args.budget_split)
        results[key] = run_dataset(ds, epsilons, args.splits.split(","), settings, options, sdnist)
    print("\nTargets (issues 12 and 23)" + (" (quick configuration: for the full run only)" if args.quick else ""))
    verdicts = [judge(t, results) for t in TARGETS]
    for v in verdicts:
        value = "-" if v["value"] is None else f"{v['value']:.4g}"
        print(f"  {v['target']:<72}{value:>10}  {v['status']}")
    if args.json:
        args.json.write_text(json.dumps({"quick": args.quick, "data_root": str(root), "datasets": results,
                                         "targets": verdicts}, indent=2))


if __name__ == "__main__":
    main()
