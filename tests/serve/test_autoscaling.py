"""Autoscaling: sustained load takes the model deployment from 1 to 2 replicas, and it scales back down after.

Delays and windows are set small here so the test takes seconds; the conftest makes Serve push
autoscaling metrics every second.
"""

import pytest

from .conftest import app_args, deploy, wait_for

pytestmark = pytest.mark.ray

APP, ROUTE = "autoscaling-test", "/auto"


def _running(app: str, deployment: str = "RewardModelServer") -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return status.deployments[deployment].replica_states.get("RUNNING", 0)


@pytest.fixture(scope="module")
def autoscaling_app(serve_url, demo_dir):
    from ray import serve

    deploy(APP, ROUTE, app_args(model_server={
        "num_replicas": None, "num_cpus": 0.2, "max_ongoing_requests": 8,
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
                               "upscale_delay_s": 1, "downscale_delay_s": 3, "look_back_period_s": 2},
    }))
    yield APP
    serve.delete(APP)


# Serve compares look_back_period_s with the deprecated metrics_interval_s (10 s); the push interval
# that matters is the environment variable set in conftest (1 s).
@pytest.mark.filterwarnings("ignore:`look_back_period_s`:FutureWarning")
def test_scales_up_under_sustained_load_then_back_down(autoscaling_app, ray_cluster):
    ray = ray_cluster

    @ray.remote(num_cpus=0)
    class Load:
        """Trainer-like callers keeping several requests in flight until told to stop."""

        def __init__(self, app):
            import threading

            from ray import serve

            self.handle, self.stop_flag, self.done = serve.get_app_handle(app), threading.Event(), 0
            conv = [{"role": "user", "content": "apple river stone " * 60}, {"role": "assistant", "content": "ok"}]
            self.threads = [threading.Thread(target=self._loop, args=(conv,), daemon=True) for _ in range(6)]
            for t in self.threads:
                t.start()

        def _loop(self, conv):
            while not self.stop_flag.is_set():
                self.handle.score.remote([conv]).result()
                self.done += 1

        def stop(self):
            self.stop_flag.set()
            for t in self.threads:
                t.join()
            return self.done

    assert _running(autoscaling_app) == 1
    load = Load.remote(autoscaling_app)
    try:
        wait_for(lambda: _running(autoscaling_app) == 2, timeout_s=150, what="scale up to 2 replicas")
    finally:
        assert ray.get(load.stop.remote()) > 0
    wait_for(lambda: _running(autoscaling_app) == 1, timeout_s=150, what="scale back down to 1 replica")
