"""Serving logic: wire requests -> items -> token ids -> scores -> wire responses.

No HTTP and no Ray here: the service is given an async `score_encoded` function (the ingress
passes one that calls the model deployment) and raises the typed errors of `rmcluster.protocol`.
`serve/router.py` maps them to status codes; handle callers catch them as they are.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Optional, Sequence

from pydantic import TypeAdapter, ValidationError

from rmcluster.engine import ScoreResult
from rmcluster.pipeline import score_records
from rmcluster.protocol import (
    ClassifyData, ClassifyRequest, ClassifyResponse, ClassifyUsage, GetRewardRequest, GetRewardResponse,
    InvalidInputError, ItemRejectedError, ItemScore, PairRecord, ResponsesRecord, ScoreRequest, ScoreResponse,
    ScoringFailedError, Usage, invalid_input,
)
from rmcluster.records import ConversationRecord, Messages, ScoreItem, expand_record
from rmcluster.scorers import Encoded, encode_each
from rmcluster.templating import ChatTokenizer, EncodedItem

ScoreEncoded = Callable[[list[EncodedItem]], Awaitable[list[ScoreResult]]]

_CONVERSATIONS = TypeAdapter(list[Messages])
_PAIRS = TypeAdapter(list[PairRecord])
_GROUPS = TypeAdapter(list[ResponsesRecord])


class ScoringService:
    """Every entry point of the API, HTTP or handle, over one encoder and one remote model."""

    def __init__(self, encoder: ChatTokenizer, score_encoded: ScoreEncoded, model_name: str,
                 on_tokenize: Optional[Callable[[float], None]] = None):
        self.encoder = encoder
        self.model_name = model_name
        self.max_length = encoder.max_length
        self._score_encoded = score_encoded
        self._on_tokenize = on_tokenize
        # Tokenizing is CPU work: off the event loop, and on one thread because a Rust-backed
        # tokenizer shared across threads can fail with "Already borrowed".
        self._tokenize_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rm-tokenize")
        self._bos_prefix = _special_prefix(encoder.tokenizer)

    # -- HTTP shapes ---------------------------------------------------------------------------------
    async def score(self, request: ScoreRequest) -> ScoreResponse:
        if request.conversations is not None:
            records: list[Any] = [ConversationRecord(messages=c) for c in request.conversations]
        elif request.responses is not None:
            records = [ResponsesRecord(prompt=request.prompt, responses=request.responses)]
        else:
            records = [PairRecord(prompt=request.prompt, chosen=request.chosen, rejected=request.rejected)]
        results = await self._score_strict(_expand(records))
        tokens = sum(r.num_tokens for r in results)
        return ScoreResponse(
            model=self.model_name,
            scores=[r.score for r in results],
            results=[ItemScore(score=r.score, num_tokens=r.num_tokens, truncated=r.truncated, logits=r.logits)
                     for r in results],
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def get_reward(self, request: GetRewardRequest) -> GetRewardResponse:
        # OpenRLHF sends the policy's decoded text, chat template and BOS included: tokenized with
        # add_special_tokens=False so BOS is not doubled.
        results = await self._score_strict(_texts(request.query))
        scores = [r.score for r in results]
        return GetRewardResponse(
            rewards=scores, scores=scores,
            extra_logs={"num_tokens": [float(r.num_tokens) for r in results],
                        "truncated": [float(r.truncated) for r in results]},
        )

    async def classify(self, request: ClassifyRequest) -> ClassifyResponse:
        if request.messages is not None:
            items = _expand([ConversationRecord(messages=request.messages)])
        else:
            texts = [request.input] if isinstance(request.input, str) else request.input
            # vLLM adds the tokenizer's BOS to `input` by default (veRL strips its own BOS for that
            # reason); the encoder keeps exactly one BOS if the text already has it.
            prefix = self._bos_prefix if request.add_special_tokens else ""
            items = _texts(prefix + t for t in texts)
        results = await self._score_strict(items)
        tokens = sum(r.num_tokens for r in results)
        data = []
        for i, r in enumerate(results):
            probs = _activate(r.logits) if request.activate else list(r.logits)
            label = max(range(len(probs)), key=probs.__getitem__)
            data.append(ClassifyData(index=i, label=f"LABEL_{label}", probs=probs, num_classes=len(probs)))
        return ClassifyResponse(model=self.model_name, data=data,
                                usage=ClassifyUsage(prompt_tokens=tokens, total_tokens=tokens))

    # -- handle API (what trainers call on the app handle) ---------------------------------------------
    async def score_conversations(self, conversations: Any) -> list[float]:
        convs = _validate(_CONVERSATIONS, conversations, "conversations")
        if not convs:  # a trainer's empty batch
            return []
        results = await self._score_strict(_expand(ConversationRecord(messages=c) for c in convs))
        return [r.score for r in results]

    async def score_pairs(self, pairs: Any) -> list[list[float]]:
        """[[chosen, rejected], ...] for [{"prompt", "chosen", "rejected"}, ...]."""
        records = _validate(_PAIRS, pairs, "pairs")
        if not records:
            return []
        scores = [r.score for r in await self._score_strict(_expand(records))]
        return [scores[i : i + 2] for i in range(0, len(scores), 2)]

    async def score_responses(self, groups: Any) -> list[list[float]]:
        """One list of scores per {"prompt", "responses"} group, in response order."""
        records = _validate(_GROUPS, groups, "groups")
        if not records:
            return []
        scores = iter(r.score for r in await self._score_strict(_expand(records)))
        return [[next(scores) for _ in g.responses] for g in records]

    async def score_records(self, records: Sequence[Any]) -> list[dict]:
        """Result rows exactly as `rmcluster.pipeline.score_records` makes them in-process.

        It is that very function, run on a worker thread over an engine stand-in whose
        `score_items` tokenizes here and scores on the model deployment. Bad records and items
        become error rows; nothing raises for bad input.
        """
        loop = asyncio.get_running_loop()
        engine = _RemoteEngine(self, loop)
        return await asyncio.to_thread(score_records, engine, list(records))

    # -- core ------------------------------------------------------------------------------------------
    async def encode(self, items: Sequence[ScoreItem]) -> list[Encoded]:
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_thread, self._encode_all, items)

    def _encode_all(self, items: Sequence[ScoreItem]) -> list[Encoded]:
        start = time.perf_counter()
        out = encode_each(self.encoder, items)
        if self._on_tokenize is not None:
            self._on_tokenize(time.perf_counter() - start)
        return out

    async def score_lenient(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """Per-item failures become failed results in place, as `ScoringEngine.score_items` does."""
        encoded = await self.encode(items)
        good = [e for e in encoded if isinstance(e, EncodedItem)]
        scored = iter(await self._score_encoded(good) if good else [])
        return [next(scored) if isinstance(e, EncodedItem) else ScoreResult.failed(e) for e in encoded]

    async def _score_strict(self, items: list[ScoreItem]) -> list[ScoreResult]:
        """All items scored, or the first failing item named in the error."""
        if not items:
            raise InvalidInputError("nothing to score")
        encoded = await self.encode(items)
        for i, e in enumerate(encoded):
            if not isinstance(e, EncodedItem):
                raise ItemRejectedError(f"item {i}: {e}", item=i)
        results = await self._score_encoded(encoded)  # type: ignore[arg-type]
        for i, r in enumerate(results):
            if r.error is not None:
                raise ScoringFailedError(f"item {i}: scoring failed: {r.error}", item=i)
        return results


class _RemoteEngine:
    """What `pipeline.score_records` needs of an engine, served by the model deployment.

    It is called on a worker thread and hands the async work back to the event loop.
    """

    def __init__(self, service: ScoringService, loop: asyncio.AbstractEventLoop):
        self._service, self._loop = service, loop
        self.model_name = service.model_name

    def score_items(self, items: Sequence[ScoreItem], on_batch: Any = None) -> list[ScoreResult]:
        return asyncio.run_coroutine_threadsafe(self._service.score_lenient(items), self._loop).result()


def _expand(records: Any) -> list[ScoreItem]:
    return [item for i, record in enumerate(records) for item in expand_record(str(i), record)]


def _texts(texts: Any) -> list[ScoreItem]:
    # Not through TextRecord: an empty text is the encoder's ItemError (400), like any unscorable item.
    return [ScoreItem(str(i), 0, text=t) for i, t in enumerate(texts)]


def _validate(adapter: TypeAdapter, value: Any, name: str) -> Any:
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


def _special_prefix(tokenizer: Any) -> str:
    """The text of the special tokens the tokenizer puts before a plain text (its BOS), or ''."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos:
        return ""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    return bos if with_special[:1] == [tokenizer.bos_token_id] and plain[:1] != [tokenizer.bos_token_id] else ""
