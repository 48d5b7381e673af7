"""`report.html` for a results store: a headline table of the store's totals, the evaluation per subset
and section, plots with captions, and the last run's figures in a section of their own.

The store's figures (everything in it, whichever run wrote it) and the last run's (what this
invocation scored, how fast) are kept apart: a resumed run with nothing left to score says so
instead of showing a rate of 0 beside the store's totals. The page is self-contained (html_report).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import html_report as h
from .evaluation import scored_pairs
from .rewardbench import SECTIONS

BINS = 50
COLORS = {"chosen": "#55a868", "rejected": "#c44e52", "score": "#4c72b0", "margin": "#8172b2", "step": "#dd8452"}


def _headline(summary: dict[str, Any]) -> str:
    ev = summary.get("eval", {})
    rows = [("model", html.escape(str(summary.get("model", "—"))))]
    rows += [(k, h.num(summary.get(k), [k])) for k in ("records", "items", "scored", "errors", "truncated", "tokens")]
    if "pairs" in ev:
        rows.append(("preference pairs (both sides scored)", h.num(ev["pairs"], ["eval", "pairs"])))
    if "accuracy" in ev:
        rows += [("accuracy (chosen > rejected; ties wrong)", h.num(ev["accuracy"], ["eval", "accuracy"])),
                 ("95% bootstrap interval", h.interval(ev["ci95"], ["eval", "ci95"])),
                 ("mean margin (chosen − rejected)", h.num(ev["margin_mean"], ["eval", "margin_mean"])),
                 ("ties", h.num(ev["ties"], ["eval", "ties"]))]
    if ev.get("unscored_pairs"):
        rows.append(("pairs left out (a side is an error row)", h.num(ev["unscored_pairs"], ["eval", "unscored_pairs"])))
    if "score" in ev:
        rows.append(("RewardBench score (mean of the four sections)", h.num(ev["score"], ["eval", "score"])))
    body = h.key_values(rows, "headline-table")
    body += h.note("Totals over every row in the results store, whichever run wrote it. "
                   "Scores are raw rewards (no sigmoid).")
    return h.section("headline", "Results store", body)


def _subsets(ev: dict[str, Any]) -> str:
    cols = [h.Column("subset"), h.Column("pairs", True), h.Column("accuracy", True), h.Column("95% interval", True),
            h.Column("mean margin", True), h.Column("ties", True), h.Column("left out", True)]
    rows = []
    for name, s in ev["subsets"].items():
        key = ["eval", "subsets", name]
        rows.append([html.escape(name), h.num(s["pairs"], [*key, "pairs"]),
                     h.num(s.get("accuracy"), [*key, "accuracy"]) if "accuracy" in s else "—",
                     h.interval(s.get("ci95"), [*key, "ci95"]),
                     h.num(s.get("margin_mean"), [*key, "margin_mean"]) if "margin_mean" in s else "—",
                     h.num(s.get("ties"), [*key, "ties"]) if "ties" in s else "—",
                     h.num(s["unscored_pairs"], [*key, "unscored_pairs"])])
    b = ev["bootstrap"]
    body = h.table(cols, rows, "subsets-table") + h.note(
        f"Accuracy: share of pairs whose chosen response scores strictly above the rejected one (a tie is wrong, "
        f"as in RewardBench). Interval: {b['interval']} bootstrap over pairs, {b['resamples']} resamples, seed {b['seed']}.")
    return h.section("subsets", "Accuracy per subset", body)


def _sections(ev: dict[str, Any]) -> str:
    cols = [h.Column("section"), h.Column("score", True), h.Column("subsets present")]
    rows = []
    for name, score in ev["sections"].items():
        present = [s for s in SECTIONS[name] if s in ev["subsets"] and "accuracy" in ev["subsets"][s]]
        rows.append([html.escape(name), h.num(score, ["eval", "sections", name]),
                     html.escape(f"{len(present)} of {len(SECTIONS[name])}: " + ", ".join(present))])
    body = h.table(cols, rows, "sections-table") + h.note(
        "Section score: mean of its subsets' accuracies weighted by RewardBench's example counts (math-prm weighs as "
        "much as the six hep-* subsets together). The RewardBench score is the mean of the four sections, shown only "
        "when all four are present.")
    return h.section("sections", "RewardBench sections", body)


def _last_run(summary: dict[str, Any]) -> str:
    run = summary["run"]
    rows = [(label, h.num(run.get(k), ["run", k])) for k, label in (
        ("rows_written", "rows written"), ("files_written", "files written"), ("tokens_scored", "tokens scored"),
        ("already_stored", "items already in the store (skipped)"), ("duplicates_removed", "duplicate rows removed"),
        ("wall_seconds", "wall time, s"), ("tokens_per_s", "tokens per second")) if k in run]
    body = ""
    if not run.get("rows_written"):
        body += h.note(f"Nothing left to score: all {run.get('already_stored', 0):,} items were already in the store, "
                       "so this run wrote nothing and has no throughput.", notice=True)
    body += h.key_values(rows, "last-run-table")
    finished = summary.get("finished_at")
    body += h.note("What the last invocation did, not the store as a whole" + (f"; finished {finished}." if finished else "."))
    return h.section("last-run", "Last run", body)


def _details(summary: dict[str, Any]) -> str:
    rows = [(k, h.num(summary[k], [k])) for k in ("score_mean", "score_std", "score_min", "score_max") if k in summary]
    rows += [(f"score {q}", h.num(v, ["score_quantiles", q])) for q, v in summary.get("score_quantiles", {}).items()]
    rows += [(f"mean value {k}", h.num(v, ["values_mean", k])) for k, v in summary.get("values_mean", {}).items()]
    rows += [(f"step scores {k}", h.num(v, ["step_scores", k])) for k, v in summary.get("step_scores", {}).items()]
    rows += [(f"judge {k}", h.num(v, ["judge", k])) for k, v in summary.get("judge", {}).items()]
    return h.section("distribution", "Score statistics", h.key_values(rows, "distribution-table"))


def _hist(values: np.ndarray, title: str, xlabel: str, ylabel: str, color: str, zero_line: bool = False) -> str:
    plt = h.pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(values, bins=BINS, color=color)
    if zero_line:
        ax.axvline(0, color="black", linewidth=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return h.png(fig)


def _subset_bars(ev: dict[str, Any]) -> str:
    named = [(k, v) for k, v in ev["subsets"].items() if "accuracy" in v]
    plt = h.pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.32 * len(named)))
    acc = np.array([v["accuracy"] for _, v in named])
    lo = acc - np.array([v["ci95"][0] for _, v in named])
    hi = np.array([v["ci95"][1] for _, v in named]) - acc
    y = np.arange(len(named))
    ax.barh(y, acc, xerr=[lo, hi], color="#4c72b0", ecolor="#333", capsize=3)
    ax.axvline(0.5, color="#999", linestyle="--", linewidth=1)
    ax.set_yticks(y, [f"{k} ({v['pairs']})" for k, v in named])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="accuracy", title="Accuracy per subset")
    return h.png(fig)


def figures(ok: pa.Table, summary: dict[str, Any]) -> list[h.Figure]:
    """The store's plots, each with a caption saying how to read it."""
    out = []
    scores = ok["score"].to_numpy(zero_copy_only=False)
    out.append(h.Figure("fig-scores", "Score distribution", f"Rewards of the {len(scores):,} scored items (raw scores).",
                        _hist(scores, f"Scores ({len(scores)} items)", "score", "items", COLORS["score"])))
    pairs = scored_pairs(ok)
    if pairs.num_rows:
        plt = h.pyplot()
        sides = {label: pairs[label].to_numpy(zero_copy_only=False) for label in ("chosen", "rejected")}
        edges = np.histogram_bin_edges(np.concatenate(list(sides.values())), bins=BINS)  # shared, so bars compare
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for label, values in sides.items():
            ax.hist(values, bins=edges.tolist(), alpha=0.6, label=label, color=COLORS[label])
        ax.set(title=f"Scores by label ({pairs.num_rows} pairs)", xlabel="score", ylabel="items")
        ax.legend()
        out.append(h.Figure("fig-chosen-rejected", "Chosen vs rejected scores",
                            "Scores of the chosen (green) and rejected (red) responses, on shared bins.", h.png(fig)))
        margins = pairs["margin"].to_numpy(zero_copy_only=False)
        out.append(h.Figure(
            "fig-margins", "Margin histogram",
            f"chosen − rejected per pair; pairs right of the line are right (accuracy {float((margins > 0).mean()):.4f}, "
            "ties count as wrong).",
            _hist(margins, f"Margins ({len(margins)} pairs)", "margin", "pairs", COLORS["margin"], zero_line=True)))
    ev = summary.get("eval", {})
    if any("accuracy" in v for v in ev.get("subsets", {}).values()):
        out.append(h.Figure("fig-subsets", "Accuracy per subset",
                            "Accuracy per subset (pairs in brackets) with its 95% bootstrap interval; "
                            "the dashed line is chance (0.5).", _subset_bars(ev)))
    if "step_scores" in ok.column_names:
        steps = pc.list_flatten(ok["step_scores"].combine_chunks()).to_numpy(zero_copy_only=False)
        if len(steps):
            out.append(h.Figure("fig-steps", "Step scores", f"Per-step scores of process reward models ({len(steps):,} steps).",
                                _hist(steps, f"Step scores ({len(steps)} steps)", "step score", "steps", COLORS["step"])))
    return out


def render_report(table: pa.Table, summary: dict[str, Any], title: str = "rmcluster results") -> str:
    """HTML for a results table (the store's rows) and its summary dict (summary.json)."""
    ok = table.filter(pc.and_(pc.is_null(table["error"]), pc.is_valid(table["score"])))
    ev = summary.get("eval", {})
    sections = [_headline(summary)]
    if ev.get("subsets"):
        sections.append(_subsets(ev))
    if ev.get("sections"):
        sections.append(_sections(ev))
    plots = "\n".join(f.html() for f in figures(ok, summary)) if ok.num_rows else h.note("No scored items.")
    sections.append(h.section("plots", "Plots", plots))
    if ok.num_rows:
        sections.append(_details(summary))
    if "run" in summary:
        sections.append(_last_run(summary))
    return h.page(title, f"{summary.get('model', '')} · {summary.get('input', '')}".strip(" ·"), sections)
