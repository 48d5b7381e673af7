"""Shared fixtures: demo models built into a per-session cache, and one small local Ray cluster."""

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Before anything imports rmcluster or ray: hermetic cache, no hub, no telemetry, and Ray workers
# that can import the repo's top-level packages (serve/, jobs/).
os.environ.setdefault("RMCLUSTER_CACHE_DIR", tempfile.mkdtemp(prefix="rmcluster-test-cache-"))
# Remote-code checkpoints' modules are copied here on load; keep them out of the user's HF cache.
os.environ.setdefault("HF_MODULES_CACHE", os.path.join(os.environ["RMCLUSTER_CACHE_DIR"], "hf-modules"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    from rmcluster.demo_model import demo_model_path

    return demo_model_path()


@pytest.fixture(scope="session")
def pad_demo_dir() -> Path:
    """A Skywork-style variant: the tokenizer has a real pad token appended to the vocabulary."""
    from rmcluster.demo_model import DemoModelSpec, demo_model_path

    return demo_model_path(DemoModelSpec(pad_token=True, seed=1))


@pytest.fixture(scope="session")
def ray_cluster():
    """One small local Ray cluster for the whole session."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_cluster):
    """One Serve instance on the session cluster, shared by every test that deploys an app."""
    from ray import serve

    from tests.ports import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
