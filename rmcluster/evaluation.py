"""RewardBench-style evaluation of a results table: preference accuracy per subset, intervals, sections.

A pair is right when chosen scores strictly above rejected: a tie counts as wrong, as in RewardBench
(`1 if chosen > rejected else 0`). Pairs with a side that has no score (an error row) are not
counted in the accuracy; `unscored_pairs` says how many there were. The interval is a percentile
bootstrap over pairs with a fixed seed, so the same rows always give the same interval.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .rewardbench import EXAMPLE_COUNTS, SECTIONS, section_scores

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
NO_SUBSET = "(no subset)"  # pairs of records without a subset, in a store where others have one
SECTION_WEIGHTS = "RewardBench v1 EXAMPLE_COUNTS"


def _subsets(table: pa.Table) -> pa.ChunkedArray:
    if "subset" in table.column_names:
        return table["subset"]
    return pa.chunked_array([pa.nulls(table.num_rows, pa.string())])  # a store written before the column


def scored_pairs(table: pa.Table) -> pa.Table:
    """One row per preference pair with both sides scored: id, subset, chosen, rejected, margin."""
    ok = table.filter(pc.and_(pc.is_null(table["error"]), pc.is_valid(table["score"])))
    ok = pa.table({"id": ok["id"], "label": ok["label"], "subset": _subsets(ok), "score": ok["score"]})
    chosen = ok.filter(pc.equal(ok["label"], "chosen")).select(["id", "subset", "score"]).rename_columns(
        ["id", "subset", "chosen"])
    rejected = ok.filter(pc.equal(ok["label"], "rejected")).select(["id", "score"]).rename_columns(["id", "rejected"])
    pairs = chosen.join(rejected, keys="id", join_type="inner").sort_by("id")
    return pairs.append_column("margin", pc.subtract(pairs["chosen"], pairs["rejected"]))


def _pair_ids(table: pa.Table) -> pa.Table:
    """Every record with a chosen or rejected row, scored or not: id, subset."""
    labelled = pc.is_in(table["label"], pa.array(["chosen", "rejected"]))
    rows = pa.table({"id": table["id"], "subset": _subsets(table)}).filter(pc.fill_null(labelled, False))
    return rows.group_by("id", use_threads=False).aggregate([("subset", "first")]).rename_columns(["id", "subset"])


def bootstrap_interval(correct: int, n: int, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> list[float]:
    """95% percentile bootstrap interval of an accuracy of `correct` out of `n` pairs.

    Resampling n pairs with replacement and counting the right ones is a Binomial(n, correct / n)
    draw, so this draws that directly: the same distribution, in O(resamples) for any n.
    """
    draws = np.random.default_rng(seed).binomial(n, correct / n, size=resamples) / n
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(lo), float(hi)]


def _group_seed(name: str, seed: int) -> int:
    # Per subset, so that a subset's interval does not depend on which other subsets are present.
    return seed * 2**32 + zlib.crc32(name.encode())


def accuracy_stats(margins: np.ndarray, seed: int, name: str = "") -> dict[str, Any]:
    """pairs, accuracy (ties wrong), ties, ci95, margin_mean for one group of pair margins."""
    n = int(margins.size)
    if n == 0:
        return {"pairs": 0}
    correct = int((margins > 0).sum())
    return {"pairs": n, "accuracy": correct / n, "ties": int((margins == 0).sum()),
            "ci95": bootstrap_interval(correct, n, _group_seed(name, seed)),
            "margin_mean": float(margins.mean())}


def evaluate(table: pa.Table, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """The `eval` section of summary.json for result rows (any number of subsets, or none)."""
    pairs = scored_pairs(table)
    subset_names = pc.fill_null(pairs["subset"], NO_SUBSET).to_pylist()
    margins = pairs["margin"].to_numpy(zero_copy_only=False)
    every_pair = _pair_ids(table)
    out: dict[str, Any] = accuracy_stats(margins, seed)
    out["unscored_pairs"] = every_pair.num_rows - pairs.num_rows
    out["bootstrap"] = {"resamples": BOOTSTRAP_RESAMPLES, "seed": seed, "interval": "95% percentile"}
    if pc.count(_subsets(table)).as_py() == 0:
        return out  # no subsets anywhere: the overall figures are the evaluation
    names = np.array(subset_names, dtype=object)
    all_names = pc.fill_null(every_pair["subset"], NO_SUBSET).to_pylist()
    subsets: dict[str, dict[str, Any]] = {}
    for name in sorted(set(all_names) | set(_item_subsets(table))):
        stats = accuracy_stats(margins[names == name], seed, name)
        stats["unscored_pairs"] = all_names.count(name) - stats["pairs"]
        subsets[name] = stats
    out["subsets"] = subsets
    accuracy = {k: v["accuracy"] for k, v in subsets.items() if "accuracy" in v}
    if any(k in EXAMPLE_COUNTS for k in accuracy):
        sections = section_scores(accuracy)
        out["sections"] = sections
        out["section_weights"] = SECTION_WEIGHTS
        if set(sections) == set(SECTIONS):  # RewardBench's score, the mean of its sections: only when all are there
            out["score"] = sum(sections.values()) / len(sections)
    return out


def _item_subsets(table: pa.Table) -> list[str]:
    """Subsets of rows that are not pairs (best-of-N, single conversations): listed, with no accuracy."""
    named = pc.is_valid(_subsets(table))
    names: list[str] = pc.unique(_subsets(table).filter(named)).to_pylist()
    return names


def format_evaluation(evaluation: dict[str, Any]) -> str:
    """The evaluation as a terminal table: one line per subset, then sections."""
    def line(name: str, s: dict[str, Any]) -> str:
        if "accuracy" not in s:
            return f"  {name:<24} {s['pairs']:>6}  (no scored pairs)"
        lo, hi = s["ci95"]
        return (f"  {name:<24} {s['pairs']:>6}  {s['accuracy']:>8.4f}  [{lo:.3f}, {hi:.3f}]  "
                f"{s['margin_mean']:>+10.4f}  {s['ties']:>4}")

    lines = [f"  {'subset':<24} {'pairs':>6}  {'accuracy':>8}  {'95% interval':<14}  {'margin':>10}  ties"]
    for name, stats in evaluation.get("subsets", {}).items():
        lines.append(line(name, stats))
    lines.append(line("all", evaluation))
    for section, score in evaluation.get("sections", {}).items():
        lines.append(f"  section {section:<16} {score:.4f}")
    if "score" in evaluation:
        lines.append(f"  {'RewardBench score':<24} {evaluation['score']:.4f}  (mean of the sections)")
    if evaluation.get("unscored_pairs"):
        lines.append(f"  unscored pairs (a side is an error row, left out): {evaluation['unscored_pairs']}")
    return "\n".join(lines)
