"""Raw records -> result rows, in two steps that every front end shares.

    planned = plan_records(encoder, raws)        # parse, expand, encode; bad records keep their place
    results = <score planned units>(pending(planned))   # the engine, in-process or on a Serve replica
    rows = assemble(encoder, planned, results, model)   # one row per item, one per bad record

The CLI calls `score_records` (all three in one process); the Serve ingress awaits the model
deployment between the two steps; the corpus job runs `plan_records` in its encode stage and
`assemble` in its score stage, with `PlannedRecord.to_row`/`from_row` in between. So the rows are
the same wherever they are made.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence

from .encoding import EncodedItem, Encoder, EncodeFailure, Encoded, encoded_from_row
from .outputs import BatchStats, ScoreResult
from .protocol import InvalidInputError, ItemRejectedError, ScoringFailedError
from .records import RecordError, ScoreItem, items_from_raw
from .results import error_row, result_row


@dataclass(frozen=True)
class PlannedRecord:
    """One input record: its items and their encoded units, or the error that stops it."""

    record_id: str
    items: list[ScoreItem]
    encoded: list[Encoded]
    error: Optional[str] = None  # invalid JSON or schema: one error row, nothing to score

    def to_row(self) -> dict[str, Any]:
        """Arrow-friendly: keys of the items (what `assemble` needs) and the encoded units."""
        return {
            "id": self.record_id,
            "error": self.error,
            "items": [{"index": it.index, "label": it.label, "subset": it.subset} for it in self.items],
            "encoded": [e.to_row() for e in self.encoded],
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "PlannedRecord":
        items = [ScoreItem(row["id"], int(it["index"]), it["label"], subset=it.get("subset"))
                 for it in row["items"] or []]
        encoded = [encoded_from_row(e) for e in row["encoded"] or []]
        return cls(row["id"], items, encoded, row["error"])

    @property
    def keys(self) -> list[tuple[str, int]]:
        """The (id, index) keys of its rows in the results store."""
        return [(it.id, it.index) for it in self.items] if self.error is None else [(self.record_id, 0)]


def expand_records(raws: Iterable[Any]) -> list[PlannedRecord]:
    """Per raw record (or `RecordError` from the reader): its items, not encoded yet; errors in place."""
    planned = []
    for raw in raws:
        try:
            if isinstance(raw, RecordError):
                raise raw
            items = items_from_raw(raw)
        except RecordError as err:
            planned.append(PlannedRecord(err.record_id, [], [], str(err)))
            continue
        planned.append(PlannedRecord(items[0].id, items, []))
    return planned


def encode_planned(encoder: Encoder, planned: Iterable[PlannedRecord]) -> list[PlannedRecord]:
    return [p if p.error is not None else replace(p, encoded=encoder.encode_record(p.items)) for p in planned]


def plan_records(encoder: Encoder, raws: Iterable[Any]) -> list[PlannedRecord]:
    """Per raw record: its items and their encoded units; bad records keep their place as errors."""
    return encode_planned(encoder, expand_records(raws))


def pending(planned: Sequence[PlannedRecord]) -> list[EncodedItem]:
    """The units to score, in order: every encoded unit of every record."""
    return [e for p in planned for e in p.encoded if isinstance(e, EncodedItem)]


def combined(encoder: Encoder, planned: Sequence[PlannedRecord],
             results: Sequence[ScoreResult]) -> Iterator[tuple[PlannedRecord, list[ScoreResult]]]:
    """Per planned record, one result per item (none for a bad record), given the results of `pending`."""
    scored = iter(results)
    for p in planned:
        if p.error is not None:
            yield p, []
            continue
        units = [ScoreResult.failed(e.message) if isinstance(e, EncodeFailure) else next(scored) for e in p.encoded]
        yield p, encoder.combine(p.items, units)
    if next(scored, None) is not None:
        raise AssertionError("more results than pending units")


def assemble(encoder: Encoder, planned: Sequence[PlannedRecord], results: Sequence[ScoreResult],
             model: str) -> list[dict[str, Any]]:
    """Rows for `planned`, given the results of `pending(planned)` in order."""
    rows: list[dict[str, Any]] = []
    for p, item_results in combined(encoder, planned, results):
        if p.error is not None:
            rows.append(error_row(p.record_id, p.error, model))
        else:
            rows.extend(result_row(item, r, model) for item, r in zip(p.items, item_results))
    return rows


def check_planned(planned: Sequence[PlannedRecord]) -> None:
    """Raise for the first bad record (`InvalidInputError`) or unencodable item (`ItemRejectedError`), with
    its position: what the strict API (handle methods, /v1/score) answers instead of error rows."""
    offset = 0
    for k, p in enumerate(planned):
        if p.error is not None:
            raise InvalidInputError(p.error, item=k)
        for j, e in enumerate(p.encoded):
            if isinstance(e, EncodeFailure):  # a unit per item maps back to its item; else the record's first
                item = offset + (j if len(p.encoded) == len(p.items) else 0)
                raise ItemRejectedError(f"item {item}: {e.message}", item=item)
        offset += len(p.items)


def strict_results(encoder: Encoder, planned: Sequence[PlannedRecord],
                   results: Sequence[ScoreResult]) -> list[ScoreResult]:
    """One result per item of every record, given the results of `pending(planned)`; raise
    `ScoringFailedError` naming the first item the model failed on."""
    out = [r for _, rs in combined(encoder, planned, results) for r in rs]
    for i, r in enumerate(out):
        if r.error is not None:
            raise ScoringFailedError(f"item {i}: scoring failed: {r.error}", item=i)
    return out


class Engine(Protocol):
    """What `score_records` needs of `rmcluster.engine.ScoringEngine` (named here, so no torch import)."""

    @property
    def encoder(self) -> Encoder: ...

    @property
    def model_name(self) -> str: ...

    def score_encoded(self, encoded: Sequence[Encoded],
                      on_batch: Optional[Callable[[BatchStats], None]] = None) -> list[ScoreResult]: ...


def score_records(engine: Engine, raws: Iterable[Any],
                  on_batch: Optional[Callable[[BatchStats], None]] = None) -> list[dict[str, Any]]:
    """Score a chunk of raw records in-process; one row per item, plus one error row per bad record."""
    planned = plan_records(engine.encoder, raws)
    return assemble(engine.encoder, planned, engine.score_encoded(pending(planned), on_batch), engine.model_name)
