"""What every HTTP-serving deployment offers: the FastAPI app and the handle API
(`serve.get_app_handle(app).<method>.remote(...)`).

A mixin over a `ScoringService` (`self.service`), shared by the separate ingress and the colocated
server, so both answer HTTP and trainers' handle calls the same way.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from rmcluster.config import RMConfig
from rmcluster.scorers import build_encoder

from .api_keys import KeySet
from .args import IngressArgs
from .metrics import IngressMetrics
from .router import build_router
from .serving import RequestLimits, ScoreEncoded, ScoringService


class HandleApi:
    service: ScoringService
    _settings: IngressArgs
    _api_keys: Optional[KeySet]
    health: Callable[[], Awaitable[None]]  # each deployment's own: what /health waits for

    def _serve_requests(self, rm: RMConfig, settings: IngressArgs, score_encoded: ScoreEncoded) -> None:
        """The service (encoder, request limits, tokenize metric) and API keys, over `score_encoded`."""
        self._settings = settings
        limits = RequestLimits(settings.max_items_per_request, settings.max_tokens_per_request,
                               settings.request_timeout_s)
        self.service = ScoringService(build_encoder(rm), score_encoded, rm.model.name,
                                      on_tokenize=IngressMetrics(rm.model.name).tokenize.observe, limits=limits)
        self._api_keys = KeySet(settings.api_keys) if settings.api_keys is not None else None

    def __serve_build_asgi_app__(self) -> Any:
        return build_router(self.service, max_body_bytes=self._settings.max_body_bytes, health=self.health,
                            api_keys=self._api_keys)

    async def score(self, conversations: list[list[dict]]) -> list[float]:
        """One score per conversation (a list of {"role", "content"} messages)."""
        return await self.service.score_conversations(conversations)

    async def score_pairs(self, pairs: list[dict]) -> list[list[float]]:
        """[chosen, rejected] scores per {"prompt", "chosen", "rejected"}."""
        return await self.service.score_pairs(pairs)

    async def score_responses(self, groups: list[dict]) -> list[list[float]]:
        """Scores per {"prompt", "responses": [...]} group, in response order."""
        return await self.service.score_responses(groups)

    async def score_token_ids(self, token_ids: list[list[int]]) -> list[float]:
        """One score per token-id list, already templated with the model's chat template."""
        return await self.service.score_token_ids(token_ids)

    async def score_texts(self, texts: list[str]) -> list[float]:
        """One score per already-templated text (chat template and BOS included, as /get_reward takes)."""
        return await self.service.score_texts(texts)

    async def score_records(self, records: list[dict]) -> list[dict]:
        """Result rows as `rmcluster.pipeline.score_records` makes them (id, index, label, score, ..., model)."""
        return await self.service.score_records(records)
