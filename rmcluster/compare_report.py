"""`report.html` of `rmcluster compare`: the headline comparison, accuracy side by side, plots with
captions (A vs B scatter, both score distributions, both margin histograms, per-subset bars) and the
pairs the two decide differently, with their text. Self-contained, as every rmcluster report."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from . import html_report as h
from .compare import Run, shared_items, shared_pairs
from .evaluation import scored_pairs

BINS = 40
A_COLOR, B_COLOR = "#4c72b0", "#dd8452"


def _headline(c: dict[str, Any]) -> str:
    acc = c["accuracy"]
    rows = [("run A", html.escape(f"{c['a']['path']} ({c['a']['model']})")),
            ("run B", html.escape(f"{c['b']['path']} ({c['b']['model']})")),
            ("items scored in both", h.num(c["shared_items"], ["shared_items"])),
            ("Spearman rank correlation of scores", h.num(c["spearman"], ["spearman"])),
            ("Kendall tau-b of scores", h.num(c["kendall_tau_b"], ["kendall_tau_b"])),
            ("pairs scored in both", h.num(c["shared_pairs"], ["shared_pairs"]))]
    if c["shared_pairs"]:
        rows += [("pair agreement (same response preferred)", h.num(c["pair_agreement"], ["pair_agreement"])),
                 ("accuracy A (ties wrong)", h.num(acc["a"]["accuracy"], ["accuracy", "a", "accuracy"])),
                 ("95% interval A", h.interval(acc["a"]["ci95"], ["accuracy", "a", "ci95"])),
                 ("accuracy B (ties wrong)", h.num(acc["b"]["accuracy"], ["accuracy", "b", "accuracy"])),
                 ("95% interval B", h.interval(acc["b"]["ci95"], ["accuracy", "b", "ci95"])),
                 ("mean margin A", h.num(acc["a"]["margin_mean"], ["accuracy", "a", "margin_mean"])),
                 ("mean margin B", h.num(acc["b"]["margin_mean"], ["accuracy", "b", "margin_mean"]))]
    body = h.key_values(rows, "headline-table") + h.note(
        "Correlations over the items scored in both runs; agreement and accuracies over the pairs scored in both, "
        "so both runs are judged on the same pairs.")
    return h.section("headline", "A vs B", body)


def _subsets(c: dict[str, Any]) -> str:
    cols = [h.Column("subset"), h.Column("pairs", True), h.Column("accuracy A", True), h.Column("accuracy B", True),
            h.Column("B − A", True), h.Column("agreement", True)]
    rows = []
    for name, s in c["subsets"].items():
        key = ["subsets", name]
        diff = s["b"]["accuracy"] - s["a"]["accuracy"]
        rows.append([html.escape(name), h.num(s["pairs"], [*key, "pairs"]), h.num(s["a"]["accuracy"], [*key, "a", "accuracy"]),
                     h.num(s["b"]["accuracy"], [*key, "b", "accuracy"]), html.escape(f"{diff:+.4f}"),
                     h.num(s["agreement"], [*key, "agreement"])])
    body = h.table(cols, rows, "subsets-table")
    if "sections" in c:
        srows = [[html.escape(n), h.num(s["a"], ["sections", n, "a"]), h.num(s["b"], ["sections", n, "b"])]
                 for n, s in c["sections"].items()]
        body += "\n<h3>RewardBench sections</h3>\n" + h.table(
            [h.Column("section"), h.Column("A", True), h.Column("B", True)], srows, "sections-table")
    return h.section("subsets", "Accuracy per subset, side by side", body)


def _disagreements(c: dict[str, Any]) -> str:
    d = c["disagreements"]
    if d["kind"] == "pairs":
        cols = [h.Column("pair"), h.Column("margin A", True), h.Column("margin B", True), h.Column("prompt"),
                h.Column("chosen"), h.Column("rejected")]
        rows = [[html.escape(f"{r['id']}" + (f" ({r['subset']})" if r["subset"] else "")),
                 h.num(r["margin_a"], ["disagreements", "rows", i, "margin_a"]),
                 h.num(r["margin_b"], ["disagreements", "rows", i, "margin_b"]),
                 h.text(r.get("prompt")), h.text(r.get("chosen")), h.text(r.get("rejected"))]
                for i, r in enumerate(d["rows"])]
        lead = (f"{d['count']:,} of {c['shared_pairs']:,} pairs are decided differently; the {len(d['rows'])} shown are "
                "those both runs are surest of (margin over each run's own margin spread).")
    else:
        cols = [h.Column("item"), h.Column("score A", True), h.Column("score B", True), h.Column("rank A", True),
                h.Column("rank B", True), h.Column("text")]
        rows = [[html.escape(f"{r['id']} #{r['index']}"), h.num(r["score_a"], ["disagreements", "rows", i, "score_a"]),
                 h.num(r["score_b"], ["disagreements", "rows", i, "score_b"]),
                 h.num(r["rank_a"], ["disagreements", "rows", i, "rank_a"]),
                 h.num(r["rank_b"], ["disagreements", "rows", i, "rank_b"]), h.text(r.get("text"))]
                for i, r in enumerate(d["rows"])]
        lead = "No shared preference pairs: the items whose rank (0 lowest, 1 highest) differs most between the runs."
    body = h.note(lead) + h.table(cols, rows, "disagreements-table")
    if not d.get("text_from"):
        body += h.note("Text not available: neither summary.json names a readable input; pass --input FILE.")
    return h.section("disagreements", "Where the runs disagree most", body)


def figures(a: Run, b: Run, c: dict[str, Any]) -> list[h.Figure]:
    plt = h.pyplot()
    out = []
    items = shared_items(a.table, b.table)
    if items.num_rows:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        labels = items["label"].to_pylist()
        sa, sb = (items[k].to_numpy(zero_copy_only=False) for k in ("score_a", "score_b"))
        for label, color in (("chosen", "#55a868"), ("rejected", "#c44e52"), (None, "#4c72b0")):
            mask = np.array([lab == label for lab in labels])
            if mask.any():
                ax.scatter(sa[mask], sb[mask], s=12, alpha=0.7, color=color, label=label or "other")
        ax.set(xlabel="score A", ylabel="score B", title=f"A vs B ({items.num_rows} items)")
        ax.legend()
        rho = c["spearman"]
        out.append(h.Figure("fig-scatter", "A vs B scatter",
                            f"Each dot is an item scored in both runs (Spearman {rho:.4f}); a perfect rank agreement "
                            "is a monotone curve." if rho is not None else "Each dot is an item scored in both runs.",
                            h.png(fig)))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, run, name, color in ((axes[0], a, "A", A_COLOR), (axes[1], b, "B", B_COLOR)):
        scores = run.table.filter(run.table["error"].is_null())["score"].drop_null().to_numpy(zero_copy_only=False)
        ax.hist(scores, bins=BINS, color=color)
        ax.set(title=f"{name}: scores ({len(scores)} items)", xlabel="score", ylabel="items")
    out.append(h.Figure("fig-scores", "Score distributions",
                        "Score distribution of each run over all its items (each on its own scale).", h.png(fig)))
    pairs = shared_pairs(a.table, b.table)
    if pairs.num_rows:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for ax, col, name, color in ((axes[0], "margin_a", "A", A_COLOR), (axes[1], "margin_b", "B", B_COLOR)):
            m = pairs[col].to_numpy(zero_copy_only=False)
            ax.hist(m, bins=BINS, color=color)
            ax.axvline(0, color="black", linewidth=1)
            ax.set(title=f"{name}: margins ({len(m)} pairs)", xlabel="chosen − rejected", ylabel="pairs")
        out.append(h.Figure("fig-margins", "Margin histograms",
                            "chosen − rejected on the shared pairs; right of the line is right.", h.png(fig)))
    if "subsets" in c:
        names = list(c["subsets"])
        fig, ax = plt.subplots(figsize=(7, 0.8 + 0.45 * len(names)))
        y = np.arange(len(names))
        ax.barh(y - 0.2, [c["subsets"][n]["a"]["accuracy"] for n in names], height=0.4, color=A_COLOR, label="A")
        ax.barh(y + 0.2, [c["subsets"][n]["b"]["accuracy"] for n in names], height=0.4, color=B_COLOR, label="B")
        ax.axvline(0.5, color="#999", linestyle="--", linewidth=1)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set(xlim=(0, 1), xlabel="accuracy", title="Accuracy per subset")
        ax.legend()
        out.append(h.Figure("fig-subsets", "Accuracy per subset, A and B",
                            "Accuracy of A (blue) and B (orange) per subset, on the shared pairs; dashed: chance.",
                            h.png(fig)))
    return out


def render_compare_report(a: Run, b: Run, comparison: dict[str, Any]) -> str:
    sections = [_headline(comparison)]
    if "subsets" in comparison:
        sections.append(_subsets(comparison))
    sections.append(h.section("plots", "Plots", "\n".join(f.html() for f in figures(a, b, comparison))))
    sections.append(_disagreements(comparison))
    return h.page("rmcluster compare", f"A: {a.path} · B: {b.path}", sections)
