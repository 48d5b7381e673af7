"""Fuzzing the record parser and the templating (hypothesis): arbitrary JSON per line, arbitrary roles and
contents. Nothing raises; every bad line is exactly one error row, and a schema error names its field."""

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmcluster.config import RMConfig
from rmcluster.corpus import parse_jsonl_line
from rmcluster.pipeline import assemble, pending, plan_records
from rmcluster.records import RecordError
from rmcluster.scorers import build_encoder

SHAPE_KEYS = ("messages", "prompt", "responses", "chosen", "rejected", "steps", "text", "input_ids", "id")
# Any unicode, lone surrogates included (JSON's "\ud800" escapes parse to them).
TEXT = st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"]), max_size=40)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)
MESSAGE = st.fixed_dictionaries({"role": st.one_of(TEXT, JSON), "content": st.one_of(TEXT, JSON)})
MESSAGES = st.lists(MESSAGE, max_size=4)
RECORD = st.fixed_dictionaries({}, optional={k: v for k, v in {
    "messages": MESSAGES | JSON, "prompt": TEXT | MESSAGES | JSON, "responses": st.lists(TEXT | MESSAGES, max_size=3) | JSON,
    "chosen": TEXT | MESSAGES, "rejected": TEXT | MESSAGES, "steps": st.lists(TEXT, max_size=3),
    "text": TEXT, "input_ids": st.lists(st.integers(-5, 10**6), max_size=8), "id": TEXT | st.integers()}.items()})
LINE = st.one_of(JSON.map(json.dumps), RECORD.map(json.dumps), st.binary(max_size=60))


@pytest.fixture(scope="module")
def encoder(demo_dir):
    return build_encoder(RMConfig(model={"name": str(demo_dir)}, tokenization={"max_length": 256}))


def _rows(encoder, raw):
    planned = plan_records(encoder, [raw])
    # Unscored units get a failed result, so rows exist for every record without running the model.
    from rmcluster.outputs import ScoreResult

    return planned, assemble(encoder, planned, [ScoreResult.failed("not scored here") for _ in pending(planned)], "m")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=LINE)
def test_any_line_becomes_rows_and_never_raises(encoder, line):
    raw = parse_jsonl_line(line, "input.jsonl line 1")
    planned, rows = _rows(encoder, raw)
    assert len(planned) == 1 and rows
    (record,) = planned
    for row in rows:  # every row can be written to Parquet (valid UTF-8 only)
        row["id"].encode("utf-8")
        row["error"].encode("utf-8")
    if record.error is not None:  # a bad line: one error row, with its message
        assert len(rows) == 1 and rows[0]["error"] and rows[0]["score"] is None
    if isinstance(raw, dict) and record.error is not None and not isinstance(raw, RecordError):
        # A schema error names the field (a key of the record, or a path into it) or the shapes it accepts.
        message = rows[0]["error"]
        assert (any(re.search(rf"\b{k}\b", message) for k in SHAPE_KEYS) or "needs one of" in message
                or "not valid Unicode" in message), message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.fixed_dictionaries({"role": TEXT, "content": TEXT}), min_size=1, max_size=5))
def test_any_roles_and_contents_template_or_fail_their_item(encoder, messages):
    planned, rows = _rows(encoder, {"messages": messages})
    assert len(rows) == 1  # one conversation, one row: templated, or its own error
    assert rows[0]["error"]  # (nothing was scored here) ...
    if planned[0].error is None and pending(planned):
        assert rows[0]["error"] == "not scored here"  # ... and it templated: roles the template does not know pass


def test_hand_picked_lines(encoder):
    cases = {
        '{"messages": [{"role": "user", "content": "\\ud800"}]}': "messages.0.content: not valid Unicode",
        '{"messages": [{"role": 5, "content": "a"}]}': "messages.0.role",
        '{"prompt": "a", "chosen": 1, "rejected": "b"}': "chosen",
        "[1, 2]": "record must be a JSON object",
        "{": "invalid JSON",
        b'{"text": "\xff"}': "invalid JSON",
    }
    for line, expected in cases.items():
        _, rows = _rows(encoder, parse_jsonl_line(line, "input.jsonl line 1"))
        assert len(rows) == 1 and expected in rows[0]["error"], (line, rows[0]["error"])
