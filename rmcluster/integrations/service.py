"""The one client layer every trainer adapter uses: a Serve handle or an HTTP URL, awaited from async code.

The sync clients in `rmcluster.client` already chunk, bound the requests in flight, retry and time out;
this runs them off the caller's event loop and keeps the figures a trainer logs (latency, retries).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field

from ..client import HandleRewardClient, RetryPolicy, RewardClient

T = TypeVar("T")
Client = Union[HandleRewardClient, RewardClient]
Messages = list[dict[str, Any]]


class ServiceSettings(BaseModel):
    """Where the reward service is and how to call it; unset fields take the client's own defaults."""

    model_config = ConfigDict(extra="forbid")

    app_name: str = Field("reward", description="Serve app to call through a handle (inside the Ray cluster).")
    url: Optional[str] = Field(None, description="HTTP base URL instead of a handle, e.g. http://rm:8000.")
    chunk_size: Optional[int] = Field(None, gt=0, description="Items per request.")
    max_in_flight: Optional[int] = Field(None, gt=0, description="Requests in flight per call.")
    timeout_s: Optional[float] = Field(None, gt=0, description="Per request.")
    max_retries: Optional[int] = Field(None, ge=0, description="Retries of an overloaded or unreachable service.")
    one_hop: Optional[bool] = Field(None, description="Handle only: tokenize in the caller (default: where it can).")
    api_key: Optional[str] = Field(None, description="HTTP only, for a service with ingress.api_keys "
                                   "(default: the RMCLUSTER_API_KEY environment variable).", repr=False)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "ServiceSettings":
        """For adapters a trainer loads by file path: RMCLUSTER_SERVICE (JSON of these fields), or
        RMCLUSTER_APP / RMCLUSTER_URL alone."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = json.loads(env["RMCLUSTER_SERVICE"]) if env.get("RMCLUSTER_SERVICE") else {}
        for key, name in (("app_name", "RMCLUSTER_APP"), ("url", "RMCLUSTER_URL")):
            if env.get(name):
                values[key] = env[name]
        return cls.model_validate(values)

    def make_client(self) -> Client:
        kwargs: dict[str, Any] = self.model_dump(include={"chunk_size", "max_in_flight", "timeout_s"}, exclude_none=True)
        if self.max_retries is not None:
            kwargs["retry"] = RetryPolicy(max_retries=self.max_retries)
        if self.url is not None:
            return RewardClient(self.url, api_key=self.api_key, **kwargs)
        return HandleRewardClient(self.app_name, one_hop=self.one_hop, **kwargs)


class RewardService:
    """Async scoring for trainer adapters. `metrics()` gives what to log: the last call's latency, retries."""

    def __init__(self, settings: Union[ServiceSettings, Mapping[str, Any], None] = None, client: Optional[Client] = None):
        self.settings = settings if isinstance(settings, ServiceSettings) else ServiceSettings.model_validate(settings or {})
        self._client = client
        self._lock = threading.Lock()
        self.calls = self.items = 0
        self.last_latency_s = self.total_latency_s = 0.0

    @property
    def client(self) -> Client:
        with self._lock:  # made on first use: in the trainer's actor, not where the adapter was pickled
            if self._client is None:
                self._client = self.settings.make_client()
            return self._client

    async def score_groups(self, groups: Sequence[dict[str, Any]]) -> list[list[float]]:
        """Scores per {"prompt", "responses"} record: a GRPO group's shared prompt runs once."""
        return await asyncio.to_thread(self.score_groups_sync, groups)

    async def score_by_prompt(self, samples: Sequence[tuple[Messages, Any]]) -> list[float]:
        """One score per (prompt messages, response) sample; samples with equal prompts go as one group."""
        return await asyncio.to_thread(self.score_by_prompt_sync, samples)

    async def score_conversations(self, conversations: Sequence[Messages]) -> list[float]:
        return await asyncio.to_thread(self.score_conversations_sync, conversations)

    async def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Texts already templated with the RM's chat template (OpenRLHF's queries)."""
        return await asyncio.to_thread(self.score_texts_sync, texts)

    # The same, blocking: for trainers that call from worker threads or sync actor methods.
    def score_groups_sync(self, groups: Sequence[dict[str, Any]]) -> list[list[float]]:
        n = sum(len(g["responses"]) for g in groups)
        return self._timed(n, lambda: self.client.score_responses(groups)) if groups else []

    def score_by_prompt_sync(self, samples: Sequence[tuple[Messages, Any]]) -> list[float]:
        groups: dict[str, tuple[Messages, list[int]]] = {}
        for i, (prompt, _) in enumerate(samples):
            groups.setdefault(json.dumps(prompt, sort_keys=True), (prompt, []))[1].append(i)
        records = [{"prompt": prompt, "responses": [samples[i][1] for i in at]} for prompt, at in groups.values()]
        out = [0.0] * len(samples)
        for (_, at), scores in zip(groups.values(), self.score_groups_sync(records)):
            for i, score in zip(at, scores):
                out[i] = score
        return out

    def score_conversations_sync(self, conversations: Sequence[Messages]) -> list[float]:
        return self._timed(len(conversations), lambda: self.client.score(conversations)) if conversations else []

    def score_texts_sync(self, texts: Sequence[str]) -> list[float]:
        return self._timed(len(texts), lambda: self.client.score_texts(texts)) if texts else []

    def _timed(self, n: int, call: Callable[[], T]) -> T:
        start = time.perf_counter()
        out = call()
        with self._lock:
            self.last_latency_s = time.perf_counter() - start
            self.total_latency_s += self.last_latency_s
            self.calls += 1
            self.items += n
        return out

    @property
    def retries(self) -> int:
        return self.client.retry.retries if self._client is not None else 0

    def metrics(self, prefix: str = "rmcluster/") -> dict[str, float]:
        """Scalars for a trainer's logger."""
        return {f"{prefix}score_latency_s": self.last_latency_s, f"{prefix}retries": float(self.retries),
                f"{prefix}scored_items": float(self.items)}

    def close(self) -> None:
        if isinstance(self._client, RewardClient):
            self._client.close()
