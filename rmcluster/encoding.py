"""The encoder contract: a record's items -> what the engine scores -> one result per item again.

An encoder templates and tokenizes without model weights, so it runs anywhere on CPU (the Serve
ingress, the corpus job's encode stage). Most kinds score each item on its own: `encode_record`
encodes item by item and `combine` is the identity. A kind may instead expand a record into
other units (a pairwise judge runs both orders of a pair) and combine their results back into one
result per item. Results are always in item order, so rows keep their place in the store.

Nothing here imports torch: the ingress and the job's CPU stage import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from .outputs import ScoreResult, error_message
from .records import ScoreItem


class ItemError(ValueError):
    """This item cannot be scored (too long, empty, untemplatable); other items are unaffected."""


@dataclass(frozen=True)
class EncodedItem:
    """Token ids ready for a forward pass."""

    input_ids: list[int]
    truncated: bool = False
    # Leading tokens that are the templated prompt alone, verified to be an exact prefix of
    # input_ids (0: none). Items with identical prompt tokens can share one prompt computation.
    prompt_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    def to_row(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "truncated": self.truncated, "prompt_tokens": self.prompt_tokens,
                "error": None}


@dataclass(frozen=True)
class EncodeFailure:
    """An item that did not encode; it becomes that item's error, never the batch's."""

    message: str

    @classmethod
    def of(cls, error: BaseException) -> "EncodeFailure":
        return cls(error_message(error))

    def to_row(self) -> dict[str, Any]:
        return {"input_ids": None, "truncated": False, "prompt_tokens": 0, "error": self.message}


Encoded = Union[EncodedItem, EncodeFailure]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share; slice comparisons run in C, so bisect over them."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:  # only the part not yet known equal: ~2n tokens copied in all, not n log n
            lo = mid
        else:
            hi = mid
    return lo


def encoded_from_row(row: dict[str, Any]) -> Encoded:
    """The inverse of `EncodedItem.to_row` / `EncodeFailure.to_row` (rows cross Ray Data stages)."""
    if row.get("error") is not None:
        return EncodeFailure(str(row["error"]))
    return EncodedItem(list(row["input_ids"]), bool(row["truncated"]), int(row["prompt_tokens"] or 0))


@dataclass(frozen=True)
class KindEncoding:
    """What a model kind adds to plain chat encoding (from its settings and the checkpoint's config)."""

    append_ids: tuple[int, ...] = ()  # appended after the templated conversation (InternLM2's reward token)
    step_token: Optional[str] = None  # process rewards: joins a response's steps; must be in every item
    require_prompt: bool = False  # DPO: every item needs its response tokens, after an exact prompt prefix


class Encoder:
    """Templating + tokenization + truncation for one model, and how a record maps to scored units."""

    #: Longest unit accepted, in tokens.
    max_length: int

    def encode(self, item: ScoreItem) -> EncodedItem:
        """One item's token ids; raise `ItemError` (or any exception) when it cannot be scored."""
        raise NotImplementedError

    def encode_record(self, items: Sequence[ScoreItem]) -> list[Encoded]:
        """What the engine scores for one record's items (default: each item on its own)."""
        return [self.encode_or_fail(item) for item in items]

    def combine(self, items: Sequence[ScoreItem], results: Sequence[ScoreResult]) -> list[ScoreResult]:
        """One result per item from the results of `encode_record`'s units (default: the same list).

        It sees the items' keys and order only, not their content: the corpus job's score stage
        has no more than that.
        """
        if len(results) != len(items):
            raise AssertionError(f"{len(items)} items but {len(results)} results")
        return list(results)

    def encode_or_fail(self, item: ScoreItem) -> Encoded:
        try:
            return self.encode(item)
        except Exception as err:  # noqa: BLE001 - any failure is this item's error, never the batch's
            return EncodeFailure.of(err)
