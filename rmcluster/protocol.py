"""Wire models of the scoring API, shared by the Serve app (`serve/`) and `rmcluster.client`.

Request and response bodies are pydantic models, so no string-keyed dict crosses a boundary and
the OpenAPI page at `/docs` documents them. The errors are plain exceptions that pickle, so a
DeploymentHandle caller catches the same `InvalidInputError` an HTTP caller sees as a 422.
Importing this module is cheap: pydantic only, no torch, Ray or FastAPI.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from typing_extensions import Annotated

from .records import (
    AnyRecord, ConversationRecord, Messages, PairRecord, Response, ResponsesRecord, TokenIds, TokensRecord, Turns,
)

__all__ = [
    "ClassifyData", "ClassifyRequest", "ClassifyResponse", "ErrorBody", "ErrorResponse", "GetRewardRequest",
    "GetRewardResponse", "HealthResponse", "InvalidInputError", "ItemRejectedError", "ItemScore", "ModelCard",
    "ModelList", "PairRecord", "ResponsesRecord", "ScoreRequest", "ScoreResponse", "ScoringFailedError",
    "ServiceOverloadedError", "Usage", "invalid_input",
]


# -- /v1/score -------------------------------------------------------------------------------------
class ScoreRequest(BaseModel):
    """One of six shapes: `conversations`; `pairs`; `groups`; `input_ids`; `prompt` + `responses`; `prompt` +
    `chosen` + `rejected`. Pairs and groups stay records, so pairwise judges see their structure."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, description="Ignored (one model per application); echoed back as served.")
    conversations: Optional[list[Messages]] = Field(None, description="Chats to score, each a list of messages.")
    pairs: Optional[list[PairRecord]] = Field(
        None, description="Preference pairs {prompt, chosen, rejected}: items chosen, rejected per pair, in order.")
    groups: Optional[list[ResponsesRecord]] = Field(
        None, description="Best-of-N groups {prompt, responses}: one item per response, group after group.")
    input_ids: Optional[list[TokenIds]] = Field(
        None, description="Token-id lists, already templated with the model's chat template: scored as given.")
    prompt: Optional[Turns] = Field(None, description="A user turn (string) or messages, shared by the responses.")
    responses: Optional[Annotated[list[Response], Field(min_length=1)]] = Field(
        None, description="Best-of-N: one score per response, in order (a response may be a list of steps)."
    )
    chosen: Optional[Response] = Field(None, description="Preference pair: scored first.")
    rejected: Optional[Response] = Field(None, description="Preference pair: scored second.")

    @model_validator(mode="after")
    def _one_shape(self) -> "ScoreRequest":
        pair = self.chosen is not None or self.rejected is not None
        shapes = [self.conversations is not None, self.pairs is not None, self.groups is not None,
                  self.input_ids is not None, self.responses is not None, pair]
        if sum(shapes) != 1:
            raise ValueError("send exactly one of: 'conversations'; 'pairs'; 'groups'; 'input_ids'; 'prompt' + "
                             "'responses'; 'prompt' + 'chosen' + 'rejected'")
        if (self.responses is not None or pair) and self.prompt is None:
            raise ValueError("'prompt' is required with 'responses' or 'chosen'/'rejected'")
        if pair and (self.chosen is None or self.rejected is None):
            raise ValueError("a preference pair needs both 'chosen' and 'rejected'")
        if self.prompt is not None and (self.conversations is not None or self.pairs is not None
                                        or self.groups is not None or self.input_ids is not None):
            raise ValueError("'prompt' goes only with 'responses' or 'chosen' + 'rejected'")
        return self

    def records(self) -> list[AnyRecord]:
        """The request as records, in item order."""
        if self.conversations is not None:
            return [ConversationRecord(messages=c) for c in self.conversations]
        if self.pairs is not None:
            return list(self.pairs)
        if self.groups is not None:
            return list(self.groups)
        if self.input_ids is not None:
            return [TokensRecord(input_ids=ids) for ids in self.input_ids]
        if self.responses is not None:
            return [ResponsesRecord(prompt=self.prompt, responses=self.responses)]
        return [PairRecord(prompt=self.prompt, chosen=self.chosen, rejected=self.rejected)]


