"""`rmcluster compare`: rank correlations checked by hand, agreement and accuracies recomputed from the
two stores' rows, and the disagreements' text taken from the input."""

from __future__ import annotations

import itertools
import json
import math
import statistics

import numpy as np
import pytest

from rmcluster.rank_correlation import kendall_tau_b, spearman
from rmcluster.store import ResultsStore
from tests.rmcluster.conftest import run_cli
from tests.rmcluster.eval_data import eval_records


def test_rank_correlations_hand_checked():
    # One swapped neighbour among 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8; tau = (5 - 1) / 6.
    assert spearman(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])) == pytest.approx(0.8)
    assert kendall_tau_b(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])) == pytest.approx(2 / 3)
    # Ties: 4 concordant, 0 discordant, one pair tied in x, one in y: tau-b = 4 / sqrt(5 * 5).
    x, y = np.array([1, 2, 2, 3]), np.array([1, 2, 3, 3])
    assert kendall_tau_b(x, y) == pytest.approx(0.8)
    # Average ranks x [1, 2.5, 2.5, 4], y [1, 2, 3.5, 3.5]: r = 3.75 / 4.5.
    assert spearman(x, y) == pytest.approx(3.75 / 4.5)
    assert spearman(np.array([1.0, 1.0]), np.array([1.0, 2.0])) is None  # a constant side has no correlation


def _tau_b_by_definition(x, y) -> float:
    signs = [(np.sign(x[i] - x[j]), np.sign(y[i] - y[j])) for i, j in itertools.combinations(range(len(x)), 2)]
    s = sum(a * b for a, b in signs)
    return s / math.sqrt(sum(a != 0 for a, _ in signs) * sum(b != 0 for _, b in signs))


def test_kendall_matches_its_definition_with_many_ties():
    rng = np.random.default_rng(7)
    for n in (2, 3, 17, 64, 129):
        x, y = rng.integers(0, 5, n).astype(float), rng.integers(0, 4, n).astype(float)
        x[0], y[0], x[1], y[1] = 0, 0, 1, 1  # neither side constant
        assert kendall_tau_b(x, y) == pytest.approx(_tau_b_by_definition(x, y), abs=1e-12)


def _pairs(store) -> dict[str, tuple[float, str]]:
    rows = [r for r in ResultsStore(str(store)).read().to_pylist() if r["error"] is None and r["label"]]
    sides: dict[str, dict] = {}
    for r in rows:
        sides.setdefault(r["id"], {"subset": r["subset"]})[r["label"]] = r["score"]
    return {k: (v["chosen"] - v["rejected"], v["subset"] or "(no subset)") for k, v in sides.items()
            if "chosen" in v and "rejected" in v}


def _average_ranks(values: list[float]) -> list[float]:
    return [sum(w < v for w in values) + (sum(w == v for w in values) + 1) / 2 for v in values]


def test_compare_agrees_with_the_two_stores_rows(eval_runs):
    c = json.loads((eval_runs.compare / "compare.json").read_text())
    a, b = _pairs(eval_runs.a), _pairs(eval_runs.b)
    shared = sorted(set(a) & set(b))
    same = [(a[k][0] > 0) == (b[k][0] > 0) for k in shared]
    assert c["shared_pairs"] == len(shared) and c["pair_agreement"] == pytest.approx(sum(same) / len(shared))
    assert 0 < c["pair_agreement"] < 1  # two random models: some pairs each way
    assert c["accuracy"]["a"]["accuracy"] == pytest.approx(sum(a[k][0] > 0 for k in shared) / len(shared))
    for subset, s in c["subsets"].items():
        keys = [k for k in shared if a[k][1] == subset]
        assert s["pairs"] == len(keys)
        assert s["a"]["accuracy"] == pytest.approx(sum(a[k][0] > 0 for k in keys) / len(keys))
        assert s["b"]["accuracy"] == pytest.approx(sum(b[k][0] > 0 for k in keys) / len(keys))

    # Rank correlation of the items' scores, recomputed the plain way.
    rows_a = {(r["id"], r["index"]): r["score"] for r in ResultsStore(str(eval_runs.a)).read().to_pylist() if r["error"] is None}
    rows_b = {(r["id"], r["index"]): r["score"] for r in ResultsStore(str(eval_runs.b)).read().to_pylist() if r["error"] is None}
    keys = sorted(set(rows_a) & set(rows_b))
    assert c["shared_items"] == len(keys)
    ra, rb = _average_ranks([rows_a[k] for k in keys]), _average_ranks([rows_b[k] for k in keys])
    assert c["spearman"] == pytest.approx(statistics.correlation(ra, rb), abs=1e-9)
    assert c["kendall_tau_b"] == pytest.approx(_tau_b_by_definition([rows_a[k] for k in keys], [rows_b[k] for k in keys]))

    # The disagreements are pairs decided differently, with the input's text.
    records = {r["id"]: r for r in eval_records()}
    d = c["disagreements"]
    assert d["kind"] == "pairs" and d["count"] == len(shared) - sum(same) and d["text_from"] == str(eval_runs.input)
    assert 0 < len(d["rows"]) <= 10
    for row in d["rows"]:
        assert (a[row["id"]][0] > 0) != (b[row["id"]][0] > 0)
        rec = records[row["id"]]
        assert (row["prompt"], row["chosen"], row["rejected"]) == (rec["prompt"], rec["chosen"], rec["rejected"])


def test_a_run_compared_with_itself(eval_runs, tmp_path):
    rc, printed = run_cli("compare", str(eval_runs.a), str(eval_runs.a), "--output", str(tmp_path / "self"))
    c = json.loads((tmp_path / "self" / "compare.json").read_text())
    assert rc == 0 and c["pair_agreement"] == 1.0 and c["spearman"] == pytest.approx(1.0)
    assert c["kendall_tau_b"] == pytest.approx(1.0) and c["disagreements"]["count"] == 0
    assert "pair_agreement     1.0000" in printed
