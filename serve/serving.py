"""Serving logic: wire requests -> planned records -> token ids -> scores -> wire responses.

No HTTP and no Ray here: the service is given an async `score_encoded` function (the ingress
passes one that calls the model deployment) and raises the typed errors of `rmcluster.protocol`.
`serve/router.py` maps them to status codes; handle callers catch them as they are. Every entry
point runs the two steps of `rmcluster.pipeline` (plan, then assemble), awaiting the model in
between, so rows and scores equal the in-process CLI's.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Optional, Sequence, Union

from pydantic import TypeAdapter, ValidationError

from rmcluster.encoding import EncodedItem, Encoder
from rmcluster.outputs import ScoreResult
from rmcluster.pipeline import PlannedRecord, assemble, check_planned, pending, plan_records, strict_results
from rmcluster.protocol import (
    ClassifyData, ClassifyRequest, ClassifyResponse, ClassifyUsage, GetRewardRequest, GetRewardResponse,
    InvalidInputError, ItemScore, PairRecord, RequestTimeoutError, RequestTooLargeError,
    ResponsesRecord, ScoreRequest, ScoreResponse, Usage, invalid_input,
)
from rmcluster.records import (
    AnyRecord, ConversationRecord, Messages, ScoreItem, TokenIds, TokensRecord, expand_record,
)

ScoreEncoded = Callable[[list[EncodedItem]], Awaitable[list[ScoreResult]]]


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for; beyond it, a typed error instead of a queue that never drains."""

    max_items: int = 100_000
    max_tokens: int = 20_000_000
    timeout_s: float = 600.0

_CONVERSATIONS = TypeAdapter(list[Messages])
_PAIRS = TypeAdapter(list[PairRecord])
_GROUPS = TypeAdapter(list[ResponsesRecord])
_TOKEN_IDS = TypeAdapter(list[TokenIds])
_TEXTS = TypeAdapter(list[str])


