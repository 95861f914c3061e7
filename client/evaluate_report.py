"""``evaluation.html``: the figures of ``client.evaluate`` as one self-contained page.

Rendered from ``evaluation.json``'s figures alone (``common.html``: inline CSS, plots embedded as
PNG data URIs, no external request). It describes the organisation's own rows, like the JSON:
it stays on the organisation's machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..common import html

#: Columns per row of the 1-way distribution plots.
GRID = 3


def render_page(result: dict[str, Any]) -> str:
    sections = [
        _summary(result),
        _column_shapes(result["fidelity"]),
        _pair_trends(result["fidelity"]),
        _tstr(result["tstr"]),
        _privacy(result["privacy_risk"], result["control"] is not None),
        _dcr(result["distance_to_closest_record"]),
    ]
    return html.page(f"Evaluation of {result['release']} against {result['real']['file']}", sections)


def _summary(result: dict[str, Any]) -> str:
    f = result["fidelity"]
    rows: list[list[object]] = [
        ["quality score (mean of the two below)", f["quality_score"]],
        ["column shapes", f["column_shapes"]["score"]],
        ["column pair trends", f["column_pair_trends"]["score"]],
        ["mean 2-way TVD (lower is better)", f["tvd"]["two_way"]],
        [f"mean 3-way TVD over {f['tvd']['three_way_marginals']} triples", f["tvd"]["three_way"]],
    ]
    if result["tstr"] is not None:
        rows.append(["TSTR AUC (trained on synthetic, tested on real)", result["tstr"]["synthetic"]["auc"]])
        rows.append(["TRTR AUC (trained on real, same test rows)", result["tstr"]["real"]["auc"]])
    for name, probe in result["privacy_risk"].items():
        rows.append([f"{name.replace('_', ' ')} risk (against the {probe['risk_against']})", probe["risk"]["risk"]])
    warnings = result.get("share_warnings", [])
    return html.section(
        "Summary",
        html.paragraph(
            f"{result['synthetic_rows']:,} synthetic rows of the release against {result['real']['rows']:,} real rows "
            f"of this organisation, on schema '{result['schema']}'. {result['privacy']}"
        ),
        html.table(["figure", "value"], rows),
        *([html.paragraph("Warning: groups whose share in the release is far from the release's measurements "
                          "(beyond noise and sampling):"), html.table(["group"], [[w] for w in warnings])]
          if warnings else []),
    )


def _column_shapes(f: dict[str, Any]) -> str:
    columns = f["column_shapes"]["columns"]
    table = html.table(["column", "metric", "score"], [[c["column"], c["metric"], c["score"]] for c in columns])
    height = (len(columns) + GRID - 1) // GRID
    fig = Figure(figsize=(12, 3.2 * height))
    for k, c in enumerate(columns):
        ax = fig.add_subplot(height, GRID, k + 1)
        x = np.arange(len(c["values"]))
        ax.bar(x - 0.2, c["real"], width=0.4, label="real (yours)", color="#4c72b0")
        ax.bar(x + 0.2, c["synthetic"], width=0.4, label="synthetic", color="#dd8452")
        ax.set_title(f"{c['column']} ({c['metric']} {c['score']:.2f})", fontsize=9)
        ax.set_xticks(x, c["values"] if len(x) <= 16 else [""] * len(x), rotation=90, fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return html.section(
        "Column shapes",
        html.paragraph(
            "How well each column's distribution is kept: 1 - Kolmogorov-Smirnov statistic (KSComplement) for "
            "numeric values, 1 - total variation distance (TVComplement) for categories; 1 is a perfect match."
        ),
        table,
        html.figure(fig, "Share of rows in each category or public bin: your rows against the synthetic rows"),
    )


def _pair_trends(f: dict[str, Any]) -> str:
    names = [c["column"] for c in f["column_shapes"]["columns"]]
    pairs = f["column_pair_trends"]["pairs"]
    grid = np.full((len(names), len(names)), np.nan)
    for p in pairs:
        i, j = names.index(p["columns"][0]), names.index(p["columns"][1])
        grid[i, j] = grid[j, i] = p["score"]
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(image, ax=ax, label="pair trend score")
    fig.tight_layout()
    worst = sorted(pairs, key=lambda p: p["score"])[:10]
    return html.section(
        "Column pair trends",
        html.paragraph(
            "How well each pair of columns moves together: 1 - |difference of Pearson correlations| / 2 "
            "(CorrelationSimilarity) for two numeric columns, 1 - total variation distance of their 2-way table "
            "(ContingencySimilarity, numbers in the schema's public bins) otherwise. The ten worst pairs:"
        ),
        html.table(["columns", "metric", "score"], [[" x ".join(p["columns"]), p["metric"], p["score"]] for p in worst]),
        html.figure(fig, "Pair trend score of every pair of columns (1 is a perfect match)"),
        html.paragraph(
            f"Mean total variation distance over every 2-way marginal: {html.format_value(f['tvd']['two_way'])}; "
            f"over {f['tvd']['three_way_marginals']} random 3-way marginals: {html.format_value(f['tvd']['three_way'])}."
        ),
    )


def _tstr(tstr: dict[str, Any] | None) -> str:
    if tstr is None:
        return html.section("Train on synthetic, test on real", html.paragraph("The schema names no label column."))
    rows = [["synthetic rows", tstr["synthetic"]["auc"], tstr["synthetic"]["accuracy"]],
            ["half of your real rows (baseline)", tstr["real"]["auc"], tstr["real"]["accuracy"]]]
    return html.section(
        "Train on synthetic, test on real",
        html.paragraph(
            f"A {tstr['model']} predicting '{tstr['label']}', tested on {tstr['test_rows']:,} of your rows; "
            "trained once on the synthetic rows and once on your other rows."
        ),
        html.table(["trained on", "AUC", "accuracy"], rows),
    )


def _privacy(probes: dict[str, Any], control: bool) -> str:
    rows = []
    for name, p in probes.items():
        rows.append([
            name.replace("_", " ") + (f" of {p['secret']}" if "secret" in p else ""),
            f"{p['attack']['rate']:.3f} [{p['attack']['low']:.3f}, {p['attack']['high']:.3f}]",
            p["baseline"]["rate"],
            p["control"]["rate"] if "control" in p else "no control rows",
            f"{p['risk']['risk']:.3f} [{p['risk']['low']:.3f}, {p['risk']['high']:.3f}]",
        ])
    basis = (
        "The risk is (attack - control) / (1 - control): the control rows took no part in the job, so what the attack "
        "gains on your rows beyond them is what the release reveals about your rows."
        if control else
        "No control rows were given (--control), so the risk is against a random baseline: it counts what the release "
        "teaches about the population (its utility) as well as what it reveals about your rows, and overstates the risk."
    )
    fig = Figure(figsize=(7, 3))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(probes))
    ax.bar(x - 0.25, [p["attack"]["rate"] for p in probes.values()], width=0.25, label="attack", color="#c44e52")
    ax.bar(x, [p["baseline"]["rate"] for p in probes.values()], width=0.25, label="baseline", color="#8c8c8c")
    if control:
        ax.bar(x + 0.25, [p["control"]["rate"] for p in probes.values()], width=0.25, label="control", color="#55a868")
    ax.set_xticks(x, [n.replace("_", " ") for n in probes])
    ax.set_ylabel("success rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return html.section(
        "Privacy-risk probes",
        html.paragraph(
            "anonymeter's three attacks (Giomi et al., PETS 2023) on the schema's codes: singling out one of your rows "
            "with a predicate read from the synthetic rows, linking two halves of a row through the synthetic rows, and "
            f"inferring a secret column from the others. Success rates with 95 % Wilson intervals. {basis}"
        ),
        html.table(["attack", "success rate", "baseline", "control", "risk"], rows),
        html.figure(fig, "Success rates of the attacks on your rows, against the baseline and control"),
    )


def _dcr(dcr: dict[str, Any]) -> str:
    rows = [[name, d["rows"], d["exact_copies"], d["median"]] for name, d in dcr.items() if isinstance(d, dict)]
    fig = Figure(figsize=(7, 3))
    ax = fig.add_subplot(1, 1, 1)
    for name, d in dcr.items():
        if isinstance(d, dict):
            ax.hist(d["distances"], bins=30, alpha=0.6, label=f"{name} rows", density=True)
    ax.set_xlabel("Gower distance to the closest synthetic row (schema codes)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return html.section(
        "Distance to closest record (secondary)",
        html.paragraph(
            "A secondary sanity check, not a privacy measure: a differentially private release may hold a copy of a "
            "common row, and a release that copies none may still leak. Read it against the control rows when given."
        ),
        html.table(["rows", "measured", "share with an exact synthetic copy", "median distance"], rows),
        html.figure(fig, "Distribution of the distance from each row to its closest synthetic row"),
    )
