"""ServeArgs: contains the shared RMConfig, adds serving settings only, and refuses inconsistent GPU placement."""

import pytest
from pydantic import ValidationError

from rmcluster.config import RMConfig
from serve.args import BatchTuning, ServeArgs


def test_contains_rm_config_with_its_defaults():
    args = ServeArgs.model_validate({"rm": {"model": "demo"}})
    assert isinstance(args.rm, RMConfig) and args.rm == RMConfig(model="demo")
    tuning = args.batch_tuning()
    assert isinstance(tuning, BatchTuning) and tuning.batching == RMConfig().batching  # no second default
    assert tuning.batch_wait_timeout_s == args.model_server.batch_wait_timeout_s
    assert tuning.max_call_tokens is None  # unset: the model server derives it from the engine
    assert ServeArgs.model_validate({"model_server": {"max_call_tokens": 9000}}).batch_tuning().max_call_tokens == 9000
    with pytest.raises(ValidationError):  # a user_config must say both
        BatchTuning.model_validate({"batching": {}})


def test_unknown_keys_are_errors_at_every_level():
    for bad in ({"rmm": {}}, {"rm": {"batching": {"max_batch_token": 1}}}, {"model_server": {"num_cpu": 1}},
                {"model_server": {"autoscaling_config": {"max_replica": 2}}}, {"ingress": {"max_body": 1}}):
        with pytest.raises(ValidationError):
            ServeArgs.model_validate(bad)


def test_replicas_fixed_or_autoscaled_not_both():
    with pytest.raises(ValidationError, match="not both"):
        ServeArgs.model_validate({"model_server": {"num_replicas": 2, "autoscaling_config": {"max_replicas": 3}}})
    options = ServeArgs.model_validate({"model_server": {"autoscaling_config": {"max_replicas": 3}}}
                                       ).model_server.deployment_options()
    assert options["autoscaling_config"] == {"max_replicas": 3} and "num_replicas" not in options
    assert ServeArgs().model_server.deployment_options()["num_replicas"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        ({"rm": {"model": {"device_map": "auto"}}}, "num_gpus >= 1"),
        ({"model_server": {"num_gpus": 2}}, "device_map: auto"),
        ({"rm": {"model": {"device": "cuda"}}}, "num_gpus is 0"),
    ],
)
def test_gpu_placement_must_match_the_model(args, message):
    with pytest.raises(ValidationError, match=message):
        ServeArgs.model_validate(args)


def test_multi_gpu_replica_with_device_map():
    args = ServeArgs.model_validate({"rm": {"model": {"name": "x", "device_map": "auto"}},
                                     "model_server": {"num_gpus": 4}})
    assert args.model_server.deployment_options()["ray_actor_options"]["num_gpus"] == 4


def test_backpressure_options_reach_the_deployment():
    options = ServeArgs.model_validate({"model_server": {"max_queued_requests": 8, "retry_after_s": 3}}
                                       ).model_server.deployment_options()
    assert options["max_queued_requests"] == 8
    assert options["backpressure_config"].status_code == 503 and options["backpressure_config"].retry_after_s == 3


def test_colocated_ingress_refuses_deployment_keys_it_would_ignore():
    args = ServeArgs.model_validate({"ingress": {"colocated": True, "max_body_bytes": 1024, "request_timeout_s": 5}})
    assert args.ingress.colocated and args.ingress.max_body_bytes == 1024  # request settings still apply
    for key, value in (("num_cpus", 0.25), ("num_replicas", 1), ("max_queued_requests", 8), ("chunk_items", 4)):
        with pytest.raises(ValidationError, match=f"colocated: true .* {key}"):
            ServeArgs.model_validate({"ingress": {"colocated": True, key: value}})
        ServeArgs.model_validate({"ingress": {key: value}})  # fine with a separate ingress
