"""`make demo`: start Serve with serve.config.yaml, score the "Jane has 12 apples" pair over HTTP, keep serving.

    python -m serve.demo                  # serves until Ctrl-C
    python -m serve.demo --exit           # score, then shut down (CI)

`serve run` runs as a child process (its logs go to a file); this script waits for /health,
POSTs the seed pair to /v1/score, prints both scores and the endpoint, then waits for Ctrl-C.
Ctrl-C or SIGTERM stops `serve run` too (it shuts Serve and its Ray instance down).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from rmcluster.demo_model import DEMO_MODEL_NAME, MEANINGLESS, SEED_PAIR

REPO = Path(__file__).resolve().parents[1]


# Ray Serve's high-throughput mode (Ray >= 2.55), read when Ray starts: HAProxy in place of the Python HTTP
# proxy, gRPC between deployments. GRPO-shaped per-sample /classify traffic ran about 1.4x faster with it on 2 cores
# (bench/RESULTS.md). Set a variable to 0 to run Serve's defaults.
HIGH_THROUGHPUT_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def serve_command(config: Path) -> list[str]:
    cli = Path(sys.executable).with_name("serve")
    prefix = [str(cli)] if cli.exists() else [sys.executable, "-c", "from ray.serve.scripts import cli; cli()"]
    # A fresh local Ray instance unless RAY_ADDRESS points at a cluster: never attach by accident.
    return prefix + ["run", str(config), "--address", os.environ.get("RAY_ADDRESS") or "local"]


def endpoint(config: Path) -> str:
    http = yaml.safe_load(config.read_text()).get("http_options") or {}
    host = http.get("host", "127.0.0.1")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{http.get('port', 8000)}"


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"`{' '.join(map(str, server.args[:3]))}` exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url}/health not ready after {timeout_s:.0f}s")


def port_in_use_hint(log_text: str) -> str | None:
    """What to do when a port the server needs is taken; HAProxy from an earlier `serve run` can outlive it."""
    ports = sorted(set(re.findall(r"cannot bind socket \(Address already in use\) for \[[^\]]*:(\d+)\]", log_text)))
    if not ports and "Address already in use" not in log_text:
        return None
    held = f"port{'s' if len(ports) > 1 else ''} {', '.join(ports)}" if ports else "a port it needs"
    return (f"hint: another process holds {held}. HAProxy from an earlier `serve run` can outlive it "
            "(`pgrep -a haproxy`; stop it with `pkill -x haproxy`), or another server listens there. A second "
            "Serve instance on this machine needs its own HAProxy ports: RAY_SERVE_HAPROXY_STATS_PORT (8404) "
            "and RAY_SERVE_HAPROXY_METRICS_PORT (9101).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the reward model and score the seed pair over HTTP.")
    parser.add_argument("--config", type=Path, default=REPO / "serve.config.yaml")
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for /health")
    parser.add_argument("--exit", action="store_true", help="shut down after scoring instead of serving on")
    args = parser.parse_args(argv)

    url = endpoint(args.config)
    log_path = Path(tempfile.gettempdir()) / "rmcluster-serve-demo.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    env = {**HIGH_THROUGHPUT_ENV, **env}  # Serve's high-throughput mode, unless the caller's environment says otherwise
    # `kill`, `timeout` and container stops send SIGTERM, whose default ends Python without `finally`: `serve run`,
    # its Ray instance and HAProxy would outlive the demo, holding its ports.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print(f"starting Serve with {args.config.name} (logs: {log_path}) ...", flush=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen(serve_command(args.config), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    interrupted = False
    try:
        wait_healthy(url, server, args.startup_timeout)
        pair = {k: SEED_PAIR[k] for k in ("prompt", "chosen", "rejected")}
        response = httpx.post(f"{url}/v1/score", json=pair, timeout=120)
        response.raise_for_status()
        body = response.json()
        print(f"\nmodel: {body['model']}\nprompt: {SEED_PAIR['prompt']}")
        for label, result in zip(("chosen", "rejected"), body["results"]):
            print(f"  {label:<8} score = {result['score']:.6f}  ({result['num_tokens']} tokens)")
        if body["model"] == DEMO_MODEL_NAME:
            print(f"note: {MEANINGLESS}")
        print(f"\nendpoint: {url}  (POST /v1/score, /get_reward, /classify; GET /v1/models, /health; docs {url}/docs)")
        if args.exit:
            return 0
        print("serving until Ctrl-C ...", flush=True)
        server.wait()
        return server.returncode or 0
    except KeyboardInterrupt:  # the terminal sent SIGINT to `serve run` as well
        print("\nshutting down ...")
        interrupted = True
        return 0
    except Exception as err:  # noqa: BLE001 - say what failed and where the server's logs are
        print(f"error: {err}\n--- last lines of {log_path} ---", file=sys.stderr)
        log_text = log_path.read_text(errors="replace")
        print("\n".join(log_text.splitlines()[-30:]), file=sys.stderr)
        if hint := port_in_use_hint(log_text):
            print(hint, file=sys.stderr)
        return 1
    finally:
        _stop(server, already_interrupted=interrupted)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # the shell's code for a signal; `finally` stops `serve run`


def _stop(server: subprocess.Popen, already_interrupted: bool) -> None:
    """Ctrl-C for `serve run` (it shuts Serve and its Ray instance down), then harder if it hangs."""
    if server.poll() is None and not already_interrupted:
        server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
