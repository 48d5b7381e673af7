"""Atomic file writes: a file is written under a hidden temporary name and renamed on success only.

Readers (pandas, DuckDB, Polars, pyarrow) skip hidden names, so a crash or an error leaves no file
at the final path, never a half-written one. Local files are fsynced before the rename, so the
final name never points at partial data after a power loss either; on object stores the rename is
a copy of a complete object (a PUT is all-or-nothing).
"""

from __future__ import annotations

import contextlib
import os
from typing import IO, Any, Iterator

import pyarrow.fs as pafs

TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"


def is_temporary(base_name: str) -> bool:
    return base_name.startswith(TMP_PREFIX) and base_name.endswith(TMP_SUFFIX)


@contextlib.contextmanager
def atomic_output(fs: pafs.FileSystem, path: str) -> Iterator[IO[Any]]:
    """A binary file to write `path` through; it appears at `path` only if the block succeeds."""
    parent, _, base = path.rpartition("/")
    tmp = f"{parent}/{TMP_PREFIX}{base}.{os.getpid()}.{os.urandom(4).hex()}{TMP_SUFFIX}"
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            with fs.open_output_stream(tmp) as stream:
                yield stream
            fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError, FileNotFoundError):
            fs.delete_file(tmp)
        raise
