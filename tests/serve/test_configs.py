"""Every shipped Serve config validates into ServeDeploySchema and ServeArgs, and an unknown key anywhere fails.

Serve silently drops unknown keys, so the check walks the config against the schema models.
"""

import copy
import inspect
from pathlib import Path

import pytest
import yaml

from serve.config_check import config_problems, main
from serve.strict_keys import unknown_keys

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "serve.config.yaml", *sorted((REPO / "serve" / "configs").glob("*.yaml"))]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _mappings(node, path=()):
    """Every mapping in a YAML tree, with its path (lists included)."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _mappings(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _mappings(value, path + (i,))


def _at(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def test_shipped_configs_are_the_expected_ones():
    names = {p.name for p in CONFIGS}
    assert {"serve.config.yaml", "skywork-reward-llama-3.1-8b.yaml", "armorm-llama3-8b.yaml",
            "qwen2.5-math-prm-7b.yaml"} <= names
    assert any(len(_load(p)["applications"]) == 2 for p in CONFIGS), "an A/B config with two applications"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_strictly(path):
    from ray.serve.schema import ServeDeploySchema

    from serve.args import ServeArgs

    data = _load(path)
    ServeDeploySchema.model_validate(data)
    assert config_problems(data) == []
    for app in data["applications"]:
        assert app["import_path"] == "serve.app:build_app"
        ServeArgs.model_validate(app["args"])
    assert main([str(path)]) == 0


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_an_unknown_key_at_any_level_fails(path):
    data = _load(path)
    nodes = list(_mappings(data))
    assert len(nodes) > 8
    for where, _ in nodes:
        mutated = copy.deepcopy(data)
        _at(mutated, where)["upscale_dealy_s"] = 1  # a plausible typo
        assert config_problems(mutated), f"unknown key at {'.'.join(map(str, where)) or '<top>'} went unnoticed"


def test_demo_config_is_cpu_demo_autoscaling_one_to_two():
    app = _load(REPO / "serve.config.yaml")["applications"][0]
    assert app["name"] == "reward" and app["route_prefix"] == "/"
    assert app["args"]["rm"]["model"] == "demo"
    scaling = app["args"]["model_server"]["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 2)
    assert app["args"]["model_server"].get("num_gpus", 0) == 0
    # At max_replicas it must leave a default (1 CPU) trainer actor room on a 2-core machine.
    ingress = app["args"]["ingress"]
    reserved = scaling["max_replicas"] * app["args"]["model_server"]["num_cpus"] + (
        0 if ingress.get("colocated") else ingress["num_cpus"])
    assert reserved + 1 <= 2, f"the demo app reserves {reserved} CPUs"


def test_gpu_config_is_bf16_one_gpu_per_replica_up_to_eight():
    from serve.args import ServeArgs

    args = ServeArgs.model_validate(_load(REPO / "serve/configs/skywork-reward-llama-3.1-8b.yaml")
                                    ["applications"][0]["args"])
    # `auto`: flash_attention_2 where flash-attn is installed; asking for it outright would fail without it.
    assert args.rm.model.dtype == "bfloat16" and args.rm.model.attn_implementation == "auto"
    assert args.model_server.num_gpus == 1
    assert args.model_server.autoscaling_config["max_replicas"] == 8


def test_serve_own_override_sections_are_checked_too():
    from ray.serve.schema import ServeDeploySchema

    data = {"applications": [{"import_path": "x:y", "deployments": [
        {"name": "D", "autoscaling_config": {"min_replica": 1}, "ray_actor_options": {"num_cpu": 1}}]}]}
    ServeDeploySchema.model_validate(data)  # Serve accepts it...
    assert unknown_keys(data, ServeDeploySchema) == [  # ...and would drop both typos
        "applications[0].deployments[0].autoscaling_config.min_replica",
        "applications[0].deployments[0].ray_actor_options.num_cpu",
    ]


def test_builder_takes_the_typed_args():
    from serve.app import build_app
    from serve.args import ServeArgs

    # A string annotation (from __future__ annotations) would make Serve pass a plain dict.
    assert inspect.signature(build_app).parameters["args"].annotation is ServeArgs
