"""Input expansion (file, directory, glob) and the line reader, without Ray."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.inputs import expand_input, iter_lines


@pytest.fixture
def tree(tmp_path):
    for rel in ["a.jsonl", "b.parquet", "sub/c.ndjson", "sub/deep/d.json", "sub/notes.txt", ".hidden.jsonl",
                "_SUCCESS", "sub/_tmp.jsonl"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    return tmp_path


def rel(tree, files):
    return [f[len(str(tree)) + 1:] for f in files]


def test_directory_is_read_recursively_skipping_hidden_and_other_formats(tree):
    _, files = expand_input(str(tree))
    assert rel(tree, files) == ["a.jsonl", "b.parquet", "sub/c.ndjson", "sub/deep/d.json"]


def test_globs_match_per_path_segment(tree):
    assert rel(tree, expand_input(f"{tree}/*.jsonl")[1]) == ["a.jsonl"]
    assert rel(tree, expand_input(f"{tree}/sub/*")[1]) == ["sub/c.ndjson"]
    assert rel(tree, expand_input(f"{tree}/**/*json*")[1]) == ["a.jsonl", "sub/c.ndjson", "sub/deep/d.json"]
    assert rel(tree, expand_input(f"file://{tree}/*.parquet")[1]) == ["b.parquet"]


def test_a_single_file_and_the_failures(tree):
    assert rel(tree, expand_input(str(tree / "sub/c.ndjson"))[1]) == ["sub/c.ndjson"]
    with pytest.raises(FileNotFoundError, match="input not found"):
        expand_input(str(tree / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="no input files"):
        expand_input(f"{tree}/*.csv")
    with pytest.raises(FileNotFoundError, match="input not found"):
        expand_input(f"{tree}/nope/*.jsonl")
    with pytest.raises(ValueError, match="unknown input format"):
        expand_input(str(tree / "sub/notes.txt"))


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.sampled_from([b"a", b"\n", b"\r\n", b"\r", "\u2028".encode(), b"{}", b" "]), max_size=40),
       chunk=st.integers(1, 9))
def test_lines_are_exactly_what_binary_iteration_yields(data, chunk):
    raw = b"".join(data)
    assert list(iter_lines(io.BytesIO(raw).read, chunk)) == list(io.BytesIO(raw))
