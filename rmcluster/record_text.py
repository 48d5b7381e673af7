"""The text of a few records, looked up by id in an input file or directory (for `rmcluster compare`).

The results store holds scores, not text, so the text of the items worth reading (where two models
disagree most) comes from the input they were scored from, read once and parsed as `rmcluster score`
parses it (the same ids, given or derived).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from .corpus import JSONL_SUFFIXES, iter_records
from .records import (ConversationRecord, PairRecord, RecordError, ResponsesRecord, StepsRecord, TextRecord,
                      TokensRecord, parse_record)

INPUT_SUFFIXES = JSONL_SUFFIXES + (".parquet",)


def render(turns: Any) -> str:
    """A prompt or response as plain text: a string as it is, messages as `role: content` blocks."""
    if isinstance(turns, str):
        return turns
    if isinstance(turns, list) and all(isinstance(t, str) for t in turns):  # reasoning steps
        return "\n".join(turns)
    return "\n\n".join(f"{m.role}: {m.content}" for m in turns)


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and f.name.lower().endswith(INPUT_SUFFIXES) and not f.name.startswith((".", "_")):
                yield f


def item_texts(record: Any) -> dict[str, Any]:
    """What a reader needs of a record: prompt, chosen, rejected; or responses; or the whole text."""
    if isinstance(record, PairRecord):
        return {"prompt": render(record.prompt), "chosen": render(record.chosen), "rejected": render(record.rejected)}
    if isinstance(record, ResponsesRecord):
        return {"prompt": render(record.prompt), "responses": [render(r) for r in record.responses]}
    if isinstance(record, StepsRecord):
        return {"prompt": render(record.prompt), "responses": [render(record.steps)]}
    if isinstance(record, ConversationRecord):
        return {"text": render(record.messages)}
    if isinstance(record, TextRecord):
        return {"text": record.text}
    if isinstance(record, TokensRecord):
        return {"text": f"token ids: {record.input_ids}"}
    return {}


def record_texts(source: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """Texts of the records with these ids in a local JSONL/Parquet file or directory; {} if unreadable."""
    found: dict[str, dict[str, Any]] = {}
    if "://" in source:
        return found  # object stores: not read here (pass a local copy as --input)
    for f in _files(Path(source).expanduser()):
        for chunk in iter_records(f):
            for raw in chunk:
                if isinstance(raw, RecordError):
                    continue
                try:
                    rid, record = parse_record(raw)
                except RecordError:
                    continue
                if rid in ids and rid not in found:
                    found[rid] = item_texts(record)
            if len(found) == len(ids):
                return found
    return found
