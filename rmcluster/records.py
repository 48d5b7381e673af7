"""Input records: one pydantic schema for the six shapes, and their expansion into scorable items.

Shapes (extra keys such as metadata are ignored):
    {"id"?, "messages": [{"role", "content"}, ...]}                 -> one item
    {"id"?, "prompt": str | messages, "responses": [response, ...]}  -> one item per response
    {"id"?, "prompt": ..., "chosen": response, "rejected": response}  -> two items: chosen=0, rejected=1
    {"id"?, "prompt": ..., "steps": [str, ...]}  (process rewards)    -> one item
    {"id"?, "text": str}  (already templated, OpenRLHF style)         -> one item
    {"id"?, "input_ids": [int, ...]}  (templated and tokenized)      -> one item
A response is a string, messages, or a list of reasoning steps (for process reward models, which
join the steps with their step separator).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional, Sequence, Union

from pydantic import (AliasChoices, BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError,
                      field_validator)
from typing_extensions import Annotated


class Message(BaseModel):
    # Extra keys (name, tool_calls, ...) pass through to the chat template.
    model_config = ConfigDict(extra="allow")
    role: str = Field(min_length=1)
    content: str


Messages = Annotated[list[Message], Field(min_length=1)]
# A prompt or response is either plain text or a list of messages.
Turns = Union[str, Messages]
# A response may also be a list of reasoning steps: one assistant message, joined by the scorer.
Steps = Annotated[list[str], Field(min_length=1)]
Response = Union[str, Messages, Steps]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Optional[Union[str, int]] = None
    # The evaluation group (RewardBench's `subset`, or a `category` column), kept on every row.
    subset: Optional[str] = Field(None, validation_alias=AliasChoices("subset", "category"))

    @field_validator("subset", mode="before")
    @classmethod
    def _subset_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class ConversationRecord(_Record):
    messages: Messages


class ResponsesRecord(_Record):
    prompt: Turns
    responses: Annotated[list[Response], Field(min_length=1)]


class PairRecord(_Record):
    prompt: Turns
    chosen: Response
    rejected: Response


class StepsRecord(_Record):
    prompt: Turns
    steps: Steps


class TextRecord(_Record):
    text: str = Field(min_length=1)


# Token ids scored as given: no template, no BOS added. Ids past the model's vocabulary are the item's error.
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class TokensRecord(_Record):
    input_ids: TokenIds


def _shape_of(value: Any) -> Optional[str]:
    if not isinstance(value, dict):
        return None
    keys = {k for k, v in value.items() if v is not None}
    if "messages" in keys:
        return "messages"
    if "text" in keys:
        return "text"
    if "input_ids" in keys:
        return "input_ids"
    if "steps" in keys:
        return "steps"
    if "chosen" in keys or "rejected" in keys:
        return "pair"
    if "responses" in keys or "prompt" in keys:
        return "responses"
    return None


Record = Annotated[
    Union[
        Annotated[ConversationRecord, Tag("messages")],
        Annotated[ResponsesRecord, Tag("responses")],
        Annotated[PairRecord, Tag("pair")],
        Annotated[StepsRecord, Tag("steps")],
        Annotated[TextRecord, Tag("text")],
        Annotated[TokensRecord, Tag("input_ids")],
    ],
    Discriminator(
        _shape_of,
        custom_error_type="record_shape",
        custom_error_message="a record needs one of: 'messages'; 'prompt' + 'responses'; "
        "'prompt' + 'chosen' + 'rejected'; 'prompt' + 'steps'; 'text'; 'input_ids'",
    ),
]
_RECORD = TypeAdapter(Record)


@dataclass(frozen=True)
class ScoreItem:
    """One conversation to score, with its place in the results store."""

    id: str
    index: int
    label: Optional[str] = None
    messages: Optional[list[dict[str, Any]]] = None  # chat messages, templated by the tokenizer
    text: Optional[str] = None  # already-templated text
    input_ids: Optional[tuple[int, ...]] = None  # already-tokenized text, scored as given
    num_prompt_messages: int = 0  # leading messages that belong to the prompt
    add_special_tokens: bool = False  # text only: put the tokenizer's BOS in front (vLLM /classify)
    # A final assistant message given as reasoning steps (after `messages`); the encoder joins them.
    steps: Optional[tuple[str, ...]] = None
    subset: Optional[str] = None  # the record's evaluation group, a column of the results

    @classmethod
    def conversation(cls, item_id: str, messages: Sequence[dict[str, Any]]) -> "ScoreItem":
        """A plain chat: every message before the last is its prompt."""
        return cls(item_id, 0, messages=list(messages), num_prompt_messages=len(messages) - 1)


def conversation_items(conversations: Iterable[Sequence[dict[str, Any]]]) -> list[ScoreItem]:
    """Plain chats -> items with ids "0", "1", ... in order."""
    return [ScoreItem.conversation(str(i), c) for i, c in enumerate(conversations)]


class RecordError(ValueError):
    """A record that cannot be scored; the message says which field is wrong."""

    def __init__(self, record_id: str, message: str):
        super().__init__(message)
        self.record_id = record_id


def derive_id(raw: Any) -> str:
    """A deterministic id for a record without one: a hash of its canonical JSON (stable across reruns).

    Records with identical content share an id, so they are one item in the results store.
    """
    if isinstance(raw, (bytes, str)):
        payload = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    else:
        payload = json.dumps(raw, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    return "h" + hashlib.sha1(payload).hexdigest()[:16]


def _lone_surrogate_at(value: Any, path: str = "") -> Optional[str]:
    """The path of the first string (key or value) that is not valid Unicode: JSON's "\\ud800" escapes parse,
    but no tokenizer or Parquet file takes them."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "record"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and _lone_surrogate_at(key) is not None:
            return where.encode("utf-8", "backslashreplace").decode()
        found = _lone_surrogate_at(item, where)
        if found is not None:
            return found.encode("utf-8", "backslashreplace").decode()
    return None


