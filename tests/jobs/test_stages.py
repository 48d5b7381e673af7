"""The job's map stages called directly (no Ray): tokenizer output carries everything the scorer needs."""

import json

import numpy as np
import pyarrow as pa
import pytest

from jobs.inputs import LINE_SCHEMA
from jobs.stages import Scorer, Tokenizer
from rmcluster.config import RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.pipeline import score_records

RECORDS = [
    {"id": "bon", "prompt": "pick a number between one and ten", "responses": ["seven", "three", "ten apples"]},
    {"id": "pair", "prompt": "2+2?", "chosen": "4", "rejected": "5"},
    {"id": "chat", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
]


def _lines(records):
    return pa.Table.from_pylist(
        [{"line": json.dumps(r).encode(), "source": "in.jsonl", "lineno": i + 1} for i, r in enumerate(records)],
        schema=LINE_SCHEMA,
    )


def test_shared_prompt_prefix_travels_from_tokenizer_to_scorer(demo_dir):
    config = RMConfig(model={"name": str(demo_dir)})
    encoded = Tokenizer(config, np.empty(0, dtype="S16"))(_lines(RECORDS))
    prompt_tokens = encoded["prompt_tokens"].to_pylist()
    # Every response of the best-of-N and pair records has a verified prompt prefix; a one-turn chat does too.
    assert all(p and p > 0 for p in prompt_tokens[:5])

    scorer = Scorer(config)
    seen = []
    real = scorer.engine.score_encoded
    scorer.engine.score_encoded = lambda items, *a, **k: seen.extend(items) or real(items, *a, **k)
    rows = scorer(encoded).to_pylist()
    assert [e.prompt_tokens for e in seen] == prompt_tokens

    expected = score_records(ScoringEngine.from_config(config), RECORDS)
    assert [(r["id"], r["index"]) for r in rows] == [(r["id"], r["index"]) for r in expected]
    for got, want in zip(rows, expected):
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)
