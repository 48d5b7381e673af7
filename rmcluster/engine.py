"""The batching engine: items -> encoded -> planned batches -> scorer forward -> results in input order.

One bad item yields an error for that item only: encoding errors are per item, and a batch whose
forward pass fails is split in halves until the failing item is alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from .batching import plan_batches
from .config import BatchingConfig, RMConfig
from .records import ScoreItem
from .scorers import Scorer, build_scorer
from .templating import EncodedItem

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    score: Optional[float]  # logit 0; None on error
    logits: Optional[list[float]]  # all labels, for multi-head models
    num_tokens: int
    truncated: bool
    error: Optional[str]

    @classmethod
    def failed(cls, error: BaseException | str, num_tokens: int = 0, truncated: bool = False) -> "ScoreResult":
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(None, None, num_tokens, truncated, message)


@dataclass(frozen=True)
class BatchStats:
    """One forward pass, for progress bars and metrics."""

    items: int
    real_tokens: int
    padded_tokens: int
    seconds: float


Encoded = Union[EncodedItem, BaseException]


class ScoringEngine:
    def __init__(self, scorer: Scorer, batching: BatchingConfig = BatchingConfig()):
        self.scorer = scorer
        self.batching = batching

    @classmethod
    def from_config(cls, config: RMConfig) -> "ScoringEngine":
        return cls(build_scorer(config), config.batching)

    @property
    def model_name(self) -> str:
        return self.scorer.model_name

    @property
    def max_batch_tokens(self) -> int:
        return self.batching.token_budget(self.scorer.device_type)

    def encode(self, items: Sequence[ScoreItem]) -> list[Encoded]:
        """Tokenize each item; failures come back as the exception, in place."""
        out: list[Encoded] = []
        for item in items:
            try:
                out.append(self.scorer.encode(item))
            except Exception as err:  # noqa: BLE001 - any failure belongs to this item alone
                out.append(err)
        return out

    def score_items(
        self, items: Sequence[ScoreItem], on_batch: Optional[Callable[[BatchStats], None]] = None
    ) -> list[ScoreResult]:
        return self.score_encoded(self.encode(items), on_batch)

    def score_encoded(
        self, encoded: Sequence[Encoded], on_batch: Optional[Callable[[BatchStats], None]] = None
    ) -> list[ScoreResult]:
        """Score already-encoded items; results come back in input order."""
        results: list[Optional[ScoreResult]] = [
            ScoreResult.failed(e) if isinstance(e, BaseException) else None for e in encoded
        ]
        todo = [i for i, e in enumerate(encoded) if isinstance(e, EncodedItem)]
        lengths = [encoded[i].num_tokens for i in todo]  # type: ignore[union-attr]
        for batch in plan_batches(lengths, self.max_batch_tokens, self.batching.max_batch_size):
            idx = [todo[b] for b in batch]
            self._run(idx, encoded, results, on_batch)
        return results  # type: ignore[return-value]

    def _run(self, idx: list[int], encoded: Sequence[Encoded], results: list, on_batch) -> None:
        batch: list[EncodedItem] = [encoded[i] for i in idx]  # type: ignore[misc]
        start = time.perf_counter()
        try:
            logits = self.scorer.forward(batch)
        except Exception as err:  # noqa: BLE001 - isolate the failing item, keep the rest
            if len(idx) == 1:
                log.warning("item failed in forward: %s", err)
                results[idx[0]] = ScoreResult.failed(err, batch[0].num_tokens, batch[0].truncated)
                return
            _release_device_memory()
            half = len(idx) // 2
            self._run(idx[:half], encoded, results, on_batch)
            self._run(idx[half:], encoded, results, on_batch)
            return
        seconds = time.perf_counter() - start
        for i, e, row in zip(idx, batch, logits):
            results[i] = ScoreResult(row[0], row, e.num_tokens, e.truncated, None)
        if on_batch is not None:
            real = sum(e.num_tokens for e in batch)
            on_batch(BatchStats(len(batch), real, len(batch) * max(e.num_tokens for e in batch), seconds))

    def score_conversations(self, conversations: Sequence[list[dict]]) -> list[ScoreResult]:
        """Convenience: score plain chat conversations (lists of messages)."""
        items = [ScoreItem(str(i), 0, messages=list(c), num_prompt_messages=len(c) - 1)
                 for i, c in enumerate(conversations)]
        return self.score_items(items)

    def health(self) -> None:
        self.scorer.health()


def _release_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
