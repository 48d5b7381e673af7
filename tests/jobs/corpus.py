"""A mixed-format test corpus with broken lines, and the checks a results store must pass against it.

The reference is the in-process `rmcluster score` (itself checked against the plain HF loop in
tests/rmcluster/test_cli.py), run file by file on the same inputs.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rmcluster.cli import main as rmcluster_main
from rmcluster.store import STORE_SCHEMA, ResultsStore
from tests.conversations import random_conversation, sentence

MAX_LENGTH = 160  # short enough that some generated items are over-length errors
TOL = 1e-4


def _record(rng: random.Random, i: int, parquet: bool = False) -> dict:
    """One record of a random shape; about half carry an id."""
    r = rng.random()
    words = rng.choice([3, 8, 20, 40, 120])  # 120 words is over MAX_LENGTH tokens
    if r < 0.3:
        rec = {"prompt": sentence(rng, rng.randint(2, 12)), "chosen": sentence(rng, words), "rejected": sentence(rng, rng.randint(1, 30))}
    elif r < 0.5:
        rec = {"prompt": sentence(rng, rng.randint(2, 12)), "responses": [sentence(rng, rng.randint(1, 30)) for _ in range(rng.randint(1, 4))]}
    elif r < 0.85:
        rec = {"messages": random_conversation(rng, words)}
    else:
        rec = {"text": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + sentence(rng, rng.randint(1, 20)) + "<|eot_id|>"}
    if not parquet and "prompt" in rec and rng.random() < 0.3:
        rec["prompt"] = [{"role": "system", "content": "be brief\u2028really"}, {"role": "user", "content": rec["prompt"]}]
    if rng.random() < 0.5:
        rec["id"] = f"r{i}"
    return rec


def _bad_schema(rng: random.Random, i: int) -> dict:
    return rng.choice([
        {"id": f"bad{i}", "prompt": "only a prompt"},
        {"id": f"bad{i}", "messages": [{"role": "user"}]},
        {"responses": ["no prompt", i]},
        {"id": f"bad{i}", "prompt": "p", "responses": ["ok", 7]},
    ])


def _jsonl_lines(rng: random.Random, n: int, start: int) -> list[str]:
    lines, previous = [], []
    for i in range(start, start + n):
        r = rng.random()
        if r < 0.03:
            lines.append(rng.choice(['{"id": "cut", "prompt": "x", "chosen"', "not json at all", '{"a": 1}}', "[1, 2"]))
        elif r < 0.06:
            lines.append(json.dumps(_bad_schema(rng, i)))
        elif r < 0.07 and previous:
            lines.append(rng.choice(previous))  # an exact repeat: same derived id, one item in the store
        else:
            line = json.dumps(_record(rng, i), ensure_ascii=rng.random() < 0.5)
            lines.append(line)
            if '"id"' not in line:
                previous.append(line)
        if rng.random() < 0.02:
            lines.append("   ")  # blank lines are skipped, but still counted in line numbers
    return lines


PARQUET_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("prompt", pa.string()),
    ("responses", pa.list_(pa.string())),
    ("chosen", pa.string()),
    ("rejected", pa.string()),
    ("text", pa.string()),
    ("meta", pa.int64()),
])


def write_corpus(root: Path, seed: int = 0, sizes: tuple[int, int, int, int] = (900, 700, 300, 600)) -> Path:
    """JSONL (LF, CRLF and no final newline), a nested directory, Parquet, and files to skip."""
    rng = random.Random(seed)
    a, b, c, p = sizes
    root.mkdir(parents=True)
    (root / "nested").mkdir()
    (root / "part-a.jsonl").write_text("\n".join(_jsonl_lines(rng, a, 0)) + "\n", encoding="utf-8")
    (root / "part-b.json").write_bytes("\r\n".join(_jsonl_lines(rng, b, a)).encode())  # CRLF, no final newline
    (root / "nested" / "part-c.ndjson").write_text("\n".join(_jsonl_lines(rng, c, a + b)) + "\n", encoding="utf-8")
    rows = []
    for i in range(a + b + c, a + b + c + p):
        rec = _record(rng, i, parquet=True)
        rec["meta"] = i
        rows.append(rec)
    pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), root / "part-d.parquet")
    (root / ".hidden.jsonl").write_text("this file is skipped\n")
    (root / "_SUCCESS").write_text("")
    (root / "notes.txt").write_text("not an input format\n")
    return root


def input_files(root: Path) -> list[Path]:
    files = [*root.glob("*.json*"), *root.glob("*.parquet"), *root.glob("nested/*")]
    return sorted(p for p in files if not p.name.startswith((".", "_")))  # the job skips hidden names


def reference_rows(root: Path, out_dir: Path, model: str, extra: tuple[str, ...] = ()) -> dict:
    """(id, index) -> every row `rmcluster score` writes for that key, over all input files."""
    by_key: dict = defaultdict(list)
    for i, path in enumerate(input_files(root)):
        out = out_dir / f"ref-{i}.parquet"
        argv = ["score", "--model", model, "--input", str(path), "--output", str(out),
                "--max-length", str(MAX_LENGTH), "--quiet", *extra]
        assert rmcluster_main(argv) == 0
        for row in pq.read_table(out).to_pylist():
            by_key[(row["id"], row["index"])].append(row)
    return dict(by_key)


def assert_store_matches(store_dir: Path, reference: dict) -> list[dict]:
    """Exactly one row per reference key, nothing else; scores within TOL; same errors and fields."""
    table = ResultsStore(str(store_dir)).read()
    assert table.schema.equals(STORE_SCHEMA)
    rows = table.to_pylist()
    keys = [(r["id"], r["index"]) for r in rows]
    assert len(keys) == len(set(keys)), "a key is stored twice"
    assert set(keys) == set(reference), (
        f"missing {len(set(reference) - set(keys))}, unexpected {len(set(keys) - set(reference))}")
    for row in rows:
        refs = reference[(row["id"], row["index"])]
        ref = refs[0]
        assert row["scored_at"] is not None
        assert (row["label"], row["model"]) == (ref["label"], ref["model"])
        if ref["error"] is None:
            assert row["error"] is None, row["error"]
            assert abs(row["score"] - ref["score"]) <= TOL, (row, ref)
            assert row["logits"] == [pytest_approx(x) for x in ref["logits"]]
            assert (row["num_tokens"], row["truncated"]) == (ref["num_tokens"], ref["truncated"])
        else:
            # Repeated keys (identical lines) differ only in the line number their message names.
            assert row["score"] is None and row["error"] in {r["error"] for r in refs}, (row, ref)
    return rows


def pytest_approx(x: float):
    import pytest

    return pytest.approx(x, abs=TOL)
