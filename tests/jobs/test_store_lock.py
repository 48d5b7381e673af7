"""One job per results store: a second job refuses, naming the first; a dead job's lock is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from rmcluster.store_lock import LOCK_FILE, LockHolder, StoreLock, StoreLocked
from tests.jobs.conftest import run_job

pytestmark = pytest.mark.ray


def _write_lock(store, pid: int) -> None:
    store.mkdir(parents=True, exist_ok=True)
    holder = LockHolder(socket.gethostname(), pid, "2026-12-01T00:00:00+00:00", "run-x")
    (store / LOCK_FILE).write_text(json.dumps(holder.__dict__))


def test_a_second_job_on_the_same_output_refuses_and_names_the_first(ray_cluster, job_args, tmp_path, capsys):
    store = tmp_path / "store"
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _write_lock(store, running.pid)
        rc, _ = run_job([*job_args, "--output", str(store)])
        err = capsys.readouterr().err
        assert rc == 2 and "another job is writing this results store" in err and f"pid {running.pid}" in err
        assert not (store / "data").exists()  # refused before anything was scored
    finally:
        running.kill()
        running.wait()


def test_a_dead_jobs_lock_is_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    _write_lock(tmp_path, dead.pid)
    with StoreLock(str(tmp_path), "run-y") as lock:
        assert lock.took_over is not None and lock.took_over.pid == dead.pid
        assert lock.holder() == lock.me
        with pytest.raises(StoreLocked, match="run run-y"):  # this process holds it now
            StoreLock(str(tmp_path), "run-z").acquire()
    assert not (tmp_path / LOCK_FILE).exists()
