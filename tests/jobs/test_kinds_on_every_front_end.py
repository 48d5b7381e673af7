"""The custom-classifier and process-reward kinds on every front end: `rmcluster score`, Serve (HTTP and
handle) and the corpus job, against each checkpoint's own documented loop (1e-4, float32)."""

from __future__ import annotations

import json
import random

import httpx
import pyarrow.parquet as pq
import pytest

from rmcluster.cli import main as cli
from rmcluster.demo_kinds import demo_checkpoint_path
from rmcluster.results import table_rows
from rmcluster.store import ResultsStore
from tests.jobs.conftest import run_job
from tests.kinds import mixed_records, steps_records
from tests.reference_kinds import armo_reference, qwen_prm_reference

pytestmark = pytest.mark.ray

TOL = 1e-4
ARMO = {"kind": "custom_classifier", "name": "demo", "trust_remote_code": True}  # 'demo' of each kind
PRM = {"kind": "process_reward", "name": "demo", "trust_remote_code": True}
FLAGS = {"armo": ["--kind", "custom_classifier", "--model", "demo", "--trust-remote-code"],
         "prm": ["--kind", "process_reward", "--model", "demo", "--trust-remote-code"]}


def _armo_expected(records):
    path = demo_checkpoint_path("armo")
    return [armo_reference(path, c) for _, convs in records for c in convs]


def _prm_expected(records):
    path = demo_checkpoint_path("qwen_prm")
    return [qwen_prm_reference(path, p, s) for _, chains in records for p, s in chains]


def _check_armo(rows, expected):
    assert len(rows) == len(expected)
    for row, (score, rewards, _) in zip(rows, expected):
        assert row["error"] is None and abs(row["score"] - score) < TOL, row
        assert list(row["values"]) == [f"objective_{i}" for i in range(len(rewards))]
        assert max(abs(a - b) for a, b in zip(row["values"].values(), rewards)) < TOL


def _check_prm(rows, expected):
    assert len(rows) == len(expected)
    for row, steps in zip(rows, expected):
        assert row["error"] is None, row
        assert max(abs(a - b) for a, b in zip(row["step_scores"], steps)) < TOL and len(row["step_scores"]) == len(steps)
        assert abs(row["score"] - min(steps)) < TOL


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    armo, prm = mixed_records(100, seed=21, max_words=200), steps_records(90, seed=22)
    random.Random(0).shuffle(armo)
    for name, records in (("armo", armo), ("prm", prm)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r, _ in records))
    return root, {"armo": armo, "prm": prm}


@pytest.fixture(scope="module")
def apps(serve_url):
    from ray import serve

    from serve.app import build_app
    from serve.args import ServeArgs

    small = {"model_server": {"num_cpus": 0.25, "num_replicas": 1}, "ingress": {"num_cpus": 0.1, "num_replicas": 1}}
    handles = {}
    for name, model in (("armo", ARMO), ("prm", PRM)):
        args = ServeArgs.model_validate({"rm": {"model": model}, **small})
        handles[name] = serve.run(build_app(args), name=f"kinds-{name}", route_prefix=f"/kinds-{name}")
    yield serve_url, handles
    for name in handles:
        serve.delete(f"kinds-{name}")


@pytest.mark.parametrize("name", ["armo", "prm"])
def test_cli(name, corpora, tmp_path):
    root, records = corpora
    out = tmp_path / "out.parquet"
    assert cli(["score", *FLAGS[name], "--input", str(root / f"{name}.jsonl"), "--output", str(out), "--quiet"]) == 0
    rows = table_rows(pq.read_table(out))
    if name == "armo":
        _check_armo(rows, _armo_expected(records[name]))
    else:
        _check_prm(rows, _prm_expected(records[name]))


def test_serve_http_names_the_values_and_steps(apps, corpora):
    url, _ = apps
    _, records = corpora
    pairs = [r for r, _ in records["armo"] if "chosen" in r]
    body = httpx.post(f"{url}/kinds-armo/v1/score", json={"pairs": pairs}, timeout=120).json()
    expected = _armo_expected([(r, c) for r, c in records["armo"] if "chosen" in r])
    _check_armo([{"error": None, **item} for item in body["results"]], expected)
    assert body["scores"] == [item["score"] for item in body["results"]]

    chains = [(r, c) for r, c in records["prm"] if "steps" in r]
    body = httpx.post(f"{url}/kinds-prm/v1/score", json={"groups": [
        {"prompt": r["prompt"], "responses": [r["steps"]]} for r, _ in chains]}, timeout=120).json()
    _check_prm([{"error": None, **item} for item in body["results"]], _prm_expected(chains))


def test_serve_handle_rows(apps, corpora):
    _, handles = apps
    _, records = corpora
    _check_armo(handles["armo"].score_records.remote([r for r, _ in records["armo"]]).result(),
                _armo_expected(records["armo"]))
    _check_prm(handles["prm"].score_records.remote([r for r, _ in records["prm"]]).result(),
               _prm_expected(records["prm"]))
    pairs = [r for r, _ in records["prm"] if "chosen" in r][:5]
    got = handles["prm"].score_pairs.remote(pairs).result()
    want = _prm_expected([(r, c) for r, c in records["prm"] if "chosen" in r][:5])
    assert [len(g) for g in got] == [2] * len(pairs)
    assert max(abs(s - min(w)) for s, w in zip((s for g in got for s in g), want)) < TOL


@pytest.mark.parametrize("name", ["armo", "prm"])
def test_corpus_job_stores_values_and_step_scores(name, corpora, ray_cluster, tmp_path):
    root, records = corpora
    store = tmp_path / "store"
    rc, printed = run_job(["--input", str(root / f"{name}.jsonl"), "--output", str(store), *FLAGS[name]])
    assert rc == 0
    rows = {(r["id"], r["index"]): r for r in table_rows(ResultsStore(str(store)).read())}
    keys = [(rec["id"], i) for rec, items in records[name] for i in range(len(items))]
    ordered = [rows[k] for k in keys]
    summary = json.loads((store / "summary.json").read_text())
    report = (store / "report.html").read_text()
    if name == "armo":
        _check_armo(ordered, _armo_expected(records[name]))
        assert set(summary["values_mean"]) == {f"objective_{i}" for i in range(5)} and "values_mean" in report
    else:
        _check_prm(ordered, _prm_expected(records[name]))
        assert summary["step_scores"]["steps"] == sum(len(r["step_scores"]) for r in ordered)
        assert "Step scores" in report and "step_scores" in printed
