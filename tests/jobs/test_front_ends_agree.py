"""The three front ends make the same rows: `rmcluster score`, the Serve app and the corpus job.

Rows must be byte-identical except `scored_at`. Float sums depend on the shape of a forward pass,
so every path runs one item per forward (`max_batch_size: 1`). They also depend on the number of
torch threads: torch's single-query attention (the last layer's read row) splits its keys across
threads, and on an AMD VM 1 against 2 threads moved half the engine's scores by up to 1.4e-6. So
every path runs one thread, as the job's scoring actor ships (`--actor-cpus 1`). What differs
between the paths is then only how rows are made, which is what this checks. Scores under real
batching are checked against the HF loop elsewhere (within 1e-4).
"""

from __future__ import annotations

import contextlib
import json
import random

import pyarrow.parquet as pq
import pytest
import torch

from rmcluster.cli import main as rmcluster_main
from rmcluster.results import table_rows
from rmcluster.store import ResultsStore
from tests.jobs.conftest import run_job
from tests.conversations import varied_conversations
from tests.jobs.corpus import MAX_LENGTH, _jsonl_lines

pytestmark = pytest.mark.ray

APP = "reward-front-ends"
ONE_PER_FORWARD = ["--max-batch-size", "1", "--max-length", str(MAX_LENGTH)]
THREADS = 1  # the job's scoring actor: torch threads = its num_cpus (`--actor-cpus`, 1 as shipped)


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _key(row):
    return row["id"], row["index"]


@pytest.fixture(scope="module")
def hf_loop(demo_dir):
    from tests.reference import ReferenceLoop

    return ReferenceLoop(demo_dir)


@pytest.fixture(scope="module")
def token_id_convs(hf_loop):
    """Chats sent as token ids (already templated), one record each, scored against the reference loop."""
    convs = [c for c in varied_conversations(40, seed=71, max_words=200) if hf_loop.ids(c).shape[-1] <= MAX_LENGTH]
    assert len(convs) >= 4
    return convs[:4]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, hf_loop, token_id_convs):
    path = tmp_path_factory.mktemp("front-ends") / "mixed.jsonl"
    lines = _jsonl_lines(random.Random(7), 120, 0)
    lines[3] = '{"id": "cut", "prompt": "x", "chosen"'  # at least one broken line, whatever the seed gives
    lines += [json.dumps({"id": f"ids{k}", "input_ids": hf_loop.ids(c)[0].tolist()})
              for k, c in enumerate(token_id_convs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cli_rows(corpus, demo_dir, tmp_path_factory, hf_loop, token_id_convs):
    out = tmp_path_factory.mktemp("cli") / "out.parquet"
    with _torch_threads(THREADS):
        assert rmcluster_main(["score", "--model", str(demo_dir), "--input", str(corpus), "--output", str(out),
                               "--quiet", *ONE_PER_FORWARD]) == 0
    rows = table_rows(pq.read_table(out))
    assert any("invalid JSON" in (r["error"] or "") for r in rows)
    assert any("Field required" in (r["error"] or "") for r in rows) and any(r["error"] is None for r in rows)
    by_id = {r["id"]: r for r in rows}
    for k, conv in enumerate(token_id_convs):  # token-id records score as their chats do in the HF loop
        assert abs(by_id[f"ids{k}"]["score"] - hf_loop.score(conv)) < 1e-4
    return rows


@pytest.fixture(scope="module")
def app(serve_url, demo_dir):
    from ray import serve

    from serve.app import build_app
    from serve.args import ServeArgs

    args = ServeArgs.model_validate({
        "rm": {"model": str(demo_dir), "tokenization": {"max_length": MAX_LENGTH}, "batching": {"max_batch_size": 1}},
        "model_server": {"num_cpus": 0.25, "num_replicas": 1, "torch_threads": THREADS},
        "ingress": {"num_cpus": 0.1, "num_replicas": 1},
    })
    yield serve.run(build_app(args), name=APP, route_prefix="/front-ends")
    serve.delete(APP)


def test_serve_handle_rows_equal_the_cli_rows(app, corpus, cli_rows):
    records = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # invalid JSON never reaches an HTTP or handle API: its wire format is JSON
    rows = app.score_records.remote(records).result()
    by_key = {}
    for row in cli_rows:
        by_key.setdefault(_key(row), row)
    assert len(rows) > 100
    for row in rows:
        assert row == by_key[_key(row)]


@pytest.mark.parametrize("mode", ["actors", "serve-app"])
def test_job_rows_equal_the_cli_rows(mode, app, corpus, demo_dir, cli_rows, tmp_path):
    argv = ["--input", str(corpus), "--output", str(tmp_path / "store"), "--model", str(demo_dir), *ONE_PER_FORWARD,
            "--actor-cpus", str(THREADS)]
    rc, _ = run_job(argv + (["--serve-app", APP] if mode == "serve-app" else []))
    assert rc == 0
    stored = sorted(table_rows(ResultsStore(str(tmp_path / "store")).read().drop_columns(["scored_at"])), key=_key)
    first = {}
    for row in cli_rows:  # repeated lines: the store keeps one row per key, as the CLI's first
        first.setdefault(_key(row), row)
    expected = sorted(first.values(), key=_key)
    assert len(stored) == len(expected)
    for got, want in zip(stored, expected):
        if got["error"] is not None and "line " in got["error"]:  # a repeated broken line names its own line
            got, want = {**got, "error": None}, {**want, "error": None}
        assert got == want
