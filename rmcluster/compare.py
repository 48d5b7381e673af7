"""Compare two runs (results stores, or `rmcluster score` Parquet files): two reward models on the same
records, or one model before and after a change.

On the items scored in both: Spearman and Kendall rank correlation of the scores. On the preference
pairs scored in both: how often the two prefer the same response, each one's accuracy (ties wrong)
overall and per subset, side by side, and the pairs where they disagree most. Scores of two models
live on different scales, so "most" is measured in each run's own margin spread (margin / std).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .evaluation import NO_SUBSET, accuracy_stats, scored_pairs
from .rank_correlation import kendall_tau_b, spearman
from .rewardbench import EXAMPLE_COUNTS, section_scores
from .store import ResultsStore
from .summary import SUMMARY_COLUMNS

COMPARE_FILE = "compare.json"
TOP_DISAGREEMENTS = 10


@dataclass(frozen=True)
class Run:
    """One side of a comparison: where it is, its rows, and its summary.json if it has one."""

    path: str
    table: pa.Table
    summary: Optional[dict[str, Any]]

    @property
    def model(self) -> Optional[str]:
        if self.summary and self.summary.get("model"):
            return str(self.summary["model"])
        models = pc.unique(self.table["model"]).to_pylist() if "model" in self.table.column_names else []
        return ", ".join(str(m) for m in models if m is not None) or None


def load_run(path: str) -> Run:
    """A results store directory (local, s3://, gs://) or a Parquet file from `rmcluster score`."""
    columns = [*SUMMARY_COLUMNS, "model"]
    if path.endswith(".parquet") and Path(path).is_file():
        table = pq.read_table(path)
        if "subset" not in table.column_names:  # written before the column existed
            table = table.append_column("subset", pa.nulls(table.num_rows, pa.string()))
        return Run(path, table.select(columns), None)
    store = ResultsStore(path)
    if not store.data_files():
        raise FileNotFoundError(f"no results at {path} (neither a results store nor a .parquet file)")
    return Run(path, store.read(columns), store.summary())


def _scored(table: pa.Table) -> pa.Table:
    ok = table.filter(pc.and_(pc.is_null(table["error"]), pc.is_valid(table["score"])))
    return ok.select(["id", "index", "label", "subset", "score"])


def shared_items(a: pa.Table, b: pa.Table) -> pa.Table:
    """Items scored in both runs: id, index, label, subset, score_a, score_b (sorted by key)."""
    left = _scored(a).rename_columns(["id", "index", "label", "subset", "score_a"])
    right = _scored(b).select(["id", "index", "score"]).rename_columns(["id", "index", "score_b"])
    return left.join(right, keys=["id", "index"], join_type="inner").sort_by([("id", "ascending"), ("index", "ascending")])


def shared_pairs(a: pa.Table, b: pa.Table) -> pa.Table:
    """Pairs scored (both sides) in both runs: id, subset, margin_a, margin_b (sorted by id)."""
    left = scored_pairs(a).select(["id", "subset", "margin"]).rename_columns(["id", "subset", "margin_a"])
    right = scored_pairs(b).select(["id", "margin"]).rename_columns(["id", "margin_b"])
    return left.join(right, keys="id", join_type="inner").sort_by("id")


def _side(margins: np.ndarray, name: str) -> dict[str, Any]:
    stats = accuracy_stats(margins, seed=0, name=name)
    return {k: stats[k] for k in ("accuracy", "ci95", "margin_mean", "ties") if k in stats}


def _agreement(ma: np.ndarray, mb: np.ndarray) -> Optional[float]:
    return float(((ma > 0) == (mb > 0)).mean()) if ma.size else None


def _spread(m: np.ndarray) -> float:
    sd = float(m.std()) if m.size > 1 else 0.0
    return sd if sd > 0 else 1.0


def pair_disagreements(pairs: pa.Table, top: int) -> list[dict[str, Any]]:
    """Pairs the two runs decide differently, the most confident first (margins in each run's own spread)."""
    ma, mb = (pairs[c].to_numpy(zero_copy_only=False) for c in ("margin_a", "margin_b"))
    split = np.flatnonzero((ma > 0) != (mb > 0))
    strength = np.abs(ma[split]) / _spread(ma) + np.abs(mb[split]) / _spread(mb)
    order = split[np.argsort(-strength, kind="stable")][:top]
    ids, subsets = pairs["id"].to_pylist(), pairs["subset"].to_pylist()
    return [{"id": ids[i], "subset": subsets[i], "margin_a": float(ma[i]), "margin_b": float(mb[i]),
             "prefers_a": "chosen" if ma[i] > 0 else "rejected", "prefers_b": "chosen" if mb[i] > 0 else "rejected"}
            for i in order]


def item_disagreements(items: pa.Table, top: int) -> list[dict[str, Any]]:
    """Items whose rank differs most between the runs (as a share of the items), for runs without pairs."""
    sa, sb = (items[c].to_numpy(zero_copy_only=False) for c in ("score_a", "score_b"))
    n = max(len(sa) - 1, 1)
    ra, rb = np.argsort(np.argsort(sa)) / n, np.argsort(np.argsort(sb)) / n
    order = np.argsort(-np.abs(ra - rb), kind="stable")[:top]
    ids, idx = items["id"].to_pylist(), items["index"].to_pylist()
    return [{"id": ids[i], "index": idx[i], "score_a": float(sa[i]), "score_b": float(sb[i]),
             "rank_a": float(ra[i]), "rank_b": float(rb[i])} for i in order]


def _describe(run: Run) -> dict[str, Any]:
    ok = _scored(run.table)
    return {"path": run.path, "model": run.model, "items": ok.num_rows, "pairs": scored_pairs(run.table).num_rows}


def compare_runs(a: Run, b: Run, top: int = TOP_DISAGREEMENTS) -> dict[str, Any]:
    """compare.json: correlations, pair agreement, accuracy side by side (overall, per subset, sections),
    and the `top` disagreements (without text; see `attach_texts`)."""
    items = shared_items(a.table, b.table)
    pairs = shared_pairs(a.table, b.table)
    sa, sb = (items[c].to_numpy(zero_copy_only=False) for c in ("score_a", "score_b"))
    ma, mb = (pairs[c].to_numpy(zero_copy_only=False) for c in ("margin_a", "margin_b"))
    out: dict[str, Any] = {
        "a": _describe(a), "b": _describe(b),
        "shared_items": items.num_rows, "shared_pairs": pairs.num_rows,
        "spearman": spearman(sa, sb), "kendall_tau_b": kendall_tau_b(sa, sb),
        "pair_agreement": _agreement(ma, mb),
        "accuracy": {"a": _side(ma, ""), "b": _side(mb, "")},
    }
    names = np.array(pc.fill_null(pairs["subset"], NO_SUBSET).to_pylist(), dtype=object)
    if pairs.num_rows and pc.count(pairs["subset"]).as_py():
        out["subsets"] = {}
        for name in sorted(set(names)):
            mask = names == name
            out["subsets"][name] = {"pairs": int(mask.sum()), "agreement": _agreement(ma[mask], mb[mask]),
                                    "a": _side(ma[mask], name), "b": _side(mb[mask], name)}
        acc = {side: {k: v[side]["accuracy"] for k, v in out["subsets"].items()} for side in ("a", "b")}
        if any(k in EXAMPLE_COUNTS for k in acc["a"]):
            sections = {side: section_scores(acc[side]) for side in ("a", "b")}
            out["sections"] = {s: {"a": sections["a"][s], "b": sections["b"][s]} for s in sections["a"]}
    if pairs.num_rows:
        split = int(((ma > 0) != (mb > 0)).sum())
        out["disagreements"] = {"kind": "pairs", "count": split, "rows": pair_disagreements(pairs, top)}
    else:
        out["disagreements"] = {"kind": "items", "count": items.num_rows, "rows": item_disagreements(items, top)}
    return out


def input_of(a: Run, b: Run) -> Optional[str]:
    """Where the records' text is: the input either run's summary.json names, if it is still there."""
    for run in (a, b):
        source = (run.summary or {}).get("input")
        if source and ("://" in source or Path(source).exists()):
            return str(source)
    return None


def attach_texts(comparison: dict[str, Any], source: Optional[str]) -> None:
    """Put each disagreement's text (prompt, chosen, rejected; or the item's text) in place, from `source`."""
    from .record_text import record_texts

    rows = comparison["disagreements"]["rows"]
    texts = record_texts(source, {r["id"] for r in rows}) if source else {}
    comparison["disagreements"]["text_from"] = source if texts else None
    for row in rows:
        t = texts.get(row["id"], {})
        if comparison["disagreements"]["kind"] == "pairs":
            row.update({k: t.get(k) for k in ("prompt", "chosen", "rejected")})
        else:
            responses = t.get("responses")
            text = t.get("text")
            if responses is not None and row["index"] < len(responses):
                text = f"{t['prompt']}\n\n--- response {row['index']} ---\n{responses[row['index']]}"
            row["text"] = text


def format_comparison(c: dict[str, Any]) -> str:
    """A terminal table of the comparison."""
    def f(v: Any) -> str:
        return "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    lines = [f"  A  {c['a']['path']}  ({c['a']['model']})", f"  B  {c['b']['path']}  ({c['b']['model']})",
             f"  shared items       {c['shared_items']}", f"  shared pairs       {c['shared_pairs']}",
             f"  spearman           {f(c['spearman'])}", f"  kendall_tau_b      {f(c['kendall_tau_b'])}",
             f"  pair_agreement     {f(c['pair_agreement'])}",
             f"  accuracy A / B     {f(c['accuracy']['a'].get('accuracy'))} / {f(c['accuracy']['b'].get('accuracy'))}"]
    if "subsets" in c:
        lines.append(f"  {'subset':<24} {'pairs':>6} {'acc A':>8} {'acc B':>8} {'agree':>8}")
        for name, s in c["subsets"].items():
            lines.append(f"  {name:<24} {s['pairs']:>6} {f(s['a'].get('accuracy')):>8} {f(s['b'].get('accuracy')):>8} "
                         f"{f(s['agreement']):>8}")
    for name, s in c.get("sections", {}).items():
        lines.append(f"  section {name:<16} A {s['a']:.4f}  B {s['b']:.4f}")
    d = c["disagreements"]
    lines.append(f"  disagreements      {d['count']} {d['kind']}" + (" (pairs decided differently)" if d["kind"] == "pairs" else ""))
    return "\n".join(lines)
