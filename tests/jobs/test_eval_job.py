"""The corpus job on a RewardBench-style set gives the evaluation `rmcluster eval` gives, `rmcluster compare`
reads its store. (A resumed job's report: tests/jobs/test_score_corpus.py.)"""

from __future__ import annotations

import json

import pytest

from rmcluster.cli import main as rmcluster_main
from tests.jobs.conftest import run_job
from tests.rmcluster.eval_data import MAX_LENGTH, write_eval_input

pytestmark = pytest.mark.ray
# Shared-prompt groups off on both sides: the tie pair is then an exact tie however the items are batched.
FLAGS = ["--max-length", str(MAX_LENGTH), "--shared-prompt", "off"]
STORE_FIGURES = ("records", "items", "scored", "errors", "truncated", "tokens", "pairs", "pair_accuracy")


def _close(a, b):
    """Equal structures, floats to the parity tolerance (the job batches items differently)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-4)
    else:
        assert a == b


def test_the_job_evaluates_as_rmcluster_eval(ray_cluster, demo_dir, tmp_path, capsys):
    src = write_eval_input(tmp_path / "rewardbench.jsonl")
    cli_store, job_store = tmp_path / "cli", tmp_path / "job"
    assert rmcluster_main(["eval", "--model", str(demo_dir), "--input", str(src), "--output", str(cli_store),
                           "--quiet", *FLAGS]) == 0
    rc, printed = run_job(["--input", str(src), "--output", str(job_store), "--model", str(demo_dir), *FLAGS])
    assert rc == 0 and "alpacaeval-easy" in printed
    cli, job = (json.loads((s / "summary.json").read_text()) for s in (cli_store, job_store))
    _close(job["eval"], cli["eval"])
    assert job["eval"]["subsets"]["alpacaeval-easy"]["ties"] == 1
    _close({k: job[k] for k in STORE_FIGURES}, {k: cli[k] for k in STORE_FIGURES})

    capsys.readouterr()
    assert rmcluster_main(["compare", str(cli_store), str(job_store), "--output", str(tmp_path / "cmp")]) == 0
    c = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert c["pair_agreement"] == 1.0 and c["shared_pairs"] == cli["eval"]["pairs"] and c["spearman"] > 0.999

