"""The model-holding deployment: one `ScoringEngine` per replica, fed by Serve's dynamic batching.

A plain class; `serve.app.build_app` turns it into a deployment. Callers (the ingress, or a one-hop
handle client) send already tokenized items. Each item is one element of the `@serve.batch` queue,
whose size function counts the tokens the engine would compute (a prefix shared by several items
once), so concurrent requests merge into one engine call of up to `model_server.max_call_tokens`
computed tokens: the samples of a GRPO group, sent one request each, land in one call and share
their prompt. The engine then plans the forward passes (length-sorted, padded-token budget, item
cap) and its forward runs on a worker thread, so the event loop keeps accepting requests, answering
health checks and the router's queue-length probes while the model computes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

from ray import serve

from rmcluster.config import RMConfig
from rmcluster.encoding import EncodedItem
from rmcluster.engine import ScoringEngine
from rmcluster.outputs import BatchStats, ScoreResult

from .args import BatchTuning
from .metrics import ModelServerMetrics

log = logging.getLogger("ray.serve")


class _TokenBudgetWarningFilter(logging.Filter):
    """Serve warns when a batch's max_batch_size exceeds max_ongoing_requests, assuming it counts
    requests. Here it counts tokens (batch_size_fn), so the warning does not apply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will never achieve the configured `max_batch_size`" not in record.getMessage()


log.addFilter(_TokenBudgetWarningFilter())

# Default engine call size, in units of the engine's largest group (max(budget, max_length)). On 2 CPU
# cores, 96 per-sample GRPO requests without the prefix cache took 7.2 s per step at 1x (31% of the
# tokens shared), 5.9 s at 4x (55%). With the prefix cache a group split over calls reads its prompt
# from the cache, and smaller calls answer sooner: 2.5-2.8 s per step and p50 1.7 s at 1x against
# 3.0-3.4 s and p50 2.5-2.7 s at 4x (bench/RESULTS.md).
CALL_GROUPS = 4
CALL_GROUPS_CACHED = 1


@dataclass(frozen=True)
class _Queued:
    """One item in the Serve batch queue, and how the batch size function counts it."""

    item: EncodedItem
    server: "RewardModelServer"
    request: int  # which call it came from, to count how many requests a batch merged


def _queued_tokens(batch: Sequence[_Queued]) -> int:
    server = batch[0].server
    if len(batch) == 1:  # an item over the limit still runs, alone
        return min(batch[0].item.num_tokens, server.max_call_tokens)
    return server.engine.computed_tokens([q.item for q in batch])


