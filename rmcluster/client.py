"""Clients for the reward-model Serve app, for RL trainers and scripts.

    RewardClient("http://host:8000").score(conversations)      # HTTP (needs httpx)
    HandleRewardClient("reward").score(conversations)          # DeploymentHandle, inside the Ray cluster

Both split big inputs into chunks, keep a bounded number of chunks in flight, retry with
exponential backoff when the server is overloaded (HTTP 503 / BackPressureError) or unreachable,
and return scores in input order. Bad input raises `rmcluster.protocol.InvalidInputError` (422) or
`ItemRejectedError` (400) with `item` indexing the caller's full list. Importing this module is
cheap: httpx and ray are imported when a client is made.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence, TypeVar

from .protocol import (
    ErrorResponse, InvalidInputError, ItemRejectedError, ScoreResponse, ScoringError, ScoringFailedError,
    ServiceOverloadedError,
)
from .records import RecordError, items_from_raw

T = TypeVar("T")
_ERRORS_BY_STATUS = {422: InvalidInputError, 400: ItemRejectedError, 503: ServiceOverloadedError}


class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After is honoured when it is longer."""

    def __init__(self, max_retries: int = 8, backoff_s: float = 0.25, max_backoff_s: float = 10.0):
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.retries = 0  # retried calls so far, for a trainer's logs

    def delay(self, attempt: int, retry_after_s: Optional[float] = None) -> float:
        wait = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        return float(max(wait, min(retry_after_s or 0.0, self.max_backoff_s)))

    def run(self, call: Callable[[], T], retryable: Callable[[BaseException], Optional[float]]) -> T:
        """`retryable(err)` returns None for a final error, else the server's suggested wait (or 0)."""
        for attempt in range(self.max_retries + 1):
            try:
                return call()
            except Exception as err:
                hint = retryable(err)
                if hint is None or attempt == self.max_retries:
                    raise
                self.retries += 1
                time.sleep(self.delay(attempt, hint))
        raise AssertionError("unreachable")


def _chunks(items: Sequence[T], size: int) -> list[tuple[int, Sequence[T]]]:
    return [(i, items[i : i + size]) for i in range(0, len(items), size)]


def _expand(records: Sequence[dict[str, Any]], name: str) -> tuple[list[list[dict[str, Any]]], list[int]]:
    """Records -> their conversations, as the server expands them, and how many each has."""
    sizes: list[int] = []
    convs: list[list[dict[str, Any]]] = []
    for i, record in enumerate(records):
        try:
            items = items_from_raw({**record, "id": str(i)})
        except (RecordError, TypeError) as err:
            raise InvalidInputError(f"{name}.{i}: {err}", item=i) from None
        sizes.append(len(items))
        convs.extend(item.messages or [] for item in items)
    return convs, sizes


def _regroup(scores: list[float], sizes: Sequence[int]) -> list[list[float]]:
    out, at = [], 0
    for n in sizes:
        out.append(scores[at : at + n])
        at += n
    return out


class _ChunkedScorer:
    """Shared by both clients: chunking, bounded concurrency and the record shapes."""

    chunk_size: int
    max_in_flight: int

    def _score_chunk(self, offset: int, conversations: Sequence[list[dict[str, Any]]]) -> list[float]:
        raise NotImplementedError

    def score(self, conversations: Sequence[list[dict[str, Any]]]) -> list[float]:
        """One score (raw logit) per conversation, in order."""
        chunks = _chunks(list(conversations), self.chunk_size)
        if len(chunks) <= 1:
            return [s for off, c in chunks for s in self._score_chunk(off, c)]
        with ThreadPoolExecutor(min(self.max_in_flight, len(chunks))) as pool:
            parts = list(pool.map(lambda oc: self._score_chunk(*oc), chunks))
        return [s for part in parts for s in part]

    def score_pairs(self, pairs: Sequence[dict[str, Any]]) -> list[list[float]]:
        """[chosen, rejected] per {"prompt", "chosen", "rejected"} (prompt/response: str or messages)."""
        convs, sizes = _expand(pairs, "pairs")
        return _regroup(self.score(convs), sizes)

    def score_responses(self, groups: Sequence[dict[str, Any]]) -> list[list[float]]:
        """Scores per {"prompt", "responses": [...]} group, in response order."""
        convs, sizes = _expand(groups, "groups")
        return _regroup(self.score(convs), sizes)