class ItemScore(BaseModel):
    score: float = Field(description="The reward, raw (no sigmoid): logit 0 for sequence classifiers.")
    num_tokens: int = Field(description="Tokens scored, after truncation.")
    truncated: bool = Field(description="Left-truncated to fit max_length (on_overflow: truncate_left).")
    logits: Optional[list[float]] = Field(None, description="Sequence classifiers: every label's logit.")
    values: Optional[dict[str, float]] = Field(
        None, description="Named outputs: objectives (custom classifiers), labels (id2label), verdicts.")
    step_scores: Optional[list[float]] = Field(None, description="Process reward models: one score per step.")
    rationale: Optional[str] = Field(None, description="Judges that reason first: what they wrote before the verdict.")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class ScoreResponse(BaseModel):
    model: str
    scores: list[float] = Field(description="One per item, in request order.")
    results: list[ItemScore]
    usage: Usage


# -- /get_reward (OpenRLHF --remote_rm_url) --------------------------------------------------------
class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward request: already-templated texts (special tokens included)."""

    model_config = ConfigDict(extra="ignore")
    # May be empty: OpenRLHF 0.11.0 sends `query: []` to every server but one, and expects empty lists back.
    query: list[str] = Field(description="Templated prompt + response texts.")
    prompts: Optional[list[str]] = Field(None, description="Accepted and ignored (for rule-based rewards).")
    labels: Optional[list[Any]] = Field(None, description="Accepted and ignored (for rule-based rewards).")


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float] = Field(description="Same as rewards: OpenRLHF uses it for dynamic filtering.")
    extra_logs: dict[str, list[float]] = Field(description="Per-query values OpenRLHF logs: num_tokens, truncated.")


# -- /classify (vLLM pooling API, as veRL's reward loop calls it) -------------------------------------
class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: Optional[str] = Field(None, description="Ignored; echoed back as served.")
    input: Optional[Union[str, Annotated[list[str], Field(min_length=1)], TokenIds,
                          Annotated[list[TokenIds], Field(min_length=1)]]] = Field(
        None, description="Templated text(s), or token-id list(s) scored as given (as vLLM takes them). With "
        "add_special_tokens (default, as vLLM) BOS is added once to texts.")
    messages: Optional[Messages] = Field(None, description="One chat, templated with the model's chat template.")
    use_activation: Optional[bool] = Field(None, description="Sigmoid (1 label) or softmax; default false: raw logits.")
    activation: Optional[bool] = Field(None, description="Older name of use_activation.")
    add_special_tokens: bool = Field(True, description="Add BOS to `input` texts, as vLLM does.")

    @model_validator(mode="after")
    def _one_input(self) -> "ClassifyRequest":
        if (self.input is None) == (self.messages is None):
            raise ValueError("send exactly one of 'input' or 'messages'")
        return self

    def inputs(self) -> list[Union[str, list[int]]]:
        """`input` as a list of texts or token-id lists."""
        value = self.input
        if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
            return [value]  # type: ignore[list-item]
        return list(value or [])  # type: ignore[arg-type]

    @property
    def activate(self) -> bool:
        if self.use_activation is not None:
            return self.use_activation
        return bool(self.activation)


class ClassifyData(BaseModel):
    index: int
    label: str
    probs: list[float] = Field(description="Raw logits unless use_activation was set.")
    num_classes: int


class ClassifyUsage(Usage):
    completion_tokens: int = 0


class ClassifyResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"classify-{uuid.uuid4().hex}")
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ClassifyData]
    usage: ClassifyUsage


# -- /v1/models, /health -----------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "rmcluster"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model: str


# -- errors ------------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    message: str
    type: str
    code: int
    item: Optional[int] = Field(None, description="Index of the failing item in the request, when one is to blame.")
    field: Optional[str] = Field(None, description="Dotted path of the failing field, e.g. 'conversations.3.1.content'.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class ScoringError(Exception):
    """Base of the errors a request can end in; `status_code` is what HTTP callers get."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, item: Optional[int] = None, field: Optional[str] = None):
        super().__init__(message)
        self.message, self.item, self.field = message, item, field

    def __reduce__(self) -> tuple[Any, ...]:  # keep the fields across Ray's pickling
        return type(self), (self.message, self.item, self.field)

    def __str__(self) -> str:
        return self.message

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorBody(message=self.message, type=self.error_type, code=self.status_code,
                                             item=self.item, field=self.field))


