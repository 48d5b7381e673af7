"""The corpus job's map stages, as Ray Data callable classes (state is loaded once, in `__init__`).

    Tokenizer    (CPU actors)  JSON lines -> items -> token ids; bad input -> finished error rows
    Scorer       (GPU actors)  token ids -> scores with the engine's token-budget batching
    ServeScorer  (light actors) JSON lines -> the Serve app's `score_records` -> rows

Tokenizer and ServeScorer drop items whose (id, index) is already in the results store, so a rerun
scores only what is missing. Rows are built by the same helpers as `rmcluster score` (`result_row`, `error_row`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from rmcluster.config import RMConfig
from rmcluster.corpus import parse_jsonl_line
from rmcluster.pipeline import records_to_items
from rmcluster.records import RecordError
from rmcluster.results import RESULT_SCHEMA, error_row, result_row
from rmcluster.store import STORE_SCHEMA, contains, key_digests

# Tokenizer output: result rows (errors already final) plus what the scorer needs of each EncodedItem:
# the ids, and the length of the verified shared-prompt prefix (so best-of-N and pairs reuse it).
ENCODED_COLUMNS = ["input_ids", "prompt_tokens"]
ENCODED_SCHEMA = RESULT_SCHEMA.append(pa.field("input_ids", pa.list_(pa.int32()))).append(
    pa.field("prompt_tokens", pa.int32())
)


def parse_lines(batch: pa.Table) -> list:
    """Rows of `jobs.inputs.LINE_SCHEMA` -> raw records (or RecordError), as `rmcluster score` parses them."""
    lines, sources, linenos = (batch[c].to_pylist() for c in ("line", "source", "lineno"))
    return [parse_jsonl_line(line, f"{src} line {n}") for line, src, n in zip(lines, sources, linenos)]


def _not_done(done: np.ndarray, rows: list[dict]) -> list[dict]:
    if done.size == 0 or not rows:
        return rows
    seen = contains(done, key_digests([r["id"] for r in rows], [r["index"] for r in rows]))
    return [r for r, s in zip(rows, seen) if not s]


def _stamp(rows: list[dict]) -> pa.Table:
    now = datetime.now(timezone.utc)
    for row in rows:
        row["scored_at"] = now
    return pa.Table.from_pylist(rows, schema=STORE_SCHEMA)


class Tokenizer:
    def __init__(self, config: RMConfig, done_keys: np.ndarray):
        from rmcluster.scorers import build_encoder

        self.encoder = build_encoder(config)  # tokenizer and template only, no weights
        self.model = config.model.name
        self.done = done_keys

    def __call__(self, batch: pa.Table) -> pa.Table:
        from rmcluster.engine import ScoreResult
        from rmcluster.scorers import encode_each

        rows: list[dict] = []
        pending = []  # (row, item) still to encode
        for entry in records_to_items(parse_lines(batch)):
            if isinstance(entry, RecordError):
                rows.append(error_row(entry.record_id, str(entry), self.model))
                continue
            for item in entry:
                row = {"id": item.id, "index": item.index, "label": item.label, "model": self.model}
                rows.append(row)
                pending.append((row, item))
        rows = _not_done(self.done, rows)
        keep = {id(r) for r in rows}
        pending = [(row, item) for row, item in pending if id(row) in keep]
        for (row, item), encoded in zip(pending, encode_each(self.encoder, [item for _, item in pending])):
            if isinstance(encoded, Exception):  # as in the engine: the item gets an error row
                row.update(result_row(item, ScoreResult.failed(encoded), self.model))
            else:
                row.update(input_ids=encoded.input_ids, truncated=encoded.truncated, num_tokens=encoded.num_tokens,
                           prompt_tokens=encoded.prompt_tokens)
        return pa.Table.from_pylist(rows, schema=ENCODED_SCHEMA)


class Scorer:
    def __init__(self, config: RMConfig):
        from rmcluster.engine import ScoringEngine

        self.engine = ScoringEngine.from_config(config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from rmcluster.templating import EncodedItem

        rows = batch.drop_columns(ENCODED_COLUMNS).to_pylist()
        ids, prompt_tokens = (batch[c].to_pylist() for c in ENCODED_COLUMNS)
        todo = [i for i, x in enumerate(ids) if x is not None]
        results = self.engine.score_encoded(
            [EncodedItem(ids[i], bool(rows[i]["truncated"]), prompt_tokens[i] or 0) for i in todo]
        )
        for i, res in zip(todo, results):
            rows[i].update(score=res.score, logits=res.logits, num_tokens=res.num_tokens,
                           truncated=res.truncated, error=res.error)
        return _stamp(rows)


class ServeScorer:
    """Scores through a running Serve app's `score_records`, a few requests in flight per batch.

    `HandleRewardClient` retries with backoff when the app is overloaded (BackPressureError, 503).
    """

    def __init__(self, app: str, done_keys: np.ndarray, model: str, requests_in_flight: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        from rmcluster.client import HandleRewardClient

        self.client = HandleRewardClient(app)
        self.pool = ThreadPoolExecutor(requests_in_flight)
        self.requests_in_flight = requests_in_flight
        self.done = done_keys
        self.model = model  # for invalid-JSON rows, which never reach the app

    def __call__(self, batch: pa.Table) -> pa.Table:
        raws = parse_lines(batch)
        rows: list[dict] = []
        send: list[Any] = []
        for raw, entry in zip(raws, records_to_items(raws)):
            if isinstance(raw, RecordError):
                rows.append(error_row(raw.record_id, str(raw), self.model))
                continue
            keys = [(entry.record_id, 0)] if isinstance(entry, RecordError) else [(it.id, it.index) for it in entry]
            if _not_done(self.done, [{"id": i, "index": n} for i, n in keys]):
                send.append(raw)  # schema errors too: the app writes their error rows
        if send:
            n = min(self.requests_in_flight, len(send))
            chunks = [send[i::n] for i in range(n)]  # row order within the store does not matter
            for part in self.pool.map(self.client.score_records, chunks):
                rows.extend(part)
        return _stamp(_not_done(self.done, rows))