class RewardClient(_ChunkedScorer):
    """HTTP client for `POST /v1/score`. Thread-safe; reuse one per process."""

    def __init__(self, url: str, *, chunk_size: int = 64, max_in_flight: int = 8, timeout_s: float = 180.0,
                 retry: Optional[RetryPolicy] = None):
        import httpx

        self.url = url.rstrip("/")
        self.chunk_size, self.max_in_flight = chunk_size, max_in_flight
        self.retry = retry or RetryPolicy()
        limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, limits=limits)
        self._httpx = httpx

    def _score_chunk(self, offset: int, conversations: Sequence[list[dict[str, Any]]]) -> list[float]:
        def call() -> list[float]:
            response = self._http.post("/v1/score", json={"conversations": list(conversations)})
            if response.status_code != 200:
                raise _http_error(response, offset)
            return ScoreResponse.model_validate_json(response.content).scores

        return self.retry.run(call, self._retryable)

    def _retryable(self, err: BaseException) -> Optional[float]:
        if isinstance(err, ServiceOverloadedError):
            return err.retry_after_s
        httpx = self._httpx
        if isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                            httpx.WriteError, httpx.PoolTimeout)):
            return 0.0
        return None

    def health(self) -> bool:
        try:
            return self._http.get("/health").status_code == 200
        except self._httpx.TransportError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RewardClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _http_error(response: Any, offset: int) -> ScoringError:
    try:
        body = ErrorResponse.model_validate_json(response.content).error
        message, item, field = body.message, body.item, body.field
    except Exception:  # noqa: BLE001 - a proxy's plain-text error page
        message, item, field = response.text or response.reason_phrase, None, None
    cls = _ERRORS_BY_STATUS.get(response.status_code, ScoringFailedError)
    item = None if item is None else item + offset  # index into the caller's full list
    if cls is ServiceOverloadedError:
        return ServiceOverloadedError(message, retry_after_s=float(response.headers.get("retry-after") or 1))
    error: ScoringError = cls(f"HTTP {response.status_code}: {message}", item=item, field=field)
    error.status_code = response.status_code
    return error


class HandleRewardClient(_ChunkedScorer):
    """The same over a DeploymentHandle, from any Ray driver, task or actor (sync methods).

    In an async actor, await the handle directly: `await serve.get_app_handle(app).score.remote(convs)`.
    """

    def __init__(self, app_name: str = "reward", *, chunk_size: int = 64, max_in_flight: int = 8,
                 timeout_s: float = 180.0, retry: Optional[RetryPolicy] = None):
        from ray import serve
        from ray.serve.exceptions import BackPressureError

        self.app_name = app_name
        self.chunk_size, self.max_in_flight, self.timeout_s = chunk_size, max_in_flight, timeout_s
        self.retry = retry or RetryPolicy()
        self._handle = serve.get_app_handle(app_name)
        self._backpressure = BackPressureError

    def _score_chunk(self, offset: int, conversations: Sequence[list[dict[str, Any]]]) -> list[float]:
        def call() -> list[float]:
            try:
                scores: list[float] = self._handle.score.remote(list(conversations)).result(timeout_s=self.timeout_s)
                return scores
            except ScoringError as err:  # re-index the failing item into the caller's full list
                if err.item is None or isinstance(err, ServiceOverloadedError):
                    raise
                cls = _ERRORS_BY_STATUS.get(err.status_code, ScoringFailedError)
                raise cls(err.message, item=err.item + offset, field=err.field) from None

        return self.retry.run(call, self._retryable)

    def _retryable(self, err: BaseException) -> Optional[float]:
        if isinstance(err, ServiceOverloadedError):  # the model deployment's queue is full
            return err.retry_after_s
        if isinstance(err, self._backpressure):  # the ingress's queue (this caller's router) is full
            return err.retry_after_s or 0.0
        return None

    def score_records(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Result rows as `rmcluster.pipeline.score_records` makes them; bad input becomes error rows."""
        return self.retry.run(lambda: self._handle.score_records.remote(list(records)).result(
            timeout_s=self.timeout_s), self._retryable)
