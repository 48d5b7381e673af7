"""`rmcluster eval`: accuracy per subset against the plain HF loop, ties, intervals, RewardBench sections,
old stores without the subset column."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmcluster.evaluation import BOOTSTRAP_RESAMPLES, bootstrap_interval, evaluate
from rmcluster.records import parse_record
from rmcluster.rewardbench import section_scores
from rmcluster.store import STORE_SCHEMA, ResultsStore
from rmcluster.summary import SUMMARY_COLUMNS
from tests.reference import ReferenceLoop
from tests.rmcluster.conftest import run_cli
from tests.rmcluster.eval_data import CATEGORY_ID, LONG_ID, NO_SUBSET_ID, TIE_ID, eval_records

TOL = 1e-4


def _conversation(record: dict, side: str) -> list[dict]:
    return [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record[side]}]


def test_accuracy_per_subset_matches_the_hf_loop(eval_runs, demo_dir):
    summary = json.loads((eval_runs.a / "summary.json").read_text())
    ev = summary["eval"]
    loop = ReferenceLoop(demo_dir)
    margins: dict[str, list[float]] = {}
    for rec in eval_records():
        if rec["id"] == LONG_ID:
            continue  # over max_length: an error row, left out of the accuracy
        subset = rec.get("subset") or rec.get("category") or "(no subset)"
        margins.setdefault(subset, []).append(loop.score(_conversation(rec, "chosen")) - loop.score(_conversation(rec, "rejected")))
    assert set(ev["subsets"]) == set(margins)
    for subset, ms in margins.items():
        got = ev["subsets"][subset]
        assert got["pairs"] == len(ms)
        assert got["accuracy"] == sum(m > 0 for m in ms) / len(ms)  # strictly greater: a tie is wrong
        assert got["margin_mean"] == pytest.approx(statistics.fmean(ms), abs=TOL)
        assert got["ci95"][0] <= got["accuracy"] <= got["ci95"][1]
    every = [m for ms in margins.values() for m in ms]
    assert ev["pairs"] == len(every) and ev["accuracy"] == sum(m > 0 for m in every) / len(every)

    # The tie: identical responses score exactly alike, and the pair counts as wrong.
    rows = {(r["id"], r["label"]): r for r in ResultsStore(str(eval_runs.a)).read().to_pylist()}
    assert rows[(TIE_ID, "chosen")]["score"] == rows[(TIE_ID, "rejected")]["score"]
    assert ev["subsets"]["alpacaeval-easy"]["ties"] == 1 and ev["ties"] == 1
    # The subset is a column of the store, taken from `subset` or `category`; none for a record without.
    assert rows[(CATEGORY_ID, "chosen")]["subset"] == "custom" and rows[(NO_SUBSET_ID, "chosen")]["subset"] is None
    assert rows[(LONG_ID, "chosen")]["error"] and ev["subsets"]["hep-go"]["unscored_pairs"] == 1
    assert ev["unscored_pairs"] == 1

    acc = {k: v["accuracy"] for k, v in ev["subsets"].items()}
    assert ev["sections"] == pytest.approx(section_scores(acc))
    assert set(ev["sections"]) == {"Chat", "Chat Hard", "Reasoning"} and "score" not in ev  # no Safety subset
    assert "alpacaeval-easy" in eval_runs.printed and "section Reasoning" in eval_runs.printed


def test_section_scores_hand_computed():
    # Chat: (100 * 1.0 + 28 * 0.5) / (100 + 28); Reasoning: math-prm weighs 984 = 6 x 164, the hep-* total.
    got = section_scores({"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "math-prm": 0.8, "hep-go": 0.3,
                          "hep-rust": 0.5, "not-rewardbench": 0.0})
    assert got == pytest.approx({"Chat": 114 / 128, "Reasoning": (0.8 * 984 + 0.3 * 164 + 0.5 * 164) / 1312})
    hep = {f"hep-{lang}": a for lang, a in zip(["cpp", "go", "java", "js", "python", "rust"], [0, 0.2, 0.4, 0.6, 0.8, 1])}
    assert section_scores({"math-prm": 0.9, **hep})["Reasoning"] == pytest.approx(0.5 * 0.9 + 0.5 * 0.5)


def test_bootstrap_interval_is_deterministic_and_matches_resampling():
    lo, hi = bootstrap_interval(70, 100, seed=3)
    assert (lo, hi) == tuple(bootstrap_interval(70, 100, seed=3))
    assert lo < 0.7 < hi and hi - lo == pytest.approx(2 * 1.96 * (0.7 * 0.3 / 100) ** 0.5, rel=0.15)
    # The same distribution as resampling the pairs themselves.
    correct = np.array([1] * 70 + [0] * 30)
    draws = np.random.default_rng(0).choice(correct, size=(BOOTSTRAP_RESAMPLES, 100)).mean(axis=1)
    assert np.percentile(draws, [2.5, 97.5]) == pytest.approx([lo, hi], abs=0.03)
    assert bootstrap_interval(10, 10, seed=0) == [1.0, 1.0]


def _rows(margins: list[float], subset=None) -> list[dict]:
    rows = []
    for i, m in enumerate(margins):
        for index, (label, score) in enumerate([("chosen", m), ("rejected", 0.0)]):
            rows.append({"id": f"p{i}", "index": index, "label": label, "subset": subset, "score": score,
                         "num_tokens": 1, "truncated": False, "error": None, "model": "m"})
    return rows


def test_a_tie_is_wrong_and_a_store_without_the_subset_column_reads(tmp_path):
    ev = evaluate(pa.Table.from_pylist(_rows([1.0, 0.0, -1.0, 2.0]), schema=STORE_SCHEMA))
    assert (ev["pairs"], ev["accuracy"], ev["ties"], ev["margin_mean"]) == (4, 0.5, 1, 0.5)
    assert "subsets" not in ev  # no subsets anywhere: the overall figures are the evaluation

    # A data file written before the column existed: it reads, with the subset null.
    old_schema = pa.schema([f for f in STORE_SCHEMA if f.name != "subset"])
    rows = [{k: v for k, v in r.items() if k != "subset"} for r in _rows([1.0, -1.0])]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=old_schema), tmp_path / "data" / "part-old.parquet")
    table = ResultsStore(str(tmp_path)).read(SUMMARY_COLUMNS)
    assert table["subset"].null_count == 4 and evaluate(table)["accuracy"] == 0.5


def test_subset_or_category_becomes_text():
    assert parse_record({"prompt": "p", "chosen": "a", "rejected": "b", "category": 3})[1].subset == "3"
    assert parse_record({"prompt": "p", "chosen": "a", "rejected": "b", "subset": "x", "category": "y"})[1].subset == "x"


def test_eval_refuses_a_store_that_has_results(eval_runs, capsys):
    rc, _ = run_cli("eval", "--model", "demo", "--input", str(eval_runs.input), "--output", str(eval_runs.a))
    assert rc == 2 and "already holds results" in capsys.readouterr().err
