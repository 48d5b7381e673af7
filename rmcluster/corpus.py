"""Reading input files (JSONL or Parquet) as raw records, in order, in chunks.

A line that is not valid JSON becomes a `RecordError` in its place, so it can be written as an
error row instead of being dropped or stopping the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Union

from .records import RecordError, derive_id

Raw = Union[dict[str, Any], Any, RecordError]
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


def input_format(path: str | Path) -> str:
    name = str(path).lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise ValueError(f"{path}: unknown input format (expected .jsonl, .json, .ndjson or .parquet)")


def parse_jsonl_line(line: str | bytes, where: str) -> Raw:
    """One JSONL line -> a raw record, or a RecordError saying where and why."""
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return RecordError(derive_id(line), f"{where}: invalid JSON: {err}")


def iter_records(path: str | Path, chunk_size: int = 4096) -> Iterator[list[Raw]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    if input_format(path) == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
            yield batch.to_pylist()
        return
    chunk: list[Raw] = []
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            chunk.append(parse_jsonl_line(line, f"{path.name} line {lineno}"))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
