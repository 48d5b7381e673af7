"""Raw records -> result rows, in input order: parse, expand, score, and error rows for bad input."""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Union

from .engine import BatchStats, ScoringEngine
from .records import RecordError, ScoreItem, items_from_raw
from .results import error_row, result_row


def records_to_items(raws: Iterable) -> list[Union[list[ScoreItem], RecordError]]:
    """Per record: its items, or the RecordError that says why it has none."""
    out: list[Union[list[ScoreItem], RecordError]] = []
    for raw in raws:
        if isinstance(raw, RecordError):
            out.append(raw)
            continue
        try:
            out.append(items_from_raw(raw))
        except RecordError as err:
            out.append(err)
    return out


def score_records(
    engine: ScoringEngine, raws: Iterable, on_batch: Optional[Callable[[BatchStats], None]] = None
) -> list[dict]:
    """Score a chunk of raw records; one row per item, plus one error row per bad record."""
    per_record = records_to_items(raws)
    items = [it for entry in per_record if isinstance(entry, list) for it in entry]
    results = iter(engine.score_items(items, on_batch))
    model = engine.model_name
    rows: list[dict] = []
    for entry in per_record:
        if isinstance(entry, RecordError):
            rows.append(error_row(entry.record_id, str(entry), model))
        else:
            rows.extend(result_row(item, next(results), model) for item in entry)
    return rows
