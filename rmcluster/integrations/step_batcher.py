"""Gathers concurrent per-sample calls into one batch call.

veRL's reward loop calls a reward manager once per sample, all samples of a step at once (an asyncio
gather), and Serve's `@serve.batch` works only inside a replica. Batching them here lets a step's GRPO
groups travel together, so each group's prompt is computed once.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Optional, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class StepBatcher(Generic[In, Out]):
    """`await submit(x)` -> `score_batch([... x ...])[i]`; a batch closes `window_s` after its last arrival
    (at most `max_wait_s` after its first) or at `max_items`."""

    def __init__(self, score_batch: Callable[[list[In]], Awaitable[list[Out]]], *, window_s: float = 0.02,
                 max_wait_s: float = 1.0, max_items: int = 4096):
        self.score_batch = score_batch
        self.window_s, self.max_wait_s, self.max_items = window_s, max_wait_s, max_items
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._arrived = asyncio.Event()
        self._closer: Optional[asyncio.Task[None]] = None
        self.batch_sizes: list[int] = []  # for logs and tests

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_items:
            self._flush()
        elif self._closer is None:
            self._arrived = asyncio.Event()
            self._closer = asyncio.create_task(self._close_when_quiet())
        else:
            self._arrived.set()
        return await future

    async def _close_when_quiet(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while True:
            self._arrived.clear()
            wait = min(self.window_s, deadline - loop.time())
            if wait <= 0:
                break
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except asyncio.TimeoutError:
                break
        self._closer = None
        self._flush()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        if batch:
            self.batch_sizes.append(len(batch))
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            results = await self.score_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch call returned {len(results)} results for {len(batch)} items")
        except Exception as err:  # every caller of the batch sees the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
