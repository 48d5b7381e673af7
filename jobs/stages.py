"""The corpus job's map stages, as Ray Data callable classes (state is loaded once, in `__init__`).

    EncodeStage      (CPU actors)   JSON lines -> planned records (items + token ids), one row per record
    ScoreStage       (GPU actors)   planned records -> the engine -> result rows
    ServeScoreStage  (light actors) JSON lines -> the Serve app's `score_records` -> result rows

They run `rmcluster.pipeline`'s two steps, `plan_records` and `assemble`, with
`PlannedRecord.to_row`/`from_row` in between, so their rows equal those of `rmcluster score`.
A record travels whole (a pairwise judge's units are combined per record). The encode stages
drop records whose every (id, index) is already in the results store, so a rerun scores only what
is missing; a record stored in part is scored again whole, and the job's final dedupe keeps one
row per key.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from rmcluster.config import RMConfig
from rmcluster.corpus import parse_jsonl_line
from rmcluster.pipeline import PlannedRecord, assemble, encode_planned, expand_records, pending
from rmcluster.records import RecordError
from rmcluster.results import error_row
from rmcluster.store import STORE_SCHEMA, contains, key_digests

_ENCODED_UNIT = pa.struct([("input_ids", pa.list_(pa.int32())), ("truncated", pa.bool_()),
                           ("prompt_tokens", pa.int32()), ("error", pa.string())])
# The encode stage's output: `PlannedRecord.to_row()`.
PLANNED_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("error", pa.string()),
    ("items", pa.list_(pa.struct([("index", pa.int64()), ("label", pa.string()), ("subset", pa.string())]))),
    ("encoded", pa.list_(_ENCODED_UNIT)),
])


def parse_lines(batch: pa.Table) -> list[Any]:
    """Rows of `jobs.inputs.LINE_SCHEMA` -> raw records (or RecordError), as `rmcluster score` parses them."""
    lines, sources, linenos = (batch[c].to_pylist() for c in ("line", "source", "lineno"))
    return [parse_jsonl_line(line, f"{src} line {n}") for line, src, n in zip(lines, sources, linenos)]


def stored(done: np.ndarray, keys: list[tuple[str, int]]) -> bool:
    """Whether every key is already in the results store."""
    if done.size == 0 or not keys:
        return False
    return bool(contains(done, key_digests([k[0] for k in keys], [k[1] for k in keys])).all())


def _stamp(rows: list[dict[str, Any]]) -> pa.Table:
    now = datetime.now(timezone.utc)
    for row in rows:
        row["scored_at"] = now
    return pa.Table.from_pylist(rows, schema=STORE_SCHEMA)


class EncodeStage:
    def __init__(self, config: RMConfig, done_keys: np.ndarray):
        from rmcluster.scorers import build_encoder

        self.encoder = build_encoder(config)  # tokenizer and template only, no weights
        self.done = done_keys

    def __call__(self, batch: pa.Table) -> pa.Table:
        todo = [p for p in expand_records(parse_lines(batch)) if not stored(self.done, p.keys)]
        rows = [p.to_row() for p in encode_planned(self.encoder, todo)]
        return pa.Table.from_pylist(rows, schema=PLANNED_SCHEMA)


class ScoreStage:
    def __init__(self, config: RMConfig):
        from rmcluster.engine import ScoringEngine

        self.engine = ScoringEngine.from_config(config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        planned = [PlannedRecord.from_row(row) for row in batch.to_pylist()]
        results = self.engine.score_encoded(pending(planned))
        return _stamp(assemble(self.engine.encoder, planned, results, self.engine.model_name))


class ServeScoreStage:
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
        rows: list[dict[str, Any]] = []
        send: list[Any] = []
        for raw, planned in zip(raws, expand_records(raws)):
            if stored(self.done, planned.keys):
                continue
            if isinstance(raw, RecordError):
                rows.append(error_row(raw.record_id, str(raw), self.model))
            else:
                send.append(raw)  # schema errors too: the app writes their error rows
        if send:
            n = min(self.requests_in_flight, len(send))
            chunks = [send[i::n] for i in range(n)]  # row order within the store does not matter
            for part in self.pool.map(self.client.score_records, chunks):
                rows.extend(part)
        return _stamp(rows)
