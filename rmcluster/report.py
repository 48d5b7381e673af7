"""`report.html` for a results store: score histograms, per-label histograms for pairs, margins.

One self-contained file (PNG images embedded as base64), so it opens from disk or a bucket
without a server. matplotlib renders off-screen (Agg) and is imported only here.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .summary import format_summary, pair_margins

BINS = 50


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figures(ok: pa.Table) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    scores = ok["score"].to_numpy(zero_copy_only=False)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(scores, bins=BINS, color="#4c72b0")
    ax.set(title=f"Scores ({len(scores)} items)", xlabel="score", ylabel="items")
    out.append(("Score distribution", _png(fig)))
    plt.close(fig)

    if "step_scores" in ok.column_names:
        steps = pc.list_flatten(ok["step_scores"].combine_chunks()).to_numpy(zero_copy_only=False)
        if len(steps):
            fig, ax = plt.subplots(figsize=(7, 3.5))
            ax.hist(steps, bins=BINS, color="#dd8452")
            ax.set(title=f"Step scores ({len(steps)} steps)", xlabel="step score", ylabel="steps")
            out.append(("Step scores (process reward)", _png(fig)))
            plt.close(fig)

    pairs = pair_margins(ok)
    if pairs.num_rows:
        import numpy as np

        sides = {label: pairs[label].to_numpy(zero_copy_only=False) for label in ("chosen", "rejected")}
        edges = np.histogram_bin_edges(np.concatenate(list(sides.values())), bins=BINS)  # shared, so bars compare
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for (label, values), color in zip(sides.items(), ("#55a868", "#c44e52")):
            ax.hist(values, bins=edges.tolist(), alpha=0.6, label=label, color=color)
        ax.set(title=f"Scores by label ({pairs.num_rows} pairs)", xlabel="score", ylabel="items")
        ax.legend()
        out.append(("Chosen vs rejected", _png(fig)))
        plt.close(fig)

        margins = pairs["margin"].to_numpy(zero_copy_only=False)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist(margins, bins=BINS, color="#8172b2")
        ax.axvline(0, color="black", linewidth=1)
        accuracy = float((margins > 0).mean())
        ax.set(title=f"Margin chosen - rejected (accuracy {accuracy:.3f})", xlabel="margin", ylabel="pairs")
        out.append(("Preference margins", _png(fig)))
        plt.close(fig)
    return out


def render_report(table: pa.Table, summary: dict[str, Any], title: str = "rmcluster results") -> str:
    """HTML for a results table (the store's rows) and its summary dict."""
    ok = table.filter(pc.is_null(table["error"]))
    body = [f"<h1>{html.escape(title)}</h1>", f"<pre>{html.escape(format_summary(summary))}</pre>"]
    if ok.num_rows:
        for heading, png in _figures(ok):
            body.append(f'<h2>{html.escape(heading)}</h2>\n<img alt="{html.escape(heading)}" src="data:image/png;base64,{png}">')
    else:
        body.append("<p>No scored items.</p>")
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
