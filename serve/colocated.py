"""One deployment that serves HTTP and holds the model: `ingress.colocated: true`.

The separate ingress costs every request a second replica's request handling and a hop between
processes; on a small CPU box that work takes the cores the forward needs. Here the model replica
parses, tokenizes (on its tokenize thread) and answers HTTP itself, and its own batch queue merges
the requests. The trade: no separate scaling of tokenizing, and no spreading of one big request over
several model replicas (each request is scored where it arrived).
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from rmcluster.config import RMConfig
from rmcluster.scorers import build_encoder

from .api_keys import KeySet
from .args import IngressArgs
from .handle_api import HandleApi
from .metrics import IngressMetrics
from .model_server import RewardModelServer
from .router import build_router
from .serving import RequestLimits, ScoringService


class RewardServer(HandleApi, RewardModelServer):
    def __init__(self, model_rm: RMConfig, torch_threads: Optional[int], rm: RMConfig, settings: IngressArgs):
        RewardModelServer.__init__(self, model_rm, torch_threads)
        self._rm = rm
        self._settings = settings
        limits = RequestLimits(settings.max_items_per_request, settings.max_tokens_per_request,
                               settings.request_timeout_s)
        self.service = ScoringService(build_encoder(rm), self.score_encoded, rm.model.name,
                                      on_tokenize=IngressMetrics(rm.model.name).tokenize.observe, limits=limits)
        self._api_keys = KeySet(settings.api_keys) if settings.api_keys is not None else None

    def __serve_build_asgi_app__(self) -> Any:
        return build_router(self.service, max_body_bytes=self._settings.max_body_bytes, health=self.health,
                            api_keys=self._api_keys)

    async def client_config(self) -> dict:
        """What a handle client needs to tokenize in its own process and call this deployment itself."""
        from ray import serve

        return {"rm": self._rm.model_dump(mode="json"),
                "model_deployment": serve.get_replica_context().deployment}

    async def health(self) -> None:
        """Raises unless this replica's engine can serve; off the event loop (on CUDA it synchronizes)."""
        await asyncio.get_running_loop().run_in_executor(None, self.engine.health)
