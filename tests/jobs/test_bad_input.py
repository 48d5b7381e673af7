"""Bad input: fail fast before any cluster work, or finish the rows and fail on --max-error-rate."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from jobs.score_corpus import main as job_main
from rmcluster.store import ResultsStore
from tests.jobs.conftest import REPO, job_command, job_env

# Any attempt to reach Ray would fail or hang on this address, so exit code 2 with our message
# proves the job stopped before cluster work.
NO_CLUSTER = job_env(RAY_ADDRESS="127.0.0.1:9")


def run_fail_fast(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(job_command(*args), cwd=REPO, env=NO_CLUSTER, capture_output=True, text=True, timeout=300)


def test_missing_input_fails_fast(tmp_path, demo_dir):
    out = run_fail_fast("--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o"), "--model", str(demo_dir))
    assert out.returncode == 2, out.stderr
    assert "error: input not found" in out.stderr and "missing.jsonl" in out.stderr
    assert not (tmp_path / "o").exists()


def test_unloadable_model_fails_fast(tmp_path, demo_dir, corpus):
    out = run_fail_fast("--input", str(corpus), "--output", str(tmp_path / "o"), "--model", str(tmp_path / "no-model"))
    assert out.returncode == 2, out.stderr
    assert "error: cannot load model" in out.stderr
    no_weights = tmp_path / "no-weights"
    shutil.copytree(demo_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    out = run_fail_fast("--input", str(corpus), "--output", str(tmp_path / "o"), "--model", str(no_weights))
    assert out.returncode == 2 and "no weights" in out.stderr, out.stderr
    assert not (tmp_path / "o").exists()


def test_bad_config_fails_fast(tmp_path, corpus):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"input: {corpus}\noutput: {tmp_path / 'o'}\nscoring: {{batching: {{max_batch_tokns: 5}}}}\n")
    out = run_fail_fast("--config", str(cfg))
    assert out.returncode == 2 and "max_batch_tokns" in out.stderr, out.stderr


@pytest.mark.ray
def test_max_error_rate_fails_after_writing_every_row(ray_cluster, tmp_path, demo_dir, capsys):
    lines = ['{"id": "ok%d", "messages": [{"role": "user", "content": "hi %d"}]}' % (i, i) for i in range(6)]
    lines += ["{broken %d" % i for i in range(3)] + ['{"id": "bad", "prompt": "no responses"}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "store"
    argv = ["--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--model", str(demo_dir)]
    assert job_main([*argv, "--max-error-rate", "0.3"]) == 1
    assert "error rate 0.4000 (4 of 10 items) exceeds --max-error-rate 0.3" in capsys.readouterr().err
    table = ResultsStore(str(out)).read()
    ids = table["id"].to_pylist()
    assert table.num_rows == 10 and {f"ok{i}" for i in range(6)} | {"bad"} <= set(ids)
    assert sum(i.startswith("h") for i in ids) == 3  # invalid JSON lines get derived ids
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items"], summary["errors"], summary["scored"]) == (10, 4, 6)
    assert job_main([*argv, "--max-error-rate", "0.5"]) == 0  # under the limit: success (nothing to rescore)
