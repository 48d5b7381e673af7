"""Clients for the reward-model Serve app, for RL trainers and scripts.

    RewardClient("http://host:8000").score(conversations)      # HTTP (needs httpx)
    HandleRewardClient("reward").score(conversations)          # DeploymentHandle, inside the Ray cluster

Both split big inputs into chunks, keep a bounded number of chunks in flight, retry with
exponential backoff when the server is overloaded (HTTP 503 / BackPressureError), unreachable, or
lost the replica mid-request, and return scores in input order. Bad input raises
`rmcluster.protocol.InvalidInputError` (422) or `ItemRejectedError` (400) with `item` indexing the
caller's full list. Importing this module is cheap: httpx and ray are imported when a client is made.
"""

from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence, TypeVar

from .protocol import (
    ErrorResponse, GetRewardResponse, InvalidInputError, ItemRejectedError, RequestTimeoutError, RequestTooLargeError, ScoreResponse,
    ScoringError, ScoringFailedError, ServiceOverloadedError, UnauthorizedError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_ERRORS_BY_STATUS: dict[int, type[ScoringError]] = {
    422: InvalidInputError, 400: ItemRejectedError, 503: ServiceOverloadedError, 413: RequestTooLargeError,
    408: RequestTimeoutError, 401: UnauthorizedError}
_HANDLE_METHODS = {"conversations": "score", "pairs": "score_pairs", "groups": "score_responses",
                   "input_ids": "score_token_ids", "texts": "score_texts"}


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


Shape = Literal["conversations", "pairs", "groups", "input_ids", "texts"]


def _items_in(shape: Shape, record: Any) -> int:
    """Items a record scores, as the server expands it (a malformed record counts one: the server says why)."""
    if shape == "pairs":
        return 2
    if shape == "groups" and isinstance(record, dict) and isinstance(record.get("responses"), list):
        return max(1, len(record["responses"]))
    return 1


@dataclass(frozen=True)
class _Chunk:
    first_item: int  # index in the caller's list of the chunk's first item, and of its first record
    first_record: int
    records: list[Any]

    def caller_index(self, error: ScoringError) -> Optional[int]:
        """The failing item's (422: record's) index in the caller's full list, not in the chunk."""
        if error.item is None:
            return None
        return error.item + (self.first_record if isinstance(error, InvalidInputError) else self.first_item)


def _chunks(shape: Shape, records: Sequence[Any], max_items: int) -> list[_Chunk]:
    """Chunks of at most `max_items` items each (a record with more goes alone)."""
    chunks: list[_Chunk] = []
    item = items = 0
    for k, record in enumerate(records):
        n = _items_in(shape, record)
        if chunks and items + n <= max_items:
            chunks[-1].records.append(record)
            items += n
        else:
            chunks.append(_Chunk(item, k, [record]))
            items = n
        item += n
    return chunks


def _regroup(shape: Shape, records: Sequence[Any], scores: list[float]) -> list[list[float]]:
    out, at = [], 0
    for record in records:
        n = _items_in(shape, record)
        out.append(scores[at : at + n])
        at += n
    return out


class _ChunkedScorer:
    """Shared by both clients: chunking, bounded concurrency and the request shapes.

    Pairs and groups travel as records (never flattened into conversations), so the server sees
    their structure: shared prompts, and judges that compare the responses of one record.
    """

    chunk_size: int
    max_in_flight: int

    def _score_chunk(self, shape: Shape, chunk: _Chunk) -> list[float]:
        """Scores of the chunk's items, in order; errors name items by their index in the caller's list."""
        raise NotImplementedError

    def _score(self, shape: Shape, records: Sequence[Any]) -> list[float]:
        chunks = _chunks(shape, list(records), self.chunk_size)
        if len(chunks) <= 1:
            return [s for c in chunks for s in self._score_chunk(shape, c)]
        with ThreadPoolExecutor(min(self.max_in_flight, len(chunks))) as pool:
            parts = list(pool.map(lambda c: self._score_chunk(shape, c), chunks))
        return [s for part in parts for s in part]

    def score(self, conversations: Sequence[list[dict[str, Any]]]) -> list[float]:
        """One score (the raw reward) per conversation, in order."""
        return self._score("conversations", conversations)

    def score_token_ids(self, token_ids: Sequence[Sequence[int]]) -> list[float]:
        """One score per token-id list, already templated with the reward model's chat template (a trainer
        that shares the RM's tokenizer skips the text round-trip); scored as given."""
        return self._score("input_ids", [list(ids) for ids in token_ids])

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """One score per text already templated with the reward model's chat template (BOS included, as
        OpenRLHF's queries are); tokenized with no special tokens added."""
        return self._score("texts", list(texts))

    def score_pairs(self, pairs: Sequence[dict[str, Any]]) -> list[list[float]]:
        """[chosen, rejected] per {"prompt", "chosen", "rejected"} (prompt/response: str or messages)."""
        return _regroup("pairs", pairs, self._score("pairs", pairs))

    def score_responses(self, groups: Sequence[dict[str, Any]]) -> list[list[float]]:
        """Scores per {"prompt", "responses": [...]} group, in response order."""
        return _regroup("groups", groups, self._score("groups", groups))


class RewardClient(_ChunkedScorer):
    """HTTP client for `POST /v1/score`. Thread-safe; reuse one per process.

    `api_key` (default: the RMCLUSTER_API_KEY environment variable) goes as `Authorization: Bearer`, for a
    service with ingress.api_keys set; a missing or wrong key raises UnauthorizedError (not retried).
    """

    def __init__(self, url: str, *, chunk_size: int = 64, max_in_flight: int = 8, timeout_s: float = 180.0,
                 retry: Optional[RetryPolicy] = None, api_key: Optional[str] = None):
        import httpx

        self.url = url.rstrip("/")
        self.chunk_size, self.max_in_flight = chunk_size, max_in_flight
        self.retry = retry or RetryPolicy()
        limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        api_key = api_key if api_key is not None else os.environ.get("RMCLUSTER_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, limits=limits, headers=headers)
        self._httpx = httpx

    def _score_chunk(self, shape: Shape, chunk: _Chunk) -> list[float]:
        def call() -> list[float]:
            if shape == "texts":  # /v1/score takes no texts; /get_reward scores them the same way
                response = self._http.post("/get_reward", json={"query": chunk.records})
            else:
                response = self._http.post("/v1/score", json={shape: chunk.records})
            if response.status_code != 200:
                raise _http_error(response, chunk)
            if shape == "texts":
                return GetRewardResponse.model_validate_json(response.content).rewards
            return ScoreResponse.model_validate_json(response.content).scores

        return self.retry.run(call, self._retryable)

    def _retryable(self, err: BaseException) -> Optional[float]:
        if isinstance(err, ServiceOverloadedError):
            return err.retry_after_s
        if isinstance(err, ProxyError):
            return 0.0
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


class ProxyError(ScoringFailedError):
    """A proxy in front of the app answered 500/502/504 for it, not in this API's error shape: the request's
    replica went away mid-request (Serve's Python proxy answers a replica killed under it with a bare 500; a
    load balancer may answer 502 or 504). Scoring is idempotent, so the HTTP client sends the request again."""


# The app's own errors carry its error shape, and are final; a bare one of these came from a proxy.
_PROXY_STATUSES = (500, 502, 504)


def _http_error(response: Any, chunk: _Chunk) -> ScoringError:
    try:
        body = ErrorResponse.model_validate_json(response.content).error
        message, item, field = body.message, body.item, body.field
        ours = True
    except Exception:  # noqa: BLE001 - a proxy's plain-text error page
        message, item, field = response.text or response.reason_phrase, None, None
        ours = False
    cls = _ERRORS_BY_STATUS.get(response.status_code, ScoringFailedError)
    if not ours and response.status_code in _PROXY_STATUSES:
        cls = ProxyError
    if cls is ServiceOverloadedError:
        return ServiceOverloadedError(message, retry_after_s=float(response.headers.get("retry-after") or 1))
    error: ScoringError = cls(f"HTTP {response.status_code}: {message}", item=item, field=field)
    error.item = chunk.caller_index(error)
    error.status_code = response.status_code
    return error


class _OneHop:
    """Tokenize in the caller's process with the app's own config, then call the model deployment itself:
    trainer -> model replica, instead of trainer -> ingress -> model replica."""

    def __init__(self, ingress: Any, app_name: str, timeout_s: float):
        from ray import serve

        from .config import RMConfig
        from .scorers import build_encoder

        info = ingress.client_config.remote().result(timeout_s=timeout_s)
        self.encoder = build_encoder(RMConfig.model_validate(info["rm"]))
        self.model = serve.get_deployment_handle(info["model_deployment"], app_name)

    def score(self, shape: Shape, records: Sequence[Any], timeout_s: float) -> list[float]:
        from .pipeline import check_planned, pending, plan_records, strict_results

        planned = plan_records(self.encoder, [_as_record(shape, r) for r in records])
        check_planned(planned)  # the same errors, and item indices, as the ingress raises
        units = pending(planned)
        results = self.model.score_encoded.remote(units).result(timeout_s=timeout_s) if units else []
        return [r.score for r in strict_results(self.encoder, planned, results)]  # type: ignore[misc]


def _as_record(shape: Shape, value: Any) -> Any:
    if shape == "conversations":
        return {"messages": value}
    if shape == "input_ids":
        return {"input_ids": value}
    if shape == "texts":
        return {"text": value}
    return value


class HandleRewardClient(_ChunkedScorer):
    """The same over a DeploymentHandle, from any Ray driver, task or actor (sync methods).

    With `one_hop` (default: where the app's tokenizer loads in this process), the client tokenizes here
    and calls the model deployment directly; the ingress is left for HTTP. `one_hop=False` sends every
    request through the ingress. In an async actor, await the handle directly:
    `await serve.get_app_handle(app).score.remote(convs)`.
    """

    def __init__(self, app_name: str = "reward", *, chunk_size: int = 64, max_in_flight: int = 8,
                 timeout_s: float = 180.0, retry: Optional[RetryPolicy] = None, one_hop: Optional[bool] = None):
        from ray import serve
        from ray.serve.exceptions import BackPressureError

        self.app_name = app_name
        self.chunk_size, self.max_in_flight, self.timeout_s = chunk_size, max_in_flight, timeout_s
        self.retry = retry or RetryPolicy()
        try:
            self._handle = serve.get_app_handle(app_name)
        except Exception as err:  # noqa: BLE001 - say how to reach the cluster where the app runs
            raise RuntimeError(f"no Serve app {app_name!r} here: {err}. A script beside `serve run` joins its "
                               "cluster with ray.init(address='auto') (RAY_ADDRESS for a remote one).") from err
        self._backpressure = BackPressureError
        # A replica that died or is being replaced mid-request: scoring is idempotent, so send it again.
        self._replica_gone = replica_gone_errors()
        self._one_hop: Optional[_OneHop] = None
        if one_hop is not False:
            try:
                self._one_hop = _OneHop(self._handle, app_name, timeout_s)
            except Exception as err:  # noqa: BLE001 - e.g. the model's files are not on this node
                if one_hop:
                    raise
                log.info("HandleRewardClient: tokenizing on the ingress (%s: %s)", type(err).__name__, err)

    @property
    def hops(self) -> int:
        """1: tokenizes here and calls the model deployment, or the app is `ingress.colocated` (its handle
        is the model deployment); 2: through a separate ingress. Asks the app when this client does not
        tokenize itself."""
        if self._one_hop is not None:
            return 1
        info = self._handle.client_config.remote().result(timeout_s=self.timeout_s)
        return 1 if info["model_deployment"] == self._handle.deployment_name else 2

    def _score_chunk(self, shape: Shape, chunk: _Chunk) -> list[float]:
        method = getattr(self._handle, _HANDLE_METHODS[shape])

        def call() -> list[float]:
            try:
                if self._one_hop is not None:
                    return self._one_hop.score(shape, chunk.records, self.timeout_s)
                scores = method.remote(chunk.records).result(timeout_s=self.timeout_s)
                nested = shape in ("pairs", "groups")
                return [s for part in scores for s in part] if nested else list(scores)
            except TimeoutError as err:
                raise TimeoutError(f"no answer from Serve app {self.app_name!r} within {self.timeout_s:g} s. "
                                   f"{app_problems(self.app_name)}") from err
            except ScoringError as err:  # re-index the failing item into the caller's full list
                if err.item is None or isinstance(err, ServiceOverloadedError):
                    raise
                cls = _ERRORS_BY_STATUS.get(err.status_code, ScoringFailedError)
                raise cls(err.message, item=chunk.caller_index(err), field=err.field) from None

        return self.retry.run(call, self._retryable)

    def _retryable(self, err: BaseException) -> Optional[float]:
        if isinstance(err, ServiceOverloadedError):  # the model deployment's queue is full
            return err.retry_after_s
        if isinstance(err, self._backpressure):  # the ingress's queue (this caller's router) is full
            return err.retry_after_s or 0.0
        if isinstance(err, self._replica_gone):
            return 0.0
        return None

    def score_records(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Result rows as `rmcluster.pipeline.score_records` makes them; bad input becomes error rows."""
        return self.retry.run(lambda: self._handle.score_records.remote(list(records)).result(
            timeout_s=self.timeout_s), self._retryable)


def replica_gone_errors() -> tuple[type[BaseException], ...]:
    """What a Serve call raises when its replica died or is being replaced (Ray imported on call)."""
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    return (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)


def app_problems(app_name: str) -> str:
    """What Serve says about an app that does not answer: most often a replica that cannot be scheduled."""
    try:
        from ray import serve

        app = serve.status().applications.get(app_name)
    except Exception as err:  # noqa: BLE001 - the status is a hint, never the error itself
        return f"(Serve status unavailable: {err})"
    if app is None:
        return f"Serve has no application {app_name!r}."
    notes = [f"{name}: {getattr(d.status, 'value', d.status)}: {d.message}" for name, d in app.deployments.items()
             if getattr(d.status, "value", d.status) != "HEALTHY" and d.message]
    if not notes:
        return f"The app is {app.status}; its replicas are busy (raise timeout_s, or add replicas)."
    return ("Serve says: " + "; ".join(notes) + " A replica that cannot be scheduled needs the resource it names: "
            "lower model_server.num_cpus / num_gpus in the app's config, or add nodes (`ray status` shows what is free).")
