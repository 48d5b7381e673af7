"""`rmcluster score` end to end: mixed formats, broken lines, Parquet in and out, summary."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmcluster.cli import main
from rmcluster.demo_model import SEED_PAIR
from rmcluster.results import RESULT_SCHEMA
from tests.reference import ReferenceLoop

RECORDS = [
    SEED_PAIR,
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]},
    "{this is not json",
    {"id": "bon", "prompt": "pick a number", "responses": ["seven", "twelve", "a large number of apples"]},
    {"id": "tmpl", "text": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"},
    {"id": "half", "prompt": "q"},
    {"id": "long", "messages": [{"role": "user", "content": "apple " * 400}]},
]


def _write_jsonl(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n\n")


def _conversation(item_row, record):
    """The conversation the reference loop scores for a result row."""
    prompt = record["prompt"]
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if "messages" in record:
        return record["messages"]
    response = record[item_row["label"]] if item_row["label"] else record["responses"][item_row["index"]]
    return prompt + [{"role": "assistant", "content": response}]


def test_score_jsonl_writes_every_row_and_matches_reference(tmp_path, demo_dir, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    _write_jsonl(src, RECORDS)
    assert main(["score", "--model", str(demo_dir), "--input", str(src), "--output", str(out),
                 "--max-length", "256", "--quiet"]) == 0
    table = pq.read_table(out)
    assert table.schema.equals(RESULT_SCHEMA)
    rows = table.to_pylist()
    # 2 + 1 + 1 (bad JSON) + 3 + 1 + 1 (schema error) + 1 (over-length)
    assert len(rows) == 10
    assert [r["id"] for r in rows[:2]] == ["jane-apples"] * 2
    assert [(r["index"], r["label"]) for r in rows[:2]] == [(0, "chosen"), (1, "rejected")]
    assert "invalid JSON" in rows[3]["error"] and "line 3" in rows[3]["error"]
    assert [r["index"] for r in rows[4:7]] == [0, 1, 2] and {r["id"] for r in rows[4:7]} == {"bon"}
    assert "responses: Field required" in rows[8]["error"]
    assert "over max_length 256" in rows[9]["error"] and rows[9]["score"] is None
    ref = ReferenceLoop(demo_dir)
    by_id = {r["id"]: r for r in RECORDS if isinstance(r, dict) and "id" in r}
    for row in rows[:2] + rows[4:7]:
        record = by_id[row["id"]]
        assert row["score"] == pytest.approx(ref.score(_conversation(row, record)), abs=1e-4)
        assert row["model"] == str(demo_dir) and row["logits"] == [pytest.approx(row["score"], abs=1e-6)]
    text_ids = ref.tokenizer(RECORDS[4]["text"], add_special_tokens=False)["input_ids"]
    assert rows[7]["score"] == pytest.approx(ref.score_ids(text_ids), abs=1e-4)
    printed = capsys.readouterr().out
    chosen, rejected = rows[0]["score"], rows[1]["score"]
    assert f"pair_accuracy      {float(chosen > rejected):.4g}" in printed
    assert "errors             3" in printed and "tokens_per_s" in printed


def test_score_parquet_input_with_mixed_shapes(tmp_path, demo_dir):
    records = [r for r in RECORDS if isinstance(r, dict) and r.get("id") != "long"]
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("id", pa.string()), ("messages", pa.list_(message)), ("prompt", pa.string()),
                        ("responses", pa.list_(pa.string())), ("chosen", pa.string()), ("rejected", pa.string()),
                        ("text", pa.string())])
    pq.write_table(pa.Table.from_pylist(records, schema=schema), src)  # every column, null where absent
    assert main(["score", "--model", str(demo_dir), "--input", str(src), "--output", str(out), "--quiet"]) == 0
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 2 + 1 + 3 + 1 + 1
    assert sum(r["error"] is not None for r in rows) == 1


def test_packing_and_shared_prompt_flags_keep_scores_and_report_reuse(tmp_path, demo_dir, capsys):
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [r for r in RECORDS if isinstance(r, dict) and r.get("id") != "long"])
    scores, printed = {}, {}
    for mode in ("on", "off"):
        out = tmp_path / f"{mode}.parquet"
        assert main(["score", "--model", str(demo_dir), "--input", str(src), "--output", str(out), "--quiet",
                     "--packing", mode, "--shared-prompt", mode]) == 0
        scores[mode] = [r["score"] for r in pq.read_table(out).to_pylist()]
        printed[mode] = capsys.readouterr().out
    assert scores["on"] == [pytest.approx(s, abs=1e-4) if s is not None else None for s in scores["off"]]
    assert "prompt_tokens_reused" in printed["on"] and "dense_flops_saved" in printed["on"]
    assert "prompt_tokens_reused" not in printed["off"]


def test_missing_input_fails_before_loading_a_model(tmp_path, capsys):
    assert main(["score", "--model", "no/such-model", "--input", str(tmp_path / "nope.jsonl"),
                 "--output", str(tmp_path / "o.parquet")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()


def test_unknown_model_fails_clearly(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [SEED_PAIR])
    assert main(["score", "--model", str(tmp_path / "missing-model"), "--input", str(src),
                 "--output", str(tmp_path / "o.parquet")]) == 2
    assert "cannot load model" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()


def test_console_script_demo_says_scores_are_meaningless():
    out = subprocess.run([sys.executable, "-m", "rmcluster", "demo"], capture_output=True, text=True, check=True)
    assert "chosen" in out.stdout and "rejected" in out.stdout and "meaningless" in out.stdout
