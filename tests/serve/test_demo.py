"""`make demo` (python -m serve.demo): serve.config.yaml starts offline on CPU and the seed pair scores over HTTP."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rmcluster.demo_model import SEED_PAIR

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_serves_the_shipped_config_and_scores_the_seed_pair(tmp_path, reference):
    config = yaml.safe_load((REPO / "serve.config.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port  # the shipped config, on a port nobody else uses
    path = tmp_path / "serve.config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray instance
    out = subprocess.run([sys.executable, "-m", "serve.demo", "--config", str(path), "--exit"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    scores = dict(re.findall(r"^\s+(chosen|rejected)\s+score = (-?[0-9.]+)", out.stdout, re.M))
    for label in ("chosen", "rejected"):
        conv = [{"role": "user", "content": SEED_PAIR["prompt"]}, {"role": "assistant", "content": SEED_PAIR[label]}]
        assert abs(float(scores[label]) - reference.score(conv)) < 1e-4
    assert f"endpoint: http://127.0.0.1:{port}" in out.stdout and "meaningless" in out.stdout
