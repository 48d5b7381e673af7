"""The job's map stages called directly (no Ray): planned records carry everything the score stage needs."""

import json

import numpy as np
import pyarrow as pa

from jobs.inputs import LINE_SCHEMA
from jobs.stages import PLANNED_SCHEMA, EncodeStage, ScoreStage
from rmcluster.config import RMConfig
from rmcluster.demo_kinds import demo_checkpoint_path
from rmcluster.engine import ScoringEngine
from rmcluster.pipeline import score_records
from rmcluster.store import key_digests

RECORDS = [
    {"id": "bon", "prompt": "pick a number between one and ten", "responses": ["seven", "three", "ten apples"]},
    {"id": "pair", "prompt": "2+2?", "chosen": "4", "rejected": "5"},
    {"id": "chat", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"id": "bad", "prompt": "no responses"},
]


def _lines(records):
    return pa.Table.from_pylist(
        [{"line": json.dumps(r).encode(), "source": "in.jsonl", "lineno": i + 1} for i, r in enumerate(records)],
        schema=LINE_SCHEMA,
    )


def test_response_boundary_travels_from_encode_to_score_stage():
    """DPO scores the tokens after the prompt: the encode stage's verified prompt length must reach it."""
    config = RMConfig(model={"kind": "dpo", "name": str(demo_checkpoint_path("causal_lm"))})
    planned = EncodeStage(config, np.empty(0, dtype="S16"))(_lines(RECORDS))
    assert planned.schema.equals(PLANNED_SCHEMA) and planned.num_rows == len(RECORDS)  # one row per record
    prompt_tokens = [u["prompt_tokens"] for units in planned["encoded"].to_pylist() for u in units]
    # Every response of the best-of-N and pair records has a verified prompt prefix; a one-turn chat does too.
    assert len(prompt_tokens) == 6 and all(p > 0 for p in prompt_tokens)

    stage = ScoreStage(config)
    seen = []
    real = stage.engine.score_encoded
    stage.engine.score_encoded = lambda items, *a, **k: seen.extend(items) or real(items, *a, **k)
    rows = stage(planned).drop_columns(["scored_at"]).to_pylist()
    assert [e.prompt_tokens for e in seen] == prompt_tokens

    expected = score_records(ScoringEngine.from_config(config), RECORDS)
    for row in rows:  # a Parquet map reads back as (key, value) pairs
        row["values"] = dict(row["values"]) if row["values"] is not None else None
    assert rows == expected  # the same rows, error row included, as rmcluster score makes them


def test_encode_stage_skips_records_already_stored(demo_dir):
    config = RMConfig(model={"name": str(demo_dir)})
    done = np.unique(key_digests(["pair", "pair", "bon"], [0, 1, 0]))  # the pair whole, the best-of-N in part
    planned = EncodeStage(config, done)(_lines(RECORDS))
    assert planned["id"].to_pylist() == ["bon", "chat", "bad"]  # a partly stored record is scored again whole
