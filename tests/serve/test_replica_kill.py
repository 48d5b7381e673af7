"""A model replica killed under load, twice (issue 14, item 1).

HTTP and handle clients in Ray actors keep requests in flight while the test kill -9s the model
replica's process. Every call completes with the reference scores, in order (nothing lost, nothing
answered twice), the clients' retries cover the gap, and Serve brings a new replica up. The app runs
with a separate ingress and colocated; the shipped config also runs under HAProxy, as `make demo` starts it.
"""

import os
import signal
import subprocess
import time

import pytest

from tests.conversations import varied_conversations

from .conftest import app_args, deploy, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.chaos]

APP, ROUTE = "chaos-test", "/chaos"
TOL = 1e-4


@pytest.fixture(params=["separate", "colocated"])
def chaos_app(request, serve_url):
    """The app with a separate ingress, and colocated (the model replica answers HTTP itself, as shipped)."""
    from ray import serve

    deploy(APP, ROUTE, app_args(colocated=request.param == "colocated"))
    yield serve.get_deployment_handle("RewardModelServer", APP)
    serve.delete(APP)


def _pid(model):
    try:
        return model.info.remote().result(timeout_s=10)["pid"]
    except Exception:  # noqa: BLE001 - no replica answers yet
        return None


def test_a_replica_killed_twice_under_load_loses_no_request(chaos_app, serve_url, trainer_cls, reference):
    import ray

    convs = varied_conversations(24, seed=61, max_words=200)
    expected = reference.scores(convs)
    trainers = [trainer_cls.remote() for _ in range(4)]
    for k, trainer in enumerate(trainers):  # two over HTTP, two over the handle (one hop)
        if k % 2:
            ray.get(trainer.http_client.remote(f"{serve_url}{ROUTE}", chunk_size=4, max_in_flight=2))
        else:
            ray.get(trainer.handle_client.remote(APP, chunk_size=4, max_in_flight=2))
    # An actor runs its calls one after another, so each client keeps requests in flight while it has calls.
    calls = []  # (trainer index, ref), in the order sent

    def keep_busy():  # a fast machine can finish a fixed load before a kill: top each client up first
        for k, trainer in enumerate(trainers):
            refs = [ref for i, ref in calls if i == k]
            _, pending = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
            calls.extend((k, trainer.client_call.remote("score", convs)) for _ in range(2 - len(pending)))

    recovery = []
    for _ in range(2):
        keep_busy()
        time.sleep(2)
        keep_busy()
        pid = wait_for(lambda: _pid(chaos_app), 120, "a model replica")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: (p := _pid(chaos_app)) is not None and p != pid, 120, "Serve to restart the replica")
        recovery.append(time.monotonic() - killed)
    results = ray.get([ref for _, ref in calls], timeout=600)
    assert all(r == pytest.approx(expected, abs=TOL) for r in results)  # every call whole, right and in order
    per_client = ray.get([t.client_retries.remote() for t in trainers])  # handle, HTTP, handle, HTTP
    print(f"replica recovery {', '.join(f'{s:.1f}' for s in recovery)} s; client retries {per_client}")
    assert sum(per_client) >= 1  # the kills hit requests in flight, and the clients sent them again


def test_the_shipped_app_in_haproxy_mode_loses_no_request_when_its_replica_dies(tmp_path, reference):
    """What `make demo` and the cluster configs run: serve.config.yaml (colocated) with HAProxy in front (Serve's
    high-throughput mode), on its own local Ray. HTTP clients see the killed replica as dropped connections."""
    import threading

    import psutil

    from rmcluster.client import RewardClient
    from serve.demo import HIGH_THROUGHPUT_ENV, _stop, serve_command, wait_healthy
    from tests.ports import free_ports

    from .conftest import REPO, shipped_config

    port, stats, metrics = free_ports(3)
    path, env = shipped_config(tmp_path, port)
    env.update(HIGH_THROUGHPUT_ENV, RAY_SERVE_HAPROXY_STATS_PORT=str(stats), RAY_SERVE_HAPROXY_METRICS_PORT=str(metrics))
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(serve_command(path), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def replica_pid():  # the model replica among `serve run`'s descendants (its Ray instance's workers)
        for proc in psutil.Process(server.pid).children(recursive=True):
            try:
                if any("ServeReplica:reward:RewardModelServer" in part for part in proc.cmdline()):
                    return proc.pid
            except psutil.Error:
                continue
        return None

    convs = varied_conversations(24, seed=62, max_words=200)
    expected = reference.scores(convs)
    stop, results, failures, clients = threading.Event(), [], [], []

    def keep_scoring():
        client = RewardClient(url, chunk_size=4, max_in_flight=2)
        clients.append(client)
        while not stop.is_set():
            try:
                results.append(client.score(convs))
            except Exception as err:  # noqa: BLE001 - every failure is reported below
                failures.append(repr(err))

    threads = [threading.Thread(target=keep_scoring, daemon=True) for _ in range(4)]
    try:
        wait_healthy(url, server, 300)
        for thread in threads:
            thread.start()
        for _ in range(2):
            time.sleep(3)
            pid = wait_for(replica_pid, 60, "the model replica")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: (p := replica_pid()) is not None and p != pid, 120, "Serve to restart the replica")
            wait_healthy(url, server, 120)
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
        _stop(server, already_interrupted=False)
    assert not failures, failures[:3]
    assert len(results) >= 4 and all(r == pytest.approx(expected, abs=TOL) for r in results)
    assert sum(c.retry.retries for c in clients) >= 1  # the kills hit requests in flight, sent again
