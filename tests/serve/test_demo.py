"""`make demo` (python -m serve.demo): serve.config.yaml starts offline on CPU and the seed pair scores over HTTP."""

import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from rmcluster.demo_model import SEED_PAIR

from tests.ports import free_port, free_ports

from .conftest import REPO, shipped_config


@pytest.mark.slow
def test_demo_serves_the_shipped_config_and_scores_the_seed_pair(tmp_path, reference):
    port = free_port()
    path, env = shipped_config(tmp_path, port)
    out = subprocess.run([sys.executable, "-m", "serve.demo", "--config", str(path), "--exit"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    scores = dict(re.findall(r"^\s+(chosen|rejected)\s+score = (-?[0-9.]+)", out.stdout, re.M))
    for label in ("chosen", "rejected"):
        conv = [{"role": "user", "content": SEED_PAIR["prompt"]}, {"role": "assistant", "content": SEED_PAIR[label]}]
        assert abs(float(scores[label]) - reference.score(conv)) < 1e-4
    assert f"endpoint: http://127.0.0.1:{port}" in out.stdout and "meaningless" in out.stdout


@pytest.mark.slow
def test_sigterm_to_the_demo_stops_serve_run_too(tmp_path):
    """`kill`, `timeout` and container stops send SIGTERM: the demo must not leave `serve run` serving behind it."""
    import httpx
    import psutil

    port = free_port()
    path, env = shipped_config(tmp_path, port)
    demo = subprocess.Popen([sys.executable, "-m", "serve.demo", "--config", str(path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tree: list = []
    try:
        lines = []
        for line in demo.stdout:  # the demo prints this once the seed pair has scored
            lines.append(line)
            if line.startswith("serving until Ctrl-C"):
                break
        assert demo.poll() is None, "".join(lines)
        process = psutil.Process(demo.pid)
        tree = process.children(recursive=True)
        serve_run = process.children()[0]  # its one child
        assert str(path) in serve_run.cmdline()
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=120) == 128 + signal.SIGTERM
        assert not serve_run.is_running()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:  # leave nothing serving if an assertion failed
        if demo.poll() is None:
            demo.kill()
        for proc in tree:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.mark.slow
def test_a_second_instance_runs_beside_haproxys_default_ports_with_the_readme_variables(tmp_path):
    """HAProxy's stats and metrics ports (8404, 9101) held, as by a first instance: the README's variables move them."""
    import socket

    held = []
    for default in (8404, 9101):
        sock = socket.socket()
        try:
            sock.bind(("0.0.0.0", default))
            sock.listen()
            held.append(sock)
        except OSError:  # already held by something else: the case this test is about anyway
            sock.close()
    port, stats, metrics = free_ports(3)
    path, env = shipped_config(tmp_path, port)
    env.update(RAY_SERVE_HAPROXY_STATS_PORT=str(stats), RAY_SERVE_HAPROXY_METRICS_PORT=str(metrics))
    try:
        out = subprocess.run([sys.executable, "-m", "serve.demo", "--config", str(path), "--exit"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=600)
    finally:
        for sock in held:
            sock.close()
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^\s+chosen\s+score = ", out.stdout, re.M)
    assert "RAY_SERVE_HAPROXY_STATS_PORT=18404 RAY_SERVE_HAPROXY_METRICS_PORT=19101" in (REPO / "README.md").read_text()


@pytest.mark.slow
def test_the_readme_trainer_snippet_runs_verbatim_beside_serve_run(tmp_path):
    """`serve run serve.config.yaml` as shipped (on a free port), then the README's snippet, unchanged."""
    from serve.demo import _stop, serve_command, wait_healthy

    readme = (REPO / "README.md").read_text()
    snippet = readme.split("### From an RL trainer (Ray actor)\n\n```python\n", 1)[1].split("```", 1)[0]
    assert 'ray.init(address="auto")' in snippet
    port = free_port()
    path, env = shipped_config(tmp_path, port)
    # Its own temp dir (short: Ray's socket paths have a length limit), so address="auto" finds this cluster.
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rms-", dir="/tmp")
    env["RAY_AUTH_MODE"] = "disabled"  # a throwaway local cluster, reached below by its address alone
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(serve_command(path), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, 300)
        (tmp_path / "snippet.py").write_text(snippet)
        # The test session runs other Ray instances on this machine, so "auto" is pointed at the one `serve run`
        # started (a user's machine has just that one); the snippet itself runs as written.
        import ray

        port = next(Path(env["RAY_TMPDIR"], "ray", "session_latest").glob("gcs_server_port_*")).read_text().strip()
        snippet_env = {**env, "RAY_ADDRESS": f"{ray.util.get_node_ip_address()}:{port}"}
        out = subprocess.run([sys.executable, str(tmp_path / "snippet.py")], cwd=REPO, env=snippet_env,
                             capture_output=True, text=True, timeout=300)
    finally:
        _stop(server, already_interrupted=False)
    assert out.returncode == 0, out.stdout + out.stderr + (tmp_path / "serve.log").read_text()[-3000:]
    rewards = yaml.safe_load(out.stdout.strip().splitlines()[-1])
    assert isinstance(rewards, list) and len(rewards) == 1 and isinstance(rewards[0], float)


def test_a_port_held_by_a_leftover_haproxy_is_named_in_the_demo_error():
    from serve.demo import port_in_use_hint

    # HAProxy's own lines, from a demo that started while an earlier run's HAProxy still held its ports.
    log = ("[ALERT]    (9100) : Binding [/tmp/haproxy-serve/2e88/haproxy.cfg:45] for frontend prometheus: cannot bind "
           "socket (Address already in use) for [0.0.0.0:9101]\n"
           "[ALERT]    (9100) : Binding [/tmp/haproxy-serve/2e88/haproxy.cfg:95] for proxy stats: cannot bind socket "
           "(Address already in use) for [0.0.0.0:8404]\n")
    hint = port_in_use_hint(log)
    assert hint is not None and "ports 8404, 9101" in hint and "pkill -x haproxy" in hint
    assert "RAY_SERVE_HAPROXY_STATS_PORT" in hint and "RAY_SERVE_HAPROXY_METRICS_PORT" in hint
    assert "a port it needs" in port_in_use_hint("OSError: [Errno 98] Address already in use")
    assert port_in_use_hint("RuntimeError: the model failed to load") is None
