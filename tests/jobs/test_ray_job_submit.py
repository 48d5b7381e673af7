"""`ray job submit` against a real `ray start --head` on this machine runs the job end to end.

The head runs on its own free ports and temp dir so that it cannot meet another Ray instance on the
machine; it is started with --block and stopped with SIGTERM to that one process, which makes Ray
stop the processes it started (never `ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.jobs.conftest import REPO, job_env
from tests.jobs.corpus import assert_store_matches
from tests.ports import free_ports

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")
START_DEADLINE_S = 180
JOB_DEADLINE_S = 420


@pytest.fixture
def head(tmp_path):
    """A separate Ray head: (dashboard address, env). Stopped and checked gone afterwards."""
    gcs, dash, node, obj, client, agent, agent_grpc, renv, metrics = free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="rmj-", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Token auth on, with this test's own token, for the head and every CLI call that talks to it.
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = job_env(RAY_ADDRESS="", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    log = open(tmp_path / "head.log", "w")
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=4", "--object-store-memory=200000000",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--node-manager-port={node}", f"--object-manager-port={obj}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={renv}", f"--metrics-export-port={metrics}", f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            assert proc.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True, timeout=120)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, probe.stderr.decode()[-3000:]
            time.sleep(2)
        yield address, env
    finally:
        proc.send_signal(signal.SIGTERM)  # --block: Ray's handler stops the head's processes
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session this test created, nothing else
            proc.wait(timeout=30)
        log.close()


def test_ray_job_submit_runs_the_job_end_to_end(head, job_args, reference, tmp_path):
    address, env = head
    out = tmp_path / "store"
    submit = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
              sys.executable, "-m", "jobs.score_corpus", *job_args, "--output", str(out)]
    done = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_DEADLINE_S)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "succeeded" in done.stdout + done.stderr
    assert "pair_accuracy" in done.stdout  # the job's final summary table, streamed back
    assert_store_matches(out, reference)
    assert json.loads((out / "summary.json").read_text())["items"] == len(reference)
