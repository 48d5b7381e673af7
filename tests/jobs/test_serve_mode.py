"""--serve-app: the job scores through the real rmcluster Serve app and gives the actor pool's results."""

from __future__ import annotations

import json

import pytest

from rmcluster.store import ResultsStore
from tests.jobs.conftest import run_job
from tests.jobs.corpus import MAX_LENGTH, TOL, assert_store_matches

pytestmark = pytest.mark.ray

APP = "reward-jobs-test"


@pytest.fixture(scope="module", params=["separate", "colocated"])
def reward_app(request, serve_url, demo_dir):
    """The real app (serve/app.py) serving the demo model under the name the job's --model uses: with a separate
    ingress, and colocated (the model replicas answer handle calls themselves, as serve.config.yaml ships)."""
    from ray import serve

    from serve.app import build_app
    from serve.args import ServeArgs

    ingress = {"colocated": True} if request.param == "colocated" else {"num_cpus": 0.1, "num_replicas": 1}
    args = ServeArgs.model_validate({
        "rm": {"model": str(demo_dir), "tokenization": {"max_length": MAX_LENGTH}},
        "model_server": {"num_cpus": 0.5, "num_replicas": 1},
        "ingress": ingress,
    })
    serve.run(build_app(args), name=APP, route_prefix="/jobs-test")
    yield APP
    serve.delete(APP)


def test_serve_app_mode_equals_actor_pool_mode(reward_app, scored, reference, job_args, tmp_path):
    out = tmp_path / "store"
    rc, printed = run_job([*job_args, "--output", str(out), "--serve-app", reward_app, "--serve-requests", "4"])
    assert rc == 0 and "pair_accuracy" in printed
    served = {(r["id"], r["index"]): r for r in assert_store_matches(out, reference)}
    pooled = {(r["id"], r["index"]): r for r in ResultsStore(str(scored[2])).read().to_pylist()}
    assert served.keys() == pooled.keys()
    for key, row in served.items():
        other = pooled[key]
        assert (row["error"] is None) == (other["error"] is None), (row, other)
        if row["error"] is None:
            assert abs(row["score"] - other["score"]) <= TOL
            assert (row["num_tokens"], row["label"], row["model"]) == (other["num_tokens"], other["label"], other["model"])

    rc, _ = run_job([*job_args, "--output", str(out), "--serve-app", reward_app])  # resume: nothing left
    assert rc == 0 and json.loads((out / "summary.json").read_text())["run"]["rows_written"] == 0


def test_unknown_serve_app_fails_before_scoring(ray_cluster, job_args, tmp_path, capsys):
    rc, _ = run_job([*job_args, "--output", str(tmp_path / "store"), "--serve-app", "no-such-app"])
    assert rc == 2 and "Serve app 'no-such-app' is not usable" in capsys.readouterr().err
    assert not ResultsStore(str(tmp_path / "store")).data_files()
