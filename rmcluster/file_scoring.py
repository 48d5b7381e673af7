"""Score one input file in-process, chunk by chunk, handing each chunk's rows to a writer.

`rmcluster score` writes them to one Parquet file and `rmcluster eval` into a results store; both
score through `pipeline.score_records`, so their rows are the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from .outputs import BatchStats
from .pipeline import Engine, score_records
from .results import RESULT_SCHEMA, rows_to_table
from .summary import SUMMARY_COLUMNS


@dataclass
class FileRun:
    """What scoring a file did: its rows (the columns a summary reads) and the run's figures."""

    tables: list[pa.Table] = field(default_factory=list)
    chunks: int = 0
    rows: int = 0
    tokens: int = 0
    reused_tokens: int = 0  # shared prompts: prefix tokens computed once for several items
    wall_seconds: float = 0.0

    def table(self) -> pa.Table:
        return pa.concat_tables(self.tables) if self.tables else RESULT_SCHEMA.empty_table().select(SUMMARY_COLUMNS)


def score_file(engine: Engine, path: str | Path, chunk_size: int, quiet: bool,
               write: Callable[[pa.Table], None]) -> FileRun:
    from tqdm import tqdm

    from .corpus import iter_records

    run = FileRun()
    start = time.perf_counter()

    def on_batch(stats: BatchStats) -> None:
        bar.update(stats.items)
        run.reused_tokens += stats.reused_tokens

    with tqdm(desc="scoring", unit="item", disable=quiet) as bar:
        for chunk in iter_records(path, chunk_size):
            before = bar.n
            table = rows_to_table(score_records(engine, chunk, on_batch=on_batch))
            bar.update(max(0, table.num_rows - (bar.n - before)))  # rows that never reached a batch: errors
            write(table)
            run.chunks += 1
            run.rows += table.num_rows
            run.tokens += pc.sum(table.filter(pc.is_null(table["error"]))["num_tokens"]).as_py() or 0
            run.tables.append(table.select(SUMMARY_COLUMNS))
    run.wall_seconds = time.perf_counter() - start
    return run
