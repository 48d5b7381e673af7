"""The results store without Ray: atomic files, what readers see, done keys, deduplication."""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from rmcluster.store import STORE_SCHEMA, ResultsStore, contains, key_digests


def rows(keys, score=0.0):
    now = datetime.now(timezone.utc)
    return pa.Table.from_pylist(
        [{"id": i, "index": n, "label": None, "score": score, "logits": [score], "num_tokens": 3,
          "truncated": False, "error": None, "model": "m", "scored_at": now} for i, n in keys],
        schema=STORE_SCHEMA,
    )


def names(store):
    return [p.rsplit("/", 1)[1] for p in store.data_files()]


def test_a_failed_write_leaves_no_file(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.write_data(rows([("a", 0), ("a", 1)]), "part-1.parquet")
    good = rows([("b", 0)])
    bad = good.set_column(good.schema.get_field_index("score"), "score", pa.array(["not a number"]))
    with pytest.raises(pa.ArrowInvalid):
        store.write_data(bad, "part-2.parquet")  # fails after the temporary was opened
    assert names(store) == ["part-1.parquet"]
    assert not list((tmp_path / "data").glob(".*"))


def test_readers_never_count_a_half_written_temporary(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.write_data(rows([("a", 0), ("a", 1)]), "part-1.parquet")
    (tmp_path / "data" / ".part-2.parquet.99.ab.tmp").write_bytes(b"PAR1 cut short")  # a killed writer's file
    assert store.read().num_rows == 2
    assert len(pd.read_parquet(tmp_path / "data")) == 2
    assert duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/data/*.parquet')").fetchall()[0][0] == 2
    assert pl.read_parquet(f"{tmp_path}/data/*.parquet").height == 2
    assert store.remove_temp_files() == 1
    assert not list((tmp_path / "data").glob(".*")) and names(store) == ["part-1.parquet"]


def test_done_keys_are_exact_per_id_and_index(tmp_path):
    store = ResultsStore(str(tmp_path))
    assert store.done_keys().size == 0
    store.write_data(rows([("a", 0), ("a", 1), ("b\x000", 0)]), "part-1.parquet")
    store.write_data(rows([("c", 2)]), "part-2.parquet")
    done = store.done_keys()
    probe = [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b\x000", 0), ("c", 2), ("c", 0), ("", 0)]
    mask = contains(done, key_digests([k for k, _ in probe], [n for _, n in probe]))
    assert [p for p, m in zip(probe, mask) if m] == [("a", 0), ("a", 1), ("b\x000", 0), ("c", 2)]
    assert contains(np.empty(0, done.dtype), key_digests(["a"], [0])).tolist() == [False]


def test_dedupe_keeps_the_first_row_of_each_key_and_is_idempotent(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.write_data(rows([("a", 0), ("b", 0)], score=1.0), "part-1.parquet")
    store.write_data(rows([("b", 0), ("c", 0)], score=2.0), "part-2.parquet")  # b repeats
    store.write_data(rows([("a", 0)], score=3.0), "part-3.parquet")  # only repeats: the file goes
    assert store.dedupe() == 2
    table = store.read().sort_by([("id", "ascending")])
    assert table.select(["id", "score"]).to_pylist() == [
        {"id": "a", "score": 1.0}, {"id": "b", "score": 1.0}, {"id": "c", "score": 2.0}]
    assert names(store) == ["part-1.parquet", "part-2.parquet"]
    assert store.dedupe() == 0 and store.read().num_rows == 3


def test_text_files_and_summary(tmp_path):
    store = ResultsStore(str(tmp_path / "new"))
    assert store.summary() is None and store.read().num_rows == 0
    store.write_text("summary.json", '{"items": 3}')
    assert store.summary() == {"items": 3}
    assert store.read(["id", "score"]).schema.names == ["id", "score"]
