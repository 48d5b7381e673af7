"""Building blocks of rmcluster's HTML reports: one self-contained page, inline CSS, embedded PNGs.

Nothing is fetched: no scripts, fonts or stylesheets from elsewhere, so a report opens from disk or a
bucket, offline. Every number shown from a summary JSON carries its place there (`data-key`, a JSON
list of keys) and its exact value (`data-value`), so a test can check the page against the file.
matplotlib renders off-screen (Agg) and is imported only when a figure is drawn.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

Key = Sequence[Union[str, int]]

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; background: #f6f7f9;
       margin: 0; }
main { max-width: 980px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.1em; }
.subtitle { color: #5a6272; margin: 0 0 1.2em; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 14px 20px 16px; margin: 16px 0; }
h2 { font-size: 1.15em; margin: 0.2em 0 0.6em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #eceef2; vertical-align: top; }
th { font-weight: 600; color: #3b4252; background: #f1f3f6; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { color: #5a6272; font-size: 0.92em; margin: 0.6em 0 0; }
.notice { background: #fff7e0; border: 1px solid #f0d68a; border-radius: 6px; padding: 8px 12px; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eceef2; }
figcaption { color: #3b4252; font-size: 0.93em; margin-top: 4px; }
.text { white-space: pre-wrap; font: 12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, monospace; max-height: 14em;
        overflow: auto; background: #f8f9fb; padding: 4px 6px; border-radius: 4px; }
"""


def fmt(value: Any) -> str:
    """A number as a reader wants it: ints whole, floats to 4 decimals (1 past 1000), missing as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def num(value: Any, key: Optional[Key] = None) -> str:
    """A number, tagged with where it lives in the summary JSON when `key` is given."""
    if key is None:
        return html.escape(fmt(value))
    attrs = f' data-key="{html.escape(json.dumps(list(key)))}" data-value="{html.escape(json.dumps(value))}"'
    return f'<span class="num"{attrs}>{html.escape(fmt(value))}</span>'


def interval(values: Optional[Sequence[float]], key: Key) -> str:
    if not values:
        return "—"
    return f"[{num(values[0], [*key, 0])}, {num(values[1], [*key, 1])}]"


@dataclass(frozen=True)
class Column:
    title: str
    numeric: bool = False


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], table_id: str = "") -> str:
    """Cells are HTML already (made with `num`, `interval` or `text`)."""
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    head = "".join(f'<th class="n">{html.escape(c.title)}</th>' if c.numeric else f"<th>{html.escape(c.title)}</th>"
                   for c in columns)
    body = "\n".join(
        "<tr>" + "".join(f'<td class="n">{cell}</td>' if c.numeric else f"<td>{cell}</td>" for c, cell in zip(columns, row))
        + "</tr>" for row in rows)
    return f"<table{ident}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def key_values(rows: Sequence[tuple[str, str]], table_id: str = "") -> str:
    """A two-column table of a label and a value (already HTML)."""
    return table([Column("figure"), Column("value", numeric=True)], [[html.escape(k), v] for k, v in rows], table_id)


def text(value: Optional[str], limit: int = 1200) -> str:
    """Record text, escaped and cut to `limit` characters."""
    if value is None:
        return '<span class="note">(text not available)</span>'
    cut = value if len(value) <= limit else value[:limit] + " …"
    return f'<div class="text">{html.escape(cut)}</div>'


def section(section_id: str, heading: str, body: str) -> str:
    return f'<section id="{html.escape(section_id)}">\n<h2>{html.escape(heading)}</h2>\n{body}\n</section>'


def note(message: str, notice: bool = False) -> str:
    return f'<p class="{"note notice" if notice else "note"}">{html.escape(message)}</p>'


@dataclass(frozen=True)
class Figure:
    """A rendered plot: what it shows (alt), and a caption saying how to read it."""

    figure_id: str
    alt: str
    caption: str
    png: str  # base64

    def html(self) -> str:
        return (f'<figure id="{html.escape(self.figure_id)}"><img alt="{html.escape(self.alt)}" '
                f'src="data:image/png;base64,{self.png}">\n<figcaption>{html.escape(self.caption)}</figcaption></figure>')


def pyplot() -> Any:
    """matplotlib's pyplot on the off-screen Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> str:
    """A figure as base64 PNG; closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style></head>\n<body><main>\n"
        f"<h1>{html.escape(title)}</h1>\n<p class=\"subtitle\">{html.escape(subtitle)}</p>\n"
        + "\n".join(sections) + "\n</main></body></html>\n"
    )
