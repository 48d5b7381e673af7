"""The ingress deployment: HTTP (FastAPI) and handle entry point, tokenizer, fan-out to model replicas.

A plain class; `serve.app.build_app` wraps it with `serve.ingress()` and `serve.deployment`. It
tokenizes on CPU here, so model replicas only run forward passes, and splits big requests into
chunks that the router spreads over model replicas.
"""

from __future__ import annotations

import asyncio

from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from rmcluster.client import replica_gone_errors
from rmcluster.config import RMConfig
from rmcluster.encoding import EncodedItem
from rmcluster.outputs import ScoreResult
from rmcluster.protocol import ServiceOverloadedError

from .args import IngressArgs
from .handle_api import HandleApi


_REPLICA_GONE = replica_gone_errors()


class RewardIngress(HandleApi):
    def __init__(self, model: DeploymentHandle, rm: RMConfig, settings: IngressArgs):
        self._model = model
        self._rm = rm
        self._serve_requests(rm, settings, self._score_encoded)

    async def _score_encoded(self, encoded: list[EncodedItem]) -> list[ScoreResult]:
        """Chunks to the model replicas, a bounded number at a time: a big request queues behind itself,
        never floods the replicas' queues (where it would be refused) or crowds out other callers."""
        n = self._settings.chunk_items
        slots = asyncio.Semaphore(self._settings.chunks_in_flight)

        async def chunk(part: list[EncodedItem]) -> list[ScoreResult]:
            async with slots:
                results: list[ScoreResult] = await self._model.score_encoded.remote(part)
                return results

        tasks = [asyncio.ensure_future(chunk(encoded[i : i + n])) for i in range(0, len(encoded), n)]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException as err:  # a refusal, a timeout or a cancellation: drop the chunks not sent yet
            for task in tasks:
                task.cancel()
            if isinstance(err, BackPressureError):
                raise ServiceOverloadedError(f"model replicas are saturated: {err}",
                                             retry_after_s=err.retry_after_s or self._settings.retry_after_s) from None
            if isinstance(err, _REPLICA_GONE):  # 503: the caller retries (scoring is idempotent); Serve restarts it
                raise ServiceOverloadedError(f"a model replica went away mid-request ({type(err).__name__}); retry",
                                             retry_after_s=self._settings.retry_after_s) from None
            raise
        return [r for part in parts for r in part]

    async def client_config(self) -> dict:
        """What a handle client needs to tokenize in its own process and call the model deployment itself."""
        return {"rm": self._rm.model_dump(mode="json"), "model_deployment": self._model.deployment_name}

    async def health(self) -> None:
        """Raises unless a model replica answers."""
        await self._model.info.remote()
