"""HTTP routing: endpoints, request and response models, and the status code of every error.

`build_router` returns a FastAPI app over a `ScoringService`; the ingress deployment serves it.
Nothing here scores or tokenizes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rmcluster import __version__
from rmcluster.protocol import (
    ClassifyRequest, ClassifyResponse, ErrorResponse, GetRewardRequest, GetRewardResponse, HealthResponse,
    ModelCard, ModelList, ScoreRequest, ScoreResponse, ScoringError, invalid_input_at,
)

from .api_keys import ApiKeyAuth, KeySet
from .body_limit import BodySizeLimit
from .errors import error_json, scoring_error_json
from .serving import ScoringService

log = logging.getLogger("ray.serve")

_ERRORS = {
    400: {"model": ErrorResponse, "description": "An item is over max_length (on_overflow: error) or unscorable, "
          "or the body is not parseable (e.g. not UTF-8)."},
    401: {"model": ErrorResponse, "description": "ingress.api_keys is set and no valid `Authorization: Bearer` key "
          "came with the request."},
    408: {"model": ErrorResponse, "description": "Not done within ingress.request_timeout_s; its queued work was dropped."},
    413: {"model": ErrorResponse, "description": "Body over the size limit, or more items or tokens than one request "
          "may carry."},
    422: {"model": ErrorResponse, "description": "Invalid request; names the failing item and field."},
    503: {"model": ErrorResponse, "description": "Overloaded; retry after the Retry-After header's seconds."},
}


HEALTH_TIMEOUT_S = 10.0


def build_router(service: ScoringService, *, max_body_bytes: int, health: Callable[[], Awaitable[None]],
                 api_keys: Optional[KeySet] = None) -> FastAPI:
    app = FastAPI(
        title="rmcluster reward model",
        version=__version__,
        description="Reward-model scores (raw logits) with exact parity to the per-conversation HF loop.",
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if api_keys is not None:  # added last, so it runs first: no body is read for a caller without a key
        app.add_middleware(ApiKeyAuth, keys=api_keys)

    @app.post("/v1/score", response_model=ScoreResponse, responses=_ERRORS)
    async def score(request: ScoreRequest) -> ScoreResponse:
        """Score conversations, a prompt's responses (best-of-N) or a preference pair."""
        return await service.score(request)

    @app.post("/get_reward", response_model=GetRewardResponse, responses=_ERRORS)
    async def get_reward(request: GetRewardRequest) -> GetRewardResponse:
        """OpenRLHF `--remote_rm_url` drop-in: already-templated texts in, rewards out."""
        return await service.get_reward(request)

    @app.post("/classify", response_model=ClassifyResponse, responses=_ERRORS)
    async def classify(request: ClassifyRequest) -> ClassifyResponse:
        """vLLM pooling-API drop-in (as veRL's reward loop calls it); raw logits unless use_activation."""
        return await service.classify(request)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=service.model_name, max_model_len=service.max_length)])

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
    async def healthz() -> HealthResponse | JSONResponse:
        """200 when a model replica answers within the timeout, else 503."""
        try:
            await asyncio.wait_for(health(), timeout=HEALTH_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - any failure means not healthy
            return error_json(503, "unavailable", f"model replicas not answering: {type(err).__name__}: {err}")
        return HealthResponse(model=service.model_name)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        worst = max(errors, key=lambda e: len(e.get("loc", ())))
        return scoring_error_json(invalid_input_at(tuple(worst.get("loc", ())), worst.get("msg", "invalid"),
                                                   len(errors)))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body it cannot parse, 404, 405) in the documented error shape, not {"detail"}.
        kind = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_json(exc.status_code, kind, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(ScoringError)
    async def _scoring_error(_: Request, exc: ScoringError) -> JSONResponse:
        return scoring_error_json(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return error_json(500, "internal_error", f"{type(exc).__name__}: {exc}")

    return app
