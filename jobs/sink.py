"""Writing the job's rows into the results store: one atomically renamed Parquet file per write task."""

from __future__ import annotations

import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink
from ray.data.block import BlockAccessor

from rmcluster.store import ResultsStore


class StoreDatasink(Datasink):
    """Rows -> `DIR/data/part-<run>-<task>-<uuid>.parquet`, each file whole or absent.

    A retried write task may write its rows twice under two names; the job's final
    `ResultsStore.dedupe` removes such repeats.
    """

    def __init__(self, uri: str, run_id: str, rows_per_file: int):
        self.uri = uri
        self.run_id = run_id
        self.rows_per_file = rows_per_file
        self.written: dict = {"files": 0, "rows": 0, "errors": 0, "tokens": 0}

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks: Iterable, ctx) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return {"files": 0, "rows": 0, "errors": 0, "tokens": 0}
        table = pa.concat_tables(tables)
        name = f"part-{self.run_id}-{ctx.task_idx:06d}-{uuid.uuid4().hex[:8]}.parquet"
        ResultsStore(self.uri).write_data(table, name)
        ok = pc.is_null(table["error"])
        return {
            "files": 1,
            "rows": table.num_rows,
            "errors": table.num_rows - (pc.sum(pc.cast(ok, pa.int64())).as_py() or 0),
            "tokens": pc.sum(table.filter(ok)["num_tokens"]).as_py() or 0,
        }

    def on_write_complete(self, write_result) -> None:
        # Runs on the driver: the totals for this run's summary.
        for stats in write_result.write_returns:
            for key, value in stats.items():
                self.written[key] += value
