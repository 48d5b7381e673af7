"""A job whose driver is SIGKILLed mid-run, then resubmitted, leaves exactly one row per item."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from rmcluster.store import ResultsStore
from rmcluster.store_lock import LOCK_FILE
from tests.jobs.conftest import REPO, job_command, job_env
from tests.jobs.corpus import assert_store_matches

pytestmark = [pytest.mark.ray, pytest.mark.chaos]

DEADLINE_S = 400  # generous: the machine is shared


def committed_rows(store: ResultsStore) -> int:
    return sum(pq.read_metadata(p).num_rows for p in store.data_files())


def test_killed_driver_then_resubmitted_leaves_one_row_per_item(ray_cluster, job_args, reference, tmp_path):
    out = tmp_path / "store"
    store = ResultsStore(str(out))
    # Small files and batches, one scoring actor: many commits, so the kill lands mid-run.
    argv = job_command(*job_args, "--output", str(out), "--rows-per-file", "64", "--batch-size", "64",
                       "--records-per-batch", "64", "--tokenizer-actors", "1")
    env = job_env(RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address)  # a driver on the test cluster

    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not store.data_files():
            assert proc.poll() is None, f"job exited ({proc.returncode}) before writing anything"
            assert time.monotonic() < deadline, "no results file appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    before = committed_rows(store)
    assert 0 < before < len(reference), "the kill did not land mid-run"
    assert not (out / "summary.json").exists()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == proc.pid  # the killed job's lock is left behind

    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["already_stored"] > 0
    assert f"pid {proc.pid}" in summary["run"]["lock_taken_over_from"] and not (out / LOCK_FILE).exists()
    assert summary["items"] == len(reference)
    assert not list((out / "data").glob(".*.tmp"))
    assert_store_matches(out, reference)  # no duplicates, no losses, scores as rmcluster score