def _plain(value: Any) -> Any:
    """Arrow/numpy containers (from Parquet or Ray Data) to plain Python, dropping null keys."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _format_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"][1:])  # drop the union tag
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


AnyRecord = Union[ConversationRecord, ResponsesRecord, PairRecord, StepsRecord, TextRecord, TokensRecord]


def parse_record(raw: Any) -> tuple[str, AnyRecord]:
    """Validate one raw record -> (its id, the record); raise RecordError naming the record and field.

    The id is the record's own `id`, or one derived from its content (the same whether or not it
    validates, so error rows keep their place in the results store across reruns).
    """
    raw = _plain(raw)
    if not isinstance(raw, dict):
        raise RecordError(derive_id(raw), f"record must be a JSON object, got {type(raw).__name__}")
    bad_text = _lone_surrogate_at(raw)
    if bad_text is not None:
        raise RecordError(derive_id(raw), f"record {derive_id(raw)}: {bad_text}: not valid Unicode (a lone surrogate)")
    has_id = raw.get("id") is not None
    rid = str(raw["id"]) if has_id else derive_id(raw)
    try:
        return rid, _RECORD.validate_python(raw)
    except ValidationError as err:
        raise RecordError(rid, f"record {rid}: {_format_errors(err)}") from None


def _turns(turns: Any, role: str) -> list[dict[str, Any]]:
    if isinstance(turns, str):
        return [{"role": role, "content": turns}]
    return [m.model_dump(exclude_none=True) for m in turns]


def _response_item(rid: str, index: int, label: Optional[str], prompt: list[dict[str, Any]], response: Any) -> ScoreItem:
    n = len(prompt)
    if isinstance(response, list) and all(isinstance(s, str) for s in response):  # reasoning steps
        return ScoreItem(rid, index, label, messages=prompt, num_prompt_messages=n, steps=tuple(response))
    return ScoreItem(rid, index, label, messages=prompt + _turns(response, "assistant"), num_prompt_messages=n)


def expand_record(rid: str, record: AnyRecord) -> list[ScoreItem]:
    """A validated record -> its scorable items, in results-store order, each with the record's subset."""
    items = _items(rid, record)
    return items if record.subset is None else [replace(it, subset=record.subset) for it in items]


def _items(rid: str, record: AnyRecord) -> list[ScoreItem]:
    if isinstance(record, ConversationRecord):
        return [ScoreItem.conversation(rid, _turns(record.messages, "user"))]
    if isinstance(record, TextRecord):
        return [ScoreItem(rid, 0, text=record.text)]
    if isinstance(record, TokensRecord):
        return [ScoreItem(rid, 0, input_ids=tuple(record.input_ids))]
    prompt = _turns(record.prompt, "user")
    if isinstance(record, PairRecord):
        responses: list[tuple[Optional[str], Any]] = [("chosen", record.chosen), ("rejected", record.rejected)]
    elif isinstance(record, StepsRecord):
        responses = [(None, record.steps)]
    else:
        responses = [(None, r) for r in record.responses]
    return [_response_item(rid, i, label, prompt, resp) for i, (label, resp) in enumerate(responses)]


def items_from_raw(raw: Any) -> list[ScoreItem]:
    """Parse and expand in one step; raises RecordError."""
    return expand_record(*parse_record(raw))
