"""Summary statistics over result rows: counts, throughput, score distribution, preference accuracy."""

from __future__ import annotations

import math
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# The columns `summarize` reads: what a caller loads from a results store or file for it.
SUMMARY_COLUMNS = ["id", "index", "label", "subset", "score", "values", "step_scores", "num_tokens", "truncated", "error"]


def throughput(tokens: int, wall_seconds: float) -> dict[str, Any]:
    """What one run did per second: the last run's figures, apart from the store's totals.

    A run that scored nothing (a resumed job with nothing left) has no rate, rather than a rate of 0.
    """
    return {"wall_seconds": round(wall_seconds, 3),
            "tokens_per_s": round(tokens / wall_seconds, 1) if wall_seconds > 0 and tokens > 0 else None}


def summarize(table: pa.Table, wall_seconds: Optional[float] = None) -> dict[str, Any]:
    """Counts and score statistics over rows; with `wall_seconds`, also the throughput of making them."""
    ok = table.filter(pc.is_null(table["error"]))
    scores = ok["score"]
    tokens = pc.sum(ok["num_tokens"]).as_py() or 0
    out: dict[str, Any] = {
        "records": pc.count_distinct(table["id"]).as_py(),
        "items": table.num_rows,
        "scored": ok.num_rows,
        "errors": table.num_rows - ok.num_rows,
        "truncated": pc.sum(pc.cast(table["truncated"], pa.int64())).as_py() or 0,
        "tokens": tokens,
    }
    if wall_seconds is not None:
        out.update(throughput(tokens, wall_seconds))
    if ok.num_rows:
        out["score_mean"] = pc.mean(scores).as_py()
        out["score_std"] = pc.stddev(scores, ddof=1).as_py() if ok.num_rows > 1 else 0.0
        out["score_min"] = pc.min(scores).as_py()
        out["score_max"] = pc.max(scores).as_py()
        qs = pc.quantile(scores, q=list(QUANTILES)).to_pylist()
        out["score_quantiles"] = {f"p{round(q * 100)}": v for q, v in zip(QUANTILES, qs)}
    out.update(value_stats(ok))
    out.update(judge_stats(ok))
    out.update(pair_stats(ok))
    return out


def judge_stats(ok: pa.Table) -> dict[str, Any]:
    """Pairwise judges: how often the verdict follows the position rather than the content.

    Each comparison ran in both orders; it is position-biased when its first response wins in one
    order and loses in the other. Counted once per comparison (rejected rows mirror chosen ones).
    """
    if "values" not in ok.column_names or ok.num_rows == 0:
        return {}
    first = ok.filter(pc.invert(pc.fill_null(pc.equal(ok["label"], "rejected"), False)))
    as_a = pc.map_lookup(first["values"], "p_win_as_a", "first")
    as_b = pc.map_lookup(first["values"], "p_win_as_b", "first")
    both = pc.and_(pc.is_valid(as_a), pc.is_valid(as_b))
    n = pc.sum(pc.cast(both, pa.int64())).as_py() or 0
    if not n:
        return {}
    flips = pc.not_equal(pc.greater(as_a.filter(both), 0.5), pc.greater(as_b.filter(both), 0.5))
    return {"judge": {"comparisons": n, "position_bias": (pc.sum(pc.cast(flips, pa.int64())).as_py() or 0) / n}}


def value_stats(ok: pa.Table) -> dict[str, Any]:
    """Means of the named values (objectives, labels) and the step scores of process reward models."""
    out: dict[str, Any] = {}
    if "values" in ok.column_names:
        named = ok["values"].combine_chunks()
        if len(named.keys):
            pairs = pa.table({"name": named.keys, "value": named.items}).group_by("name").aggregate([("value", "mean")])
            out["values_mean"] = dict(sorted(zip(pairs["name"].to_pylist(), pairs["value_mean"].to_pylist())))
    if "step_scores" in ok.column_names:
        steps = ok["step_scores"].combine_chunks()
        flat = pc.list_flatten(steps)
        if len(flat):
            out["step_scores"] = {"items": len(steps) - steps.null_count, "steps": len(flat),
                                  "mean": pc.mean(flat).as_py(), "min": pc.min(flat).as_py()}
    return out


def pair_margins(table: pa.Table) -> pa.Table:
    """One row per preference pair with both sides scored: id, chosen, rejected, margin."""
    cols = ["id", "score"]
    chosen = table.filter(pc.equal(table["label"], "chosen")).select(cols).rename_columns(["id", "chosen"])
    rejected = table.filter(pc.equal(table["label"], "rejected")).select(cols).rename_columns(["id", "rejected"])
    pairs = chosen.join(rejected, keys="id", join_type="inner")
    return pairs.append_column("margin", pc.subtract(pairs["chosen"], pairs["rejected"]))


def pair_stats(ok: pa.Table) -> dict[str, Any]:
    pairs = pair_margins(ok)
    if pairs.num_rows == 0:
        return {}
    wins = pc.sum(pc.cast(pc.greater(pairs["margin"], 0), pa.int64())).as_py()
    return {
        "pairs": pairs.num_rows,
        "pair_accuracy": wins / pairs.num_rows,
        "pair_margin_mean": pc.mean(pairs["margin"]).as_py(),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A two-column table for the terminal."""
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = "  ".join(f"{k}={_fmt(v)}" for k, v in value.items())
        lines.append(f"  {key:<18} {_fmt(value)}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
