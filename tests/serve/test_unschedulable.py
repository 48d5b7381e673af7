"""A model replica that cannot be scheduled: the handle client says so, naming the deployment, the resource
and the setting to lower, instead of hanging (Serve reports an unscheduled replica after 30 s; 5 s here,
set in conftest.py)."""

import pytest

from rmcluster.client import HandleRewardClient

from .conftest import app_args, wait_for

APP = "reward-unschedulable"


def test_a_call_to_an_unschedulable_replica_times_out_with_the_reason(serve_url, demo_dir):
    from ray import serve
    from ray.serve.api import _run

    from serve.app import build_app
    from serve.args import ServeArgs

    # More CPUs than the session cluster has: the replica can never start. Not awaited (it never gets ready).
    args = ServeArgs.model_validate(app_args(model_server={"num_cpus": 64}))
    _run(build_app(args), name=APP, route_prefix="/unschedulable", _blocking=False)
    try:
        def reported():
            app = serve.status().applications.get(APP)
            model = app and app.deployments.get("RewardModelServer")
            return model is not None and "scheduled" in (model.message or "")

        wait_for(reported, 120, "Serve to report the unscheduled replica")
        client = HandleRewardClient(APP, timeout_s=5, one_hop=False)
        with pytest.raises(TimeoutError) as err:
            client.score([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]])
        message = str(err.value)
        assert "RewardModelServer" in message and '"CPU": 64.0' in message, message
        assert "model_server.num_cpus" in message, message
        print(message)
    finally:
        serve.delete(APP)
