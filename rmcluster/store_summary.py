"""summary.json and report.html of a results store, the same for `rmcluster eval` and the corpus job.

The store's figures (counts, score statistics, the evaluation per subset) cover every row in it;
the last run's (rows written, tokens scored, wall time, tokens/s) sit apart under `run`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from .evaluation import evaluate, format_evaluation
from .store import REPORT_FILE, SUMMARY_FILE, ResultsStore
from .summary import SUMMARY_COLUMNS, format_summary, summarize, throughput


def has_evaluation(table: pa.Table) -> bool:
    """Whether rows have something to evaluate: preference pairs, or subsets."""
    labelled = pc.sum(pc.cast(pc.fill_null(pc.is_in(table["label"], pa.array(["chosen", "rejected"])), False),
                              pa.int64())).as_py()
    return bool(labelled) or ("subset" in table.column_names and pc.count(table["subset"]).as_py() > 0)


def run_figures(rows_written: int, files_written: int, tokens_scored: int, already_stored: int,
                wall_seconds: float) -> dict[str, Any]:
    """What one run did: the `run` section of summary.json."""
    return {"rows_written": rows_written, "files_written": files_written, "tokens_scored": tokens_scored,
            "already_stored": already_stored, **throughput(tokens_scored, wall_seconds)}


def summarize_store(store: ResultsStore, model: str, run: dict[str, Any], input_uri: Optional[str] = None,
                    ) -> tuple[pa.Table, dict[str, Any]]:
    """One row per key (dedupe), then the summary over the whole store, with this run's figures apart."""
    duplicates = store.dedupe()
    table = store.read(SUMMARY_COLUMNS)
    summary = summarize(table)
    if has_evaluation(table):
        summary["eval"] = evaluate(table)
    summary["run"] = {**run, "duplicates_removed": duplicates}
    summary["model"] = model
    if input_uri is not None:
        summary["input"] = input_uri  # where `rmcluster compare` finds the records' text
    summary["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return table, summary


def write_store_summary(store: ResultsStore, table: pa.Table, summary: dict[str, Any], title: str) -> None:
    from .report import render_report

    store.write_text(SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    store.write_text(REPORT_FILE, render_report(table, summary, title=title))


def format_store_summary(summary: dict[str, Any]) -> str:
    """The terminal table: the store's figures, the evaluation per subset, then the last run's."""
    plain = {k: v for k, v in summary.items() if k not in ("eval", "run")}
    parts = [format_summary(plain)]
    if "eval" in summary:
        parts.append("evaluation (ties count as wrong)\n" + format_evaluation(summary["eval"]))
    if "run" in summary:
        parts.append("last run\n" + format_summary(summary["run"]))
    return "\n".join(parts)
