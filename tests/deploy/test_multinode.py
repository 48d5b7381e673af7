"""A real multi-node Ray cluster on this machine (cluster/local.sh): a head and a worker as separate
`ray start` nodes, in their own network namespaces when root. `serve deploy serve.config.yaml` and
`ray job submit -- python -m jobs.score_corpus` run against it, as a user would, and the replicas and
scoring actors must run on the worker (the head has num-cpus 0), with complete, correct results.
"""

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rmcluster.config import RMConfig
from rmcluster.demo_model import SEED_PAIR
from rmcluster.engine import ScoringEngine
from rmcluster.pipeline import score_records
from rmcluster.store import ResultsStore
from tests.ports import free_ports

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LOCAL_SH = REPO / "cluster" / "local.sh"
BIN = Path(sys.executable).parent
N_PAIRS = 150


def _cluster_env(state: Path) -> dict:
    env = dict(os.environ)
    for line in (state / "cluster.env").read_text().splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        env[key] = value
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env.pop("RAY_ADDRESS_OVERRIDE", None)
    return env


def _run(cmd, env, timeout=600, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("ray", path=str(BIN)) is None:
        pytest.skip("no `ray` CLI next to this interpreter: cannot start Ray nodes")
    # Short: Ray's unix socket paths under the state dir must stay under 108 bytes.
    state = Path(tempfile.mkdtemp(prefix="rmct-", dir="/tmp"))
    gcs_port, dashboard_port = free_ports(2)
    env = dict(os.environ, RMCLUSTER_LOCAL_STATE=str(state), RMCLUSTER_LOCAL_NAME="rmct",
               RMCLUSTER_LOCAL_SUBNET="10.213.78", RMCLUSTER_LOCAL_GCS_PORT=str(gcs_port),
               RMCLUSTER_LOCAL_DASHBOARD_PORT=str(dashboard_port), RAY=str(BIN / "ray"))
    up = subprocess.run([str(LOCAL_SH), "up", "--workers", "1", "--worker-cpus", "4"], env=env,
                        capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, f"local.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield state, _cluster_env(state), env
    finally:
        subprocess.run([str(LOCAL_SH), "down"], env=env, capture_output=True, text=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


STATE_QUERY = """
import json
from ray.util.state import list_actors, list_nodes
nodes = {n.node_id: {"ip": n.node_ip, "head": n.is_head_node} for n in list_nodes() if n.state == "ALIVE"}
actors = [{"class": a.class_name, "state": a.state, "node": a.node_id} for a in list_actors(limit=10000)]
print(json.dumps({"nodes": nodes, "actors": actors}))
"""


def _cluster_state(env) -> tuple[dict, list]:
    out = _run([sys.executable, "-c", STATE_QUERY], env, timeout=120).stdout
    state = json.loads(out.strip().splitlines()[-1])
    return state["nodes"], state["actors"]


def _assert_on_workers_only(nodes, actors, class_prefix) -> list:
    mine = [a for a in actors if a["class"].startswith(class_prefix)]
    assert mine, f"no {class_prefix} actors"
    for actor in mine:
        assert actor["node"] in nodes and not nodes[actor["node"]]["head"], actor
    return mine


def _wait_running(env, deadline_s=420):
    deadline = time.time() + deadline_s
    status = ""
    while time.time() < deadline:
        status = subprocess.run([str(BIN / "serve"), "status"], env=env, capture_output=True, text=True).stdout
        if "status: RUNNING" in status and "DEPLOY_FAILED" not in status:
            return
        assert "DEPLOY_FAILED" not in status, status
        time.sleep(3)
    pytest.fail(f"app not RUNNING in {deadline_s}s:\n{status}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    records = [SEED_PAIR] + [
        {"id": f"p{i}", "prompt": f"question {i}: how many apples?",
         "chosen": "apples " * rng.randint(1, 60), "rejected": "pears " * rng.randint(1, 60)}
        for i in range(N_PAIRS)
    ]
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{broken json line\n")
    return path, records


@pytest.fixture(scope="module")
def expected(corpus):
    _, records = corpus
    rows = score_records(ScoringEngine.from_config(RMConfig(model="demo")), records)
    return {(r["id"], r["index"]): r["score"] for r in rows}


def test_cluster_has_a_head_and_a_separate_worker(cluster):
    state, env, _ = cluster
    nodes, _ = _cluster_state(env)
    assert len(nodes) == 2
    ips = {n["ip"] for n in nodes.values()}
    if (state / "mode").read_text().strip() == "netns":
        assert len(ips) == 2, "each node is its own host"


def test_serve_deploy_runs_replicas_on_the_worker_and_answers(cluster, expected):
    state, env, local_env = cluster
    _run([str(BIN / "serve"), "deploy", "serve.config.yaml"], env)
    _wait_running(env)
    nodes, actors = _cluster_state(env)
    replicas = _assert_on_workers_only(nodes, actors, "ServeReplica:reward:")
    assert {a["class"] for a in replicas} >= {"ServeReplica:reward:RewardModelServer"}
    # serve.config.yaml binds the proxy to the head's 127.0.0.1: ask from the head node.
    request = ("import httpx, json; r = httpx.post('http://127.0.0.1:8000/v1/score', timeout=60, json="
               + json.dumps({k: SEED_PAIR[k] for k in ("prompt", "chosen", "rejected")})
               + "); r.raise_for_status(); print(json.dumps(r.json()['scores']))")
    out = _run([str(LOCAL_SH), "exec", "0", sys.executable, "-c", request], local_env, timeout=120).stdout
    scores = json.loads(out.strip().splitlines()[-1])
    want = [expected[("jane-apples", 0)], expected[("jane-apples", 1)]]
    assert scores == pytest.approx(want, abs=1e-4)


def _submit(env, corpus_path, out_dir, *extra):
    runtime_env = json.dumps({"working_dir": ".", "excludes": [".venv", ".git", "*.parquet", "bench"]})
    return _run([str(BIN / "ray"), "job", "submit", "--runtime-env-json", runtime_env, "--",
                 "python", "-m", "jobs.score_corpus", "--input", str(corpus_path), "--output", str(out_dir),
                 "--model", "demo", "--max-actors", "1", *extra], env, timeout=900)


def _assert_complete(out_dir, expected):
    rows = ResultsStore(str(out_dir)).read(["id", "index", "score", "error"]).to_pylist()
    keys = [(r["id"], r["index"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(expected) + 1  # + the broken line's error row
    errors = [r for r in rows if r["error"]]
    assert len(errors) == 1 and "invalid JSON" in errors[0]["error"]
    for r in rows:
        if not r["error"]:
            assert r["score"] == pytest.approx(expected[(r["id"], r["index"])], abs=1e-4)


def test_corpus_job_scores_on_the_worker_and_is_complete(cluster, corpus, expected, tmp_path):
    _, env, _ = cluster
    corpus_path, _ = corpus
    out = _submit(env, corpus_path, tmp_path / "results")
    assert "succeeded" in out.stdout + out.stderr
    _assert_complete(tmp_path / "results", expected)
    nodes, actors = _cluster_state(env)
    _assert_on_workers_only(nodes, actors, "MapWorker(MapBatches(ScoreStage))")
    _assert_on_workers_only(nodes, actors, "MapWorker(MapBatches(EncodeStage))")


def test_corpus_job_through_the_deployed_serve_app(cluster, corpus, expected, tmp_path):
    """One cluster serves trainers and scores corpora on the same replicas."""
    _, env, _ = cluster
    corpus_path, _ = corpus
    _submit(env, corpus_path, tmp_path / "via-serve", "--serve-app", "reward")
    _assert_complete(tmp_path / "via-serve", expected)


def _job_status(env, job_id) -> str:
    out = _run([str(BIN / "ray"), "job", "status", job_id], env, timeout=120).stdout
    # "Status for job '...': RUNNING" while it runs, "Job '...' succeeded" (or failed, stopped) at the end.
    found = re.findall(r"\b(succeeded|failed|stopped|running|pending)\b", re.sub(r"\x1b\[[0-9;]*m", "", out), re.I)
    status = found[-1].upper() if found else "RUNNING"
    return "RUNNING" if status == "PENDING" else status


def _kill_worker_mid_job(env, local_env, out_dir, corpus_path, kill: int, new: int, *mode) -> str:
    """Submit the job, kill worker `kill` once a results file exists, start worker `new`; returns how it ended."""
    runtime_env = json.dumps({"working_dir": ".", "excludes": [".venv", ".git", "*.parquet", "bench"]})
    job_args = ["python", "-m", "jobs.score_corpus", "--input", str(corpus_path), "--output", str(out_dir),
                "--model", "demo", "--max-actors", "1", "--rows-per-file", "8", "--batch-size", "8",
                "--records-per-batch", "8", "--tokenizer-actors", "1", *mode]
    submitted = _run([str(BIN / "ray"), "job", "submit", "--no-wait", "--runtime-env-json", runtime_env, "--",
                      *job_args], env).stdout
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submitted).group(0)
    store = ResultsStore(str(out_dir))
    deadline = time.time() + 600
    while not store.data_files():
        assert _job_status(env, job_id) == "RUNNING", "the job ended before the kill"
        assert time.time() < deadline, "no results file appeared"
        time.sleep(0.5)
    _run([str(LOCAL_SH), "kill-node", str(kill)], local_env)  # the only worker: actors and replicas die with it
    killed_at = time.time()
    _run([str(LOCAL_SH), "add-worker", str(new), "--worker-cpus", "4"], local_env)
    while (status := _job_status(env, job_id)) == "RUNNING":
        assert time.time() < deadline, "the job did not end after the worker was replaced"
        time.sleep(2)
    if status != "SUCCEEDED":  # the job failed with its worker: resubmitted on the same output, it resumes
        _submit(env, corpus_path, out_dir, "--rows-per-file", "8", *mode)
        status += ", resubmitted and finished"
    return f"{status} {time.time() - killed_at:.0f} s after the kill"


@pytest.mark.chaos
def test_a_worker_node_killed_mid_job_then_replaced(cluster, corpus, expected, tmp_path):
    """Last in this module: it replaces the cluster's worker, twice. The job, in-process scoring and through the
    Serve app, finishes (or, resubmitted, resumes) with exactly one row per item and the engine's scores."""
    _, env, local_env = cluster
    corpus_path, _ = corpus
    ended = _kill_worker_mid_job(env, local_env, tmp_path / "killed", corpus_path, kill=1, new=2)
    print(f"job with its own scorers, worker killed: {ended}")
    _assert_complete(tmp_path / "killed", expected)

    _run([str(BIN / "serve"), "deploy", "serve.config.yaml"], env)
    _wait_running(env)
    ended = _kill_worker_mid_job(env, local_env, tmp_path / "killed-serve", corpus_path, 2, 3, "--serve-app", "reward")
    print(f"job through the Serve app, worker killed: {ended}")
    _assert_complete(tmp_path / "killed-serve", expected)
    _wait_running(env)  # Serve brought the app back on the new worker
    nodes, _ = _cluster_state(env)
    assert len(nodes) == 2  # head + the newest worker
