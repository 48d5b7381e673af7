"""The results store: a directory holding a Parquet dataset of result rows, `summary.json` and `report.html`.

    DIR/data/part-*.parquet   result rows (RESULT_SCHEMA + scored_at), any number of files
    DIR/summary.json          written when a job finishes
    DIR/report.html           histograms, written when a job finishes

A row's key is `(id, index)`. Each data file is written under a hidden temporary name and renamed
into place, so a file either counts whole or not at all; readers (pandas, DuckDB, Polars, pyarrow)
skip the hidden names. `done_keys` is what a resumed job skips, and `dedupe` restores "exactly one
row per key" when a key was written twice (the input repeats it, or a write task was retried).
Works on local paths and on s3:// or gs:// through pyarrow filesystems; no Ray here.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .atomic import atomic_output, is_temporary
from .results import RESULT_SCHEMA

# Files are read by name against this schema, so a column added since (`subset`) reads as null in older files.
STORE_SCHEMA = RESULT_SCHEMA.append(pa.field("scored_at", pa.timestamp("us", tz="UTC")))
DATA_DIR = "data"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
KEY_DTYPE = "S16"  # 128-bit digest of (id, index)


def resolve_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """A local path (relative is fine) or a URI such as s3://bucket/key -> (filesystem, path)."""
    if "://" not in str(uri):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(str(uri)))
    fs, path = pafs.FileSystem.from_uri(str(uri))
    return fs, str(path)


def key_digests(ids: Iterable[str], indexes: Iterable[int]) -> np.ndarray:
    """One fixed-width digest per (id, index), comparable and sortable in numpy."""
    digests = [
        hashlib.blake2b(f"{i}\x00{n}".encode(), digest_size=16).digest() for i, n in zip(ids, indexes)
    ]
    return np.frombuffer(b"".join(digests), dtype=KEY_DTYPE) if digests else np.empty(0, KEY_DTYPE)


def contains(sorted_keys: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """Mask: which digests are in `sorted_keys` (sorted, unique)."""
    if sorted_keys.size == 0 or digests.size == 0:
        return np.zeros(digests.size, dtype=bool)
    pos = np.searchsorted(sorted_keys, digests)
    pos[pos == sorted_keys.size] = 0
    found: np.ndarray = sorted_keys[pos] == digests
    return found


class ResultsStore:
    def __init__(self, uri: str):
        self.uri = str(uri)
        self.fs, self.root = resolve_uri(uri)
        self.data_path = self._path(DATA_DIR)

    def _path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    # -- files -----------------------------------------------------------------------------------
    def _list(self) -> list[pafs.FileInfo]:
        info = self.fs.get_file_info(self.data_path)
        if info.type == pafs.FileType.NotFound:
            return []
        return list(self.fs.get_file_info(pafs.FileSelector(self.data_path, recursive=False)))

    def data_files(self) -> list[str]:
        """Committed data files, oldest run first (names start with the run's UTC time)."""
        return sorted(
            f.path for f in self._list()
            if f.type == pafs.FileType.File and f.base_name.endswith(".parquet") and not f.base_name.startswith((".", "_"))
        )

    def remove_temp_files(self) -> int:
        """Delete temporaries that a killed writer left behind (they never counted)."""
        stale = [f.path for f in self._list() if is_temporary(f.base_name)]
        for path in stale:
            self.fs.delete_file(path)
        return len(stale)

    def write_data(self, table: pa.Table, name: str) -> str:
        path = f"{self.data_path}/{name}"
        self.fs.create_dir(self.data_path, recursive=True)
        with atomic_output(self.fs, path) as f:
            pq.write_table(table.cast(STORE_SCHEMA), f)
        return path

    def write_text(self, name: str, text: str) -> None:
        self.fs.create_dir(self.root, recursive=True)
        with atomic_output(self.fs, self._path(name)) as f:
            f.write(text.encode())

    def read_text(self, name: str) -> Optional[str]:
        path = self._path(name)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return str(f.read().decode())

    def summary(self) -> Optional[dict[str, Any]]:
        text = self.read_text(SUMMARY_FILE)
        return json.loads(text) if text is not None else None

    # -- rows ------------------------------------------------------------------------------------
    def read(self, columns: Optional[Sequence[str]] = None) -> pa.Table:
        files = self.data_files()
        if not files:
            schema = STORE_SCHEMA if columns is None else pa.schema([STORE_SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        return pa.concat_tables(
            pq.read_table(f, columns=list(columns) if columns else None, filesystem=self.fs, schema=STORE_SCHEMA)
            for f in files
        )

    def models(self) -> set[str]:
        """The model names the store's rows were scored with."""
        return {m for path in self.data_files()
                for m in pq.read_table(path, columns=["model"], filesystem=self.fs)["model"].unique().to_pylist()}

    def _file_keys(self) -> list[tuple[str, np.ndarray]]:
        out = []
        for path in self.data_files():
            t = pq.read_table(path, columns=["id", "index"], filesystem=self.fs)
            out.append((path, key_digests(t["id"].to_pylist(), t["index"].to_pylist())))
        return out

    def done_keys(self) -> np.ndarray:
        """Sorted unique digests of every key already in the store."""
        keys = [k for _, k in self._file_keys()]
        return np.unique(np.concatenate(keys)) if keys else np.empty(0, KEY_DTYPE)

    def dedupe(self) -> int:
        """Keep the first row of each key (files in name order) and rewrite files that repeat one.

        Each rewrite is atomic and removes only rows whose key survives elsewhere, so a crash in
        here loses nothing, and running it again finishes the job.
        """
        per_file = self._file_keys()
        if not per_file:
            return 0
        all_keys = np.concatenate([k for _, k in per_file])
        _, first = np.unique(all_keys, return_index=True)
        if first.size == all_keys.size:
            return 0
        keep = np.zeros(all_keys.size, dtype=bool)
        keep[first] = True
        start = 0
        for path, keys in per_file:
            mask = keep[start : start + keys.size]
            start += keys.size
            if mask.all():
                continue
            if not mask.any():
                self.fs.delete_file(path)
                continue
            table = pq.read_table(path, filesystem=self.fs, schema=STORE_SCHEMA).filter(pa.array(mask))
            with atomic_output(self.fs, path) as f:
                pq.write_table(table, f)
        return int(all_keys.size - first.size)
