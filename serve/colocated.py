"""One deployment that serves HTTP and holds the model: `ingress.colocated: true`.

The separate ingress costs every request a second replica's request handling and a hop between
processes; on a small CPU box that work takes the cores the forward needs. Here the model replica
parses, tokenizes (on its tokenize thread) and answers HTTP itself, and its own batch queue merges
the requests. The trade: no separate scaling of tokenizing, and no spreading of one big request over
several model replicas (each request is scored where it arrived).
"""

from __future__ import annotations

import asyncio
from typing import Optional

from rmcluster.config import RMConfig

from .args import IngressArgs
from .handle_api import HandleApi
from .model_server import RewardModelServer


class RewardServer(HandleApi, RewardModelServer):
    def __init__(self, model_rm: RMConfig, torch_threads: Optional[int], rm: RMConfig, settings: IngressArgs):
        RewardModelServer.__init__(self, model_rm, torch_threads)
        self._rm = rm
        self._serve_requests(rm, settings, self.score_encoded)

    async def client_config(self) -> dict:
        """What a handle client needs to tokenize in its own process and call this deployment itself."""
        from ray import serve

        return {"rm": self._rm.model_dump(mode="json"),
                "model_deployment": serve.get_replica_context().deployment}

    async def health(self) -> None:
        """Raises unless this replica's engine can serve; off the event loop (on CUDA it synchronizes)."""
        await asyncio.get_running_loop().run_in_executor(None, self.engine.health)
