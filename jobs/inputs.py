"""Input files for the corpus job: path expansion (file, directory, glob) and a line-exact reader.

Each JSONL line (or Parquet row, as JSON) becomes one row `{line, source, lineno}` and is parsed
later, per line, in a map stage. Arrow's JSON reader would fail a whole file on one bad line and
needs one schema for every record shape, and Ray's text reader splits on Unicode line breaks
(U+2028 is legal inside a JSON string); reading bytes and splitting on b"\\n" keeps each line
exactly as `rmcluster score` sees it, so derived ids and error messages match.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data.datasource import FileBasedDatasource

from rmcluster.corpus import JSONL_SUFFIXES, input_format
from rmcluster.store import resolve_uri

LINE_SCHEMA = pa.schema([("line", pa.binary()), ("source", pa.string()), ("lineno", pa.int64())])
ROWS_PER_BLOCK = 4096
READ_CHUNK = 4 << 20
SUFFIXES = JSONL_SUFFIXES + (".parquet",)
_GLOB_CHARS = "*?["


def _is_visible_input(base_name: str) -> bool:
    return not base_name.startswith((".", "_")) and base_name.lower().endswith(SUFFIXES)


def _match(parts: list[str], pattern: list[str]) -> bool:
    """Segment-wise glob match; `**` matches any number of segments."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def expand_input(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """A file, a directory (recursive) or a glob -> (filesystem, sorted input files). Raises if none."""
    fs, path = resolve_uri(uri)
    parts = path.split("/")
    first_glob = next((i for i, p in enumerate(parts) if any(c in p for c in _GLOB_CHARS)), None)
    if first_glob is not None:
        base = "/".join(parts[:first_glob]) or "/"
        if fs.get_file_info(base).type != pafs.FileType.Directory:
            raise FileNotFoundError(f"input not found: {uri} ({base} is not a directory)")
        pattern = parts[first_glob:]
        files = [
            f.path for f in fs.get_file_info(pafs.FileSelector(base, recursive=True))
            if f.type == pafs.FileType.File
            and _match(posixpath.relpath(f.path, base).split("/"), pattern)
            and _is_visible_input(f.base_name)
        ]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"input not found: {uri}")
        if info.type == pafs.FileType.File:
            input_format(path)  # an explicit file must have a known format
            files = [path]
        else:
            files = [
                f.path for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                if f.type == pafs.FileType.File and _is_visible_input(f.base_name)
            ]
    if not files:
        raise FileNotFoundError(f"no input files ({', '.join(SUFFIXES)}) match {uri}")
    return fs, sorted(files)


def iter_lines(read, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
    """Lines as binary file iteration yields them: split on b"\\n" only, the newline kept."""
    rest = b""
    while True:
        buf = read(chunk_size)
        if not buf:
            break
        parts = (rest + buf).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part + b"\n"
    if rest:
        yield rest


def _block(lines: list[bytes], source: str, linenos: list[int]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(lines, pa.binary()), pa.array([source] * len(lines), pa.string()), pa.array(linenos, pa.int64())],
        schema=LINE_SCHEMA,
    )


class CorpusDatasource(FileBasedDatasource):
    """JSONL and Parquet files -> one row per record, unparsed: `line` (JSON bytes), `source`, `lineno`."""

    def _open_input_source(self, filesystem, path: str, **open_args):
        if input_format(path) == "parquet":
            return filesystem.open_input_file(path)  # Parquet needs random access
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        source = posixpath.basename(path)
        if input_format(path) == "parquet":
            start = 1
            for batch in pq.ParquetFile(f).iter_batches(batch_size=ROWS_PER_BLOCK):
                rows = batch.to_pylist()
                lines = [json.dumps(r, ensure_ascii=False, default=str).encode() for r in rows]
                yield _block(lines, source, list(range(start, start + len(rows))))
                start += len(rows)
            return
        lines, linenos = [], []
        for lineno, line in enumerate(iter_lines(f.read), 1):
            if not line.strip():
                continue
            lines.append(line)
            linenos.append(lineno)
            if len(lines) >= ROWS_PER_BLOCK:
                yield _block(lines, source, linenos)
                lines, linenos = [], []
        if lines:
            yield _block(lines, source, linenos)
