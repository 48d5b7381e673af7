"""The job's s3:// input and output, for real: a local S3-compatible server (moto's server mode) and the same
pyarrow filesystem code users hit. Read a corpus from a bucket, write the store to one, kill the job, resume:
exactly one row per item. A bucket that refuses writes fails before anything is scored."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from rmcluster.store import ResultsStore
from tests.jobs.conftest import REPO, job_command, job_env
from tests.jobs.corpus import MAX_LENGTH, assert_store_matches
from tests.ports import free_port

moto_server = pytest.importorskip("moto.server")
pytestmark = pytest.mark.ray

DEADLINE_S = 400


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A moto S3 server on loopback, and the environment that points boto-style clients and pyarrow at it."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # for this process's pyarrow (the store checks below)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="module")
def s3_corpus(s3_env, corpus):
    import boto3
    import pyarrow.fs as pafs

    boto3.client("s3").create_bucket(Bucket="corpus")
    boto3.client("s3").create_bucket(Bucket="results")
    s3, _ = pafs.FileSystem.from_uri("s3://corpus/in")
    pafs.copy_files(str(corpus), "corpus/in", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    return "s3://corpus/in"


def _job(s3_env, *args):
    # The job starts its own local Ray, whose workers inherit the S3 environment (as a cluster's nodes would).
    env = job_env(**s3_env)
    env.pop("RAY_ADDRESS", None)
    return job_command(*args), env


@pytest.mark.chaos
def test_s3_corpus_to_s3_store_killed_and_resumed(s3_env, s3_corpus, demo_dir, reference):
    out = "s3://results/run-1"
    store = ResultsStore(out)
    argv, env = _job(s3_env, "--input", s3_corpus, "--output", out, "--model", str(demo_dir), "--max-length",
                     str(MAX_LENGTH), "--rows-per-file", "64", "--batch-size", "64", "--records-per-batch", "64",
                     "--tokenizer-actors", "1")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not store.data_files():
            assert proc.poll() is None, f"job exited ({proc.returncode}) early: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no results file appeared in the bucket"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert 0 < len(store.read(columns=["id", "index"])) < len(reference), "the kill did not land mid-run"

    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_store_matches(out, reference)


def test_a_bucket_that_refuses_writes_fails_before_scoring(s3_env, s3_corpus, demo_dir):
    argv, env = _job(s3_env, "--input", s3_corpus, "--output", "s3://no-such-bucket/run", "--model", str(demo_dir))
    start = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "error: output s3://no-such-bucket/run is not writable" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    print(f"refused in {time.monotonic() - start:.1f} s: {done.stderr.strip().splitlines()[-1]}")