class ScoringService:
    """Every entry point of the API, HTTP or handle, over one encoder and one remote model."""

    def __init__(self, encoder: Encoder, score_encoded: ScoreEncoded, model_name: str,
                 on_tokenize: Optional[Callable[[float], None]] = None, limits: RequestLimits = RequestLimits()):
        self.encoder = encoder
        self.limits = limits
        self.model_name = model_name
        self._score_encoded = score_encoded
        self._on_tokenize = on_tokenize
        # Tokenizing is CPU work: off the event loop, and on one thread because a Rust-backed
        # tokenizer shared across threads can fail with "Already borrowed".
        self._tokenize_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rm-tokenize")

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    # -- HTTP shapes ---------------------------------------------------------------------------------
    async def score(self, request: ScoreRequest) -> ScoreResponse:
        results = await self._score_strict(_items(request.records()))
        tokens = sum(r.num_tokens for r in results)
        return ScoreResponse(
            model=self.model_name,
            scores=[_score(r) for r in results],
            results=[_item_score(r) for r in results],
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def get_reward(self, request: GetRewardRequest) -> GetRewardResponse:
        # OpenRLHF sends the policy's decoded text, chat template and BOS included: tokenized with
        # add_special_tokens=False so BOS is not doubled.
        results = await self._score_strict(_inputs(request.query, add_special_tokens=False)) if request.query else []
        scores = [_score(r) for r in results]
        return GetRewardResponse(
            rewards=scores, scores=scores,
            extra_logs={"num_tokens": [float(r.num_tokens) for r in results],
                        "truncated": [float(r.truncated) for r in results]},
        )

    async def classify(self, request: ClassifyRequest) -> ClassifyResponse:
        if request.messages is not None:
            items = _items([ConversationRecord(messages=request.messages)])
        else:
            # vLLM adds the tokenizer's BOS to `input` texts by default (veRL strips its own BOS for that
            # reason); the encoder keeps exactly one BOS if the text already has it. Token ids go as given.
            items = _inputs(request.inputs(), add_special_tokens=request.add_special_tokens)
        results = await self._score_strict(items)
        tokens = sum(r.num_tokens for r in results)
        data = []
        for i, r in enumerate(results):
            logits = r.logits or [_score(r)]
            probs = _activate(logits) if request.activate else list(logits)
            label = max(range(len(probs)), key=probs.__getitem__)
            names = list(r.output.values) if r.output is not None and r.output.values else []
            data.append(ClassifyData(index=i, label=names[label] if label < len(names) else f"LABEL_{label}",
                                     probs=probs, num_classes=len(probs)))
        return ClassifyResponse(model=self.model_name, data=data,
                                usage=ClassifyUsage(prompt_tokens=tokens, total_tokens=tokens))

    # -- handle API (what trainers call on the app handle) ---------------------------------------------
    async def score_conversations(self, conversations: Any) -> list[float]:
        convs = _validate(_CONVERSATIONS, conversations, "conversations")
        if not convs:  # a trainer's empty batch
            return []
        results = await self._score_strict(_items(ConversationRecord(messages=c) for c in convs))
        return [_score(r) for r in results]

    async def score_pairs(self, pairs: Any) -> list[list[float]]:
        """[[chosen, rejected], ...] for [{"prompt", "chosen", "rejected"}, ...]."""
        records = _validate(_PAIRS, pairs, "pairs")
        if not records:
            return []
        scores = [_score(r) for r in await self._score_strict(_items(records))]
        return [scores[i : i + 2] for i in range(0, len(scores), 2)]

    async def score_responses(self, groups: Any) -> list[list[float]]:
        """One list of scores per {"prompt", "responses"} group, in response order."""
        records = _validate(_GROUPS, groups, "groups")
        if not records:
            return []
        scores = iter(_score(r) for r in await self._score_strict(_items(records)))
        return [[next(scores) for _ in g.responses] for g in records]

    async def score_token_ids(self, token_ids: Any) -> list[float]:
        """One score per token-id list (already templated), scored as given."""
        ids = _validate(_TOKEN_IDS, token_ids, "input_ids")
        if not ids:
            return []
        return [_score(r) for r in await self._score_strict(_items(TokensRecord(input_ids=i) for i in ids))]

    async def score_texts(self, texts: Any) -> list[float]:
        """One score per already-templated text, tokenized as /get_reward does (no BOS added)."""
        values = _validate(_TEXTS, texts, "texts")
        if not values:
            return []
        return [_score(r) for r in await self._score_strict(_inputs(values, add_special_tokens=False))]

    async def score_records(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        """Result rows exactly as `rmcluster.pipeline.score_records` makes them in-process.

        Bad records and items become error rows; nothing raises for bad input.
        """
        self._check_items(len(records))  # each record is at least one item: refuse before templating them all
        planned = await self._on_tokenize_thread(plan_records, self.encoder, list(records))
        self._check_items(sum(len(p.items) for p in planned))
        todo = pending(planned)
        results = await self._within_limits(todo) if todo else []
        return assemble(self.encoder, planned, results, self.model_name)

    # -- core ------------------------------------------------------------------------------------------
    async def _on_tokenize_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        def timed() -> Any:
            start = time.perf_counter()
            out = fn(*args)
            if self._on_tokenize is not None:
                self._on_tokenize(time.perf_counter() - start)
            return out

        return await asyncio.get_running_loop().run_in_executor(self._tokenize_thread, timed)

    def _check_items(self, count: int) -> None:
        if count > self.limits.max_items:
            raise RequestTooLargeError(f"{count} items in one request, over the limit of {self.limits.max_items} "
                                       "(ingress.max_items_per_request): split it")

    async def _within_limits(self, units: list[EncodedItem]) -> list[ScoreResult]:
        tokens = sum(u.num_tokens for u in units)
        if tokens > self.limits.max_tokens:
            raise RequestTooLargeError(f"{tokens} tokens in one request, over the limit of {self.limits.max_tokens} "
                                       "(ingress.max_tokens_per_request): split it")
        try:
            return await asyncio.wait_for(self._score_encoded(units), self.limits.timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"not scored within {self.limits.timeout_s:g} s "
                                      "(ingress.request_timeout_s); its queued work was dropped") from None

    def _encode(self, records: list[list[ScoreItem]]) -> list[PlannedRecord]:
        return [PlannedRecord(items[0].id, items, self.encoder.encode_record(items)) for items in records]

    async def _score_strict(self, records: list[list[ScoreItem]]) -> list[ScoreResult]:
        """One result per item of every record, or the first failing item named in the error."""
        if not records:
            raise InvalidInputError("nothing to score")
        self._check_items(sum(len(items) for items in records))
        planned: list[PlannedRecord] = await self._on_tokenize_thread(self._encode, records)
        check_planned(planned)
        return strict_results(self.encoder, planned, await self._within_limits(pending(planned)))


def _score(result: ScoreResult) -> float:
    assert result.score is not None  # strict results have scores
    return result.score


def _item_score(result: ScoreResult) -> ItemScore:
    out = result.output
    assert out is not None
    return ItemScore(score=out.score, num_tokens=result.num_tokens, truncated=result.truncated, logits=out.logits,
                     values=out.values, step_scores=out.step_scores, rationale=out.rationale)


def _items(records: Iterable[AnyRecord]) -> list[list[ScoreItem]]:
    return [expand_record(str(i), record) for i, record in enumerate(records)]


def _inputs(inputs: Iterable[Union[str, list[int]]], add_special_tokens: bool) -> list[list[ScoreItem]]:
    """Templated texts or token-id lists, one item each."""
    # Not through TextRecord: an empty text is the encoder's ItemError (400), like any unscorable item.
    return [[ScoreItem(str(i), 0, text=t, add_special_tokens=add_special_tokens) if isinstance(t, str)
             else ScoreItem(str(i), 0, input_ids=tuple(t))] for i, t in enumerate(inputs)]


def _validate(adapter: TypeAdapter[Any], value: Any, name: str) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as err:
        raise invalid_input(err, prefix=(name,)) from None


def _activate(logits: list[float]) -> list[float]:
    """vLLM's classify activation: sigmoid for one label, softmax for several."""
    if len(logits) == 1:
        return [1.0 / (1.0 + math.exp(-logits[0]))]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]