def _use_cpu_threads(threads: Optional[int]) -> None:
    """Torch threads follow the cores this process may run on, not Ray's OMP_NUM_THREADS (the reservation)."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads or cores)
    log.info("RewardModelServer: %d torch threads (%s)", torch.get_num_threads(),
             "model_server.torch_threads" if threads else f"{cores} cores available")


def _load_engine(rm: RMConfig, torch_threads: Optional[int]) -> ScoringEngine:
    engine = ScoringEngine.from_config(rm)
    if engine.scorer.device_type == "cpu":
        _use_cpu_threads(torch_threads)
    return engine


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


class RewardModelServer:
    """Scores tokenized items with one model; merges concurrent requests into token-budgeted batches."""

    def __init__(self, rm: RMConfig, torch_threads: Optional[int] = None):
        # One forward at a time per replica; the thread keeps the event loop free. The model also loads
        # on it: libgomp counts every thread that ever ran an OpenMP region, and once those outnumber the
        # cores its teams stop spinning between regions. A 2-CPU replica on 2 cores that loaded on the
        # constructor's thread took 2.1-2.2 s per GRPO step, 1.7-1.8 s loading here (bench/RESULTS.md).
        self._forward_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rm-forward")
        self.engine = self._forward_thread.submit(_load_engine, rm, torch_threads).result()
        self._threads = self._forward_thread.submit(_torch_threads).result()
        self.metrics = ModelServerMetrics(self.engine.model_name)
        self._request_ids = itertools.count()
        # Open while no forward pass runs. Requests that arrive during a forward wait here and
        # then join the queue together, so under load batches fill while the model is busy, and
        # a lone request on an idle replica goes straight through without waiting.
        self._model_idle = asyncio.Event()
        self._model_idle.set()
        self._counters = {"serve_batches": 0, "forward_passes": 0, "items": 0, "tokens": 0, "reused_tokens": 0,
                          "forward_seconds": 0.0,
                          "max_requests_per_batch": 0, "max_items_per_forward": 0}
        log.info("RewardModelServer: %s on %s, budget %d tokens", self.engine.model_name,
                 self.engine.scorer.device_type, self.engine.max_batch_tokens)

    def reconfigure(self, user_config: dict) -> None:
        tuning = self._tuning = BatchTuning.model_validate(user_config)
        # Every batching field (budget, item cap, packing, shared_prompt); the engine reads it per call.
        self.engine.batching = tuning.batching
        self._batched.set_max_batch_size(self.max_call_tokens)
        self._batched.set_batch_wait_timeout_s(tuning.batch_wait_timeout_s)
        log.info("batch tuning: %s (token budget %d per forward, %d computed per engine call)", tuning.model_dump(),
                 self.engine.max_batch_tokens, self.max_call_tokens)

    @property
    def max_call_tokens(self) -> int:
        groups = CALL_GROUPS_CACHED if self.engine.prefix_cache_on else CALL_GROUPS
        return self._tuning.max_call_tokens or groups * self.engine.max_group_tokens

    async def score_encoded(self, encoded: list[EncodedItem]) -> list[ScoreResult]:
        """Scores in input order. Items of one call may land in different batches."""
        await self._model_idle.wait()
        request = next(self._request_ids)
        return await asyncio.gather(*(self._batched(_Queued(e, self, request)) for e in encoded))

    # Placeholders: reconfigure() sets the real budget and wait from user_config before any request.
    @serve.batch(max_batch_size=1024, batch_wait_timeout_s=0.005, batch_size_fn=_queued_tokens)
    async def _batched(self, queued: list[_Queued]) -> list[ScoreResult]:
        passes: list[BatchStats] = []
        self._model_idle.clear()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._forward_thread, self.engine.score_encoded, [q.item for q in queued], passes.append
            )
        finally:
            self._model_idle.set()
        self._count(queued, passes)
        return results

    def _count(self, queued: list[_Queued], passes: list[BatchStats]) -> None:
        requests = len({q.request for q in queued})
        self.metrics.record_queue_batch(requests, len(queued))
        self.metrics.record_forwards(passes)
        c = self._counters
        c["serve_batches"] += 1
        c["forward_passes"] += len(passes)
        c["items"] += len(queued)
        c["tokens"] += sum(p.real_tokens for p in passes)
        c["reused_tokens"] += sum(p.reused_tokens for p in passes)
        c["forward_seconds"] += sum(p.seconds for p in passes)
        c["max_requests_per_batch"] = max(c["max_requests_per_batch"], requests)
        c["max_items_per_forward"] = max([c["max_items_per_forward"], *(p.items for p in passes)])

    def stats(self) -> dict:
        """This replica's batching counters since start (for tests and debugging), and its prefix cache's."""
        return {**self._counters, "prefix_cache": self.engine.scorer.prefix_cache_stats()}

    def info(self) -> dict:
        scorer = self.engine.scorer
        return {"model": self.engine.model_name, "max_length": scorer.max_length, "device": scorer.device_type,
                "max_batch_tokens": self.engine.max_batch_tokens, "max_call_tokens": self.max_call_tokens,
                "max_batch_size": self.engine.batching.max_batch_size,
                "packing": self.engine.packing, "shared_prompt": self.engine.shared_prompt,
                "batch_wait_timeout_s": self._tuning.batch_wait_timeout_s, "torch_threads": self._threads,
                "replica": serve.get_replica_context().replica_tag, "pid": os.getpid()}

    def check_health(self) -> None:
        self.engine.health()
