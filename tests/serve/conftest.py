"""Serve fixtures: the demo-model reward app for the session (on the root conftest's Serve instance), trainer actors."""

import os
import time
from pathlib import Path

import pytest
import yaml

# Read by Serve's controller, proxies and handles when they start, so set before the session's Ray
# cluster exists: autoscaling metrics every second instead of every 10 s, so the autoscaling test
# reacts in seconds. Serve-only settings; nothing else reads them.
os.environ.setdefault("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "1")
os.environ.setdefault("RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "1")
# An unschedulable replica is reported after 5 s instead of 30 (test_unschedulable.py waits for it).
os.environ.setdefault("RAY_SERVE_SLOW_STARTUP_WARNING_S", "5")
os.environ.setdefault("RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S", "5")

REPO = Path(__file__).resolve().parents[2]
APP = "reward-test"
MAX_LENGTH = 512
MAX_BODY_BYTES = 256 * 1024


def app_args(colocated: bool = False, **overrides) -> dict:
    """ServeArgs for a small demo-model app: fractional CPUs, one replica each, a short max_length.

    `colocated`: the model replicas serve HTTP themselves (`ingress.colocated`, as serve.config.yaml ships).
    """
    ingress = {"colocated": True} if colocated else {"num_cpus": 0.1, "num_replicas": 1}
    args = {
        "rm": {"model": "demo", "tokenization": {"max_length": MAX_LENGTH, "on_overflow": "error"}},
        "model_server": {"num_cpus": 0.25, "num_replicas": 1},
        "ingress": {**ingress, "max_body_bytes": MAX_BODY_BYTES},
    }
    for section, values in overrides.items():
        args[section] = {**args.get(section, {}), **values} if isinstance(values, dict) else values
    return args


def shipped_config(tmp_path: Path, port: int) -> tuple[Path, dict[str, str]]:
    """serve.config.yaml as shipped, on `port` (one nobody else uses), and an environment in which `serve run`
    starts its own local Ray instance."""
    config = yaml.safe_load((REPO / "serve.config.yaml").read_text())
    config["http_options"]["port"] = port
    path = tmp_path / "serve.config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def deploy(name: str, route_prefix: str, args: dict):
    from ray import serve

    from serve.app import build_app
    from serve.args import ServeArgs

    return serve.run(build_app(ServeArgs.model_validate(args)), name=name, route_prefix=route_prefix)


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.5):
    """Poll until predicate() is truthy; generous deadlines because the 2 CPUs are shared."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture(scope="session")
def reward_app(serve_url, demo_dir):
    """The demo-model app at route '/', shared by the API tests. Yields its base URL."""
    from ray import serve

    deploy(APP, "/", app_args())
    yield serve_url
    serve.delete(APP)


@pytest.fixture(scope="session")
def reference(demo_dir):
    from tests.reference import ReferenceLoop

    return ReferenceLoop(demo_dir)


@pytest.fixture(scope="session")
def trainer_cls(ray_cluster):
    """A Ray actor that calls the service the way an RL trainer does: from its own process."""
    import ray

    @ray.remote(num_cpus=0)
    class Trainer:
        def http_client(self, url, **kwargs):
            from rmcluster.client import RewardClient

            self.client = RewardClient(url, **kwargs)

        def handle_client(self, app, **kwargs):
            from rmcluster.client import HandleRewardClient

            self.client = HandleRewardClient(app, **kwargs)

        def client_call(self, method, *args):
            return getattr(self.client, method)(*args)

        def client_attr(self, name):
            return getattr(self.client, name)

        def client_retries(self):
            return self.client.retry.retries

        def handle_call(self, app, method, *args):
            from ray import serve

            return getattr(serve.get_app_handle(app), method).remote(*args).result()

        def post(self, url, body):
            import httpx

            response = httpx.post(url, json=body, timeout=120)
            return response.status_code, response.json()

    return Trainer