class InvalidInputError(ScoringError, ValueError):
    """The request does not match its schema (HTTP 422)."""

    status_code = 422
    error_type = "invalid_request"


class ItemRejectedError(ScoringError, ValueError):
    """An item cannot be scored: over max_length under on_overflow=error, or it tokenizes to nothing (HTTP 400)."""

    status_code = 400
    error_type = "item_rejected"


class ScoringFailedError(ScoringError, RuntimeError):
    """The model failed on an item (HTTP 500); the replica keeps serving."""


class RequestTooLargeError(ScoringError, ValueError):
    """More items or tokens than one request may carry (HTTP 413): split it."""

    status_code = 413
    error_type = "request_too_large"


class UnauthorizedError(ScoringError, PermissionError):
    """No valid API key came with the request (HTTP 401; the service has ingress.api_keys set)."""

    status_code = 401
    error_type = "unauthorized"


class RequestTimeoutError(ScoringError, RuntimeError):
    """The request did not finish within the ingress's request_timeout_s (HTTP 408); its queued work is dropped."""

    status_code = 408
    error_type = "timeout"


class ServiceOverloadedError(ScoringError, RuntimeError):
    """The model deployment's queue is full (HTTP 503 with Retry-After): retry later."""

    status_code = 503
    error_type = "overloaded"

    def __init__(self, message: str, item: Optional[int] = None, field: Optional[str] = None,
                 retry_after_s: float = 1.0):
        super().__init__(message, item, field)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.item, self.field, self.retry_after_s)


def invalid_input(err: ValidationError, prefix: tuple[Any, ...] = ()) -> InvalidInputError:
    """A pydantic error -> InvalidInputError naming the failing item (its index) and field.

    Of several errors the deepest is reported: for a `str | messages` union it is the branch that
    matched the input's shape, e.g. `rejected.0.content: Field required`, not `rejected.str: ...`.
    """
    errors = err.errors(include_url=False)
    worst = max(errors, key=lambda e: len(e["loc"]))
    return invalid_input_at(tuple(prefix) + tuple(worst["loc"]), worst["msg"], len(errors))


_PAIR_ITEMS = {"chosen": 0, "rejected": 1}


def invalid_input_at(loc: tuple[Any, ...], msg: str, count: int = 1) -> InvalidInputError:
    # loc is e.g. ("conversations", 3, 1, "content"): item 3, field conversations.3.1.content.
    # "body" (FastAPI) and union tags ("str", "list[Message]") are not fields.
    loc = tuple(p for p in loc if p not in ("body", "str") and not (isinstance(p, str) and "[" in p))
    field = ".".join(str(p) for p in loc) or None
    item = _PAIR_ITEMS.get(loc[0]) if loc and loc[0] in _PAIR_ITEMS else next(
        (p for p in loc if isinstance(p, int)), None)
    msg = msg.removeprefix("Value error, ")
    more = f" (and {count - 1} more errors)" if count > 1 else ""
    where = f"{field}: " if field else ""
    return InvalidInputError(f"{where}{msg}{more}", item=item, field=field)
