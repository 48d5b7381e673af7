"""Result rows and their Arrow schema: the output of `rmcluster score` and the results store."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .atomic import atomic_output
from .outputs import ScoreResult

if TYPE_CHECKING:
    from .records import ScoreItem

RESULT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),  # response position in its record; chosen=0, rejected=1
        pa.field("label", pa.string()),  # null | "chosen" | "rejected"
        pa.field("subset", pa.string()),  # the record's `subset` / `category`, for evaluation; else null
        pa.field("score", pa.float64()),  # the reward; null on error
        pa.field("logits", pa.list_(pa.float32())),  # sequence classifiers: all labels
        pa.field("values", pa.map_(pa.string(), pa.float64())),  # named outputs: objectives, labels; or null
        pa.field("step_scores", pa.list_(pa.float64())),  # process reward models: one per step; else null
        pa.field("rationale", pa.string()),  # judges that reason first: what they wrote before the verdict
        pa.field("num_tokens", pa.int64()),
        pa.field("truncated", pa.bool_()),
        pa.field("error", pa.string()),  # null, or why this item has no score
        pa.field("model", pa.string()),
    ]
)


def result_row(item: "ScoreItem", result: ScoreResult, model: str) -> dict[str, Any]:
    """The one way a scored (or failed) item becomes a row, on every front end."""
    return _row(item.id, item.index, item.label, result, model, item.subset)


def error_row(record_id: str, message: str, model: str) -> dict[str, Any]:
    """A row for input that never became a scorable item (invalid JSON, schema error)."""
    return _row(record_id, 0, None, ScoreResult.failed(message), model)


def _row(record_id: str, index: int, label: Optional[str], result: ScoreResult, model: str,
         subset: Optional[str] = None) -> dict[str, Any]:
    out = result.output
    return {
        "id": record_id,
        "index": index,
        "label": label,
        "subset": subset,
        "score": result.score,
        "logits": result.logits,
        "values": out.values if out is not None else None,
        "step_scores": out.step_scores if out is not None else None,
        "rationale": out.rationale if out is not None else None,
        "num_tokens": result.num_tokens,
        "truncated": result.truncated,
        "error": result.error,
        "model": model,
    }


def rows_to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=RESULT_SCHEMA)


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of a results table as `result_row` makes them (Arrow gives maps as pairs otherwise)."""
    rows: list[dict[str, Any]] = table.to_pylist(maps_as_pydicts="strict")
    return rows


@contextlib.contextmanager
def parquet_file(path: str | Path) -> Iterator[pq.ParquetWriter]:
    """A Parquet writer whose file appears at `path`, whole, only when the block succeeds."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_output(pafs.LocalFileSystem(), path) as f, pq.ParquetWriter(f, RESULT_SCHEMA) as writer:
        yield writer
