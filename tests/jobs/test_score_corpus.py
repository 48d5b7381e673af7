"""The corpus job on a local Ray cluster: parity with `rmcluster score`, the store, resume, bad data."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rmcluster.cli import main as rmcluster_main
from rmcluster.store import ResultsStore
from tests.jobs.conftest import run_job
from tests.jobs.corpus import TOL, assert_store_matches
from tests.reference import ReferenceLoop

pytestmark = pytest.mark.ray


def test_every_row_present_and_scores_match_rmcluster_score(scored, reference):
    rc, _, out = scored
    assert rc == 0
    rows = assert_store_matches(out, reference)
    errors = [r["error"] for r in rows if r["error"] is not None]
    assert len(errors) > 50  # the corpus really has bad lines of every kind
    for kind in ("invalid JSON", "Field required", "over max_length"):
        assert any(kind in e for e in errors), kind
    assert len(ResultsStore(str(out)).data_files()) > 2


def test_scores_match_the_plain_hf_loop(scored, corpus, demo_dir):
    """A sample against the independent per-conversation HF loop, not only against rmcluster score."""
    conversations = {}
    for line in (corpus / "part-a.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "id" in rec and "messages" in rec:
            conversations[rec["id"]] = rec["messages"]
    rows = [r for r in ResultsStore(str(scored[2])).read().to_pylist() if r["id"] in conversations and r["error"] is None]
    assert len(rows) >= 10
    loop = ReferenceLoop(demo_dir)
    for row in rows[:25]:
        assert row["score"] == pytest.approx(loop.score(conversations[row["id"]]), abs=TOL)


def test_summary_json_report_and_results_command(scored, reference, capsys):
    _, printed, out = scored
    summary = json.loads((out / "summary.json").read_text())
    # Recomputed here from the reference rows, one per key.
    first = [rows[0] for rows in reference.values()]
    ok = [r for r in first if r["error"] is None]
    assert summary["records"] == len({r["id"] for r in first})
    assert (summary["items"], summary["scored"], summary["errors"]) == (len(first), len(ok), len(first) - len(ok))
    assert summary["tokens"] == sum(r["num_tokens"] for r in ok)
    assert summary["run"]["tokens_scored"] >= summary["tokens"]  # repeated lines are scored, then deduplicated
    assert summary["score_mean"] == pytest.approx(statistics.fmean(r["score"] for r in ok), abs=TOL)
    assert summary["score_std"] == pytest.approx(statistics.stdev(r["score"] for r in ok), abs=TOL)
    assert set(summary["score_quantiles"]) >= {"p5", "p50", "p95"}
    sides = {}
    for r in ok:
        if r["label"]:
            sides.setdefault(r["id"], {})[r["label"]] = r["score"]
    margins = [s["chosen"] - s["rejected"] for s in sides.values() if len(s) == 2]
    assert summary["pairs"] == len(margins) > 20
    assert summary["pair_accuracy"] == pytest.approx(sum(m > 0 for m in margins) / len(margins))
    assert summary["pair_margin_mean"] == pytest.approx(statistics.fmean(margins), abs=TOL)
    # The last run's figures sit under "run", apart from the store's totals.
    assert summary["run"]["wall_seconds"] > 0 and summary["run"]["tokens_per_s"] > 0
    assert "wall_seconds" not in summary and "tokens_per_s" not in summary
    assert summary["eval"]["pairs"] == summary["pairs"] and summary["eval"]["accuracy"] == summary["pair_accuracy"]
    assert summary["run"]["rows_written"] >= len(first)  # repeated keys are written, then deduplicated

    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 3  # scores, chosen vs rejected, margins
    assert 'id="headline"' in report and 'id="last-run"' in report and "Nothing left to score" not in report

    assert f"pair_accuracy      {summary['pair_accuracy']:.4g}" in printed  # the final table on stdout
    assert rmcluster_main(["results", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"items              {summary['items']}" in shown and "tokens_per_s" in shown


def test_rerun_scores_only_what_is_missing(scored, reference, job_args, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(scored[2], out)
    store = ResultsStore(str(out))
    files = store.data_files()

    rc, _ = run_job([*job_args, "--output", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["rows_written"] == 0 and summary["run"]["tokens_per_s"] is None  # no rate, not a rate of 0
    assert summary["items"] == len(reference)  # the store's totals are still the whole store's
    report = (out / "report.html").read_text()
    assert "Nothing left to score" in report and "tokens_per_s" not in report.split('id="last-run"')[0]
    assert store.data_files() == files  # nothing rewritten

    # Lose two files and leave a half-written temporary behind, as a crash would.
    lost = 0
    for path in files[:2]:
        lost += pq.read_metadata(path).num_rows
        (out / "data" / path.rsplit("/", 1)[1]).unlink()
    (out / "data" / ".part-x.parquet.123.ab.tmp").write_bytes(b"PAR1 half a file")
    rc, _ = run_job([*job_args, "--output", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["already_stored"] == len(reference) - lost
    assert summary["run"]["rows_written"] - summary["run"]["duplicates_removed"] == lost
    assert not list((out / "data").glob(".*.tmp"))
    assert_store_matches(out, reference)


def test_the_readme_query_runs_on_the_store(scored):
    """The DuckDB query the README shows, run as written on a real store."""
    import duckdb

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    query = readme.split("```sql\n", 1)[1].split("```", 1)[0].replace("results/run-1", str(scored[2]))
    buckets = duckdb.sql(query).fetchall()
    summary = json.loads((scored[2] / "summary.json").read_text())
    assert sum(pairs for _, _, pairs in buckets) == summary["pairs"]
    assert sum(acc * pairs for _, acc, pairs in buckets) == pytest.approx(summary["pair_accuracy"] * summary["pairs"])


def test_resuming_with_another_model_is_refused(scored, corpus, tmp_path, capsys):
    out = tmp_path / "store"
    shutil.copytree(scored[2], out)
    rc, _ = run_job(["--input", str(corpus), "--output", str(out), "--model", "demo"])
    assert rc == 2 and "use a new --output for another model" in capsys.readouterr().err
