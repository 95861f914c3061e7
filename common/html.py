"""A small toolkit for self-contained HTML reports: one file, inline CSS, plots as data URIs.

Reports are read offline by people who sign off a release, so a page must make no external
request: no scripts, fonts, stylesheets or images from anywhere. Every piece of text is
escaped; figures are rendered by matplotlib's Agg backend (no display needed) into PNGs
embedded as ``data:`` URIs. No privacy mechanism lives here: a report is post-processing of
what it is given.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from numbers import Integral, Real

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 60rem; padding: 0 1rem; color: #1b1b1b; line-height: 1.5; }
h1 { font-size: 1.7rem; border-bottom: 2px solid #ccc; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .85rem; }
"""


def page(title: str, sections: Sequence[str]) -> str:
    """A complete HTML5 document with ``title`` as its heading and ``sections`` in order."""
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def section(heading: str, *parts: str) -> str:
    """A ``<section>`` with an ``<h2>`` heading; ``parts`` are HTML fragments from this module."""
    anchor = "".join(c if c.isalnum() else "-" for c in heading.lower()).strip("-")
    inner = "\n".join(parts)
    return f'<section id="{html.escape(anchor)}">\n<h2>{html.escape(heading)}</h2>\n{inner}\n</section>'


def paragraph(text: str) -> str:
    """A ``<p>`` holding ``text``, escaped."""
    return f"<p>{html.escape(text)}</p>"


def preformatted(text: str) -> str:
    """A ``<pre>`` block holding ``text``, escaped (job files, schemas)."""
    return f"<pre>{html.escape(text)}</pre>"


def format_value(value: object) -> str:
    """A cell's text: integers with thousands separators, reals to 4 significant digits."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        x = float(value)
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:,.0f}" if abs(x) >= 1e6 else f"{x:.4g}"
    return "" if value is None else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A ``<table>``: escaped cells, numbers formatted by :func:`format_value` and right-aligned."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, Real) and not isinstance(value, bool)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{html.escape(format_value(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    rows_html = "\n".join(body)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows_html}\n</tbody>\n</table>"


def figure(fig: Figure, alt: str) -> str:
    """A matplotlib figure as an embedded PNG in a ``<figure>``, captioned with ``alt``; closes ``fig``."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    text = html.escape(alt)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{text}">'
        f"<figcaption>{text}</figcaption></figure>"
    )
