"""Result rows and their Arrow schema: the output of `rmcluster score` and the results store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from .engine import ScoreResult
    from .records import ScoreItem

RESULT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),  # response position in its record; chosen=0, rejected=1
        pa.field("label", pa.string()),  # null | "chosen" | "rejected"
        pa.field("score", pa.float64()),  # logit 0; null on error
        pa.field("logits", pa.list_(pa.float32())),  # all labels
        pa.field("num_tokens", pa.int64()),
        pa.field("truncated", pa.bool_()),
        pa.field("error", pa.string()),  # null, or why this item has no score
        pa.field("model", pa.string()),
    ]
)
RESULT_COLUMNS = RESULT_SCHEMA.names


def result_row(item: "ScoreItem", result: "ScoreResult", model: str) -> dict:
    return {
        "id": item.id,
        "index": item.index,
        "label": item.label,
        "score": result.score,
        "logits": result.logits,
        "num_tokens": result.num_tokens,
        "truncated": result.truncated,
        "error": result.error,
        "model": model,
    }


def error_row(record_id: str, message: str, model: str, index: int = 0, label: Optional[str] = None) -> dict:
    """A row for input that never became a scorable item (invalid JSON, schema error)."""
    return {
        "id": record_id,
        "index": index,
        "label": label,
        "score": None,
        "logits": None,
        "num_tokens": 0,
        "truncated": False,
        "error": message,
        "model": model,
    }


def rows_to_table(rows: Iterable[dict], schema: pa.Schema = RESULT_SCHEMA) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


class AtomicParquetWriter:
    """Writes a Parquet file under a temporary name and renames it on success only.

    A crash or error leaves no file at the final path, never a half-written one.
    """

    def __init__(self, path: str | Path, schema: pa.Schema = RESULT_SCHEMA):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer = pq.ParquetWriter(self._tmp, schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def __enter__(self) -> "AtomicParquetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
