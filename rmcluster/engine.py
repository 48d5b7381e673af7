"""The batching engine: items -> encoded -> planned batches -> scorer forward -> results in input order.

Batches are padding-free packs where the scorer supports them (`packing`), else right-padded rows.
With `shared_prompt`, responses that continue the same prompt tokens share one prompt computation.
One bad item yields an error for that item only: encoding errors are per item, and a batch whose
forward pass fails is split in halves until the failing item is alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .batching import plan_batches, plan_packs
from .config import AUTO_PACKING, BatchingConfig, RMConfig
from .packing import PackUnit
from .records import ScoreItem, conversation_items
from .scorers import Encoded, Scorer, build_scorer, encode_each
from .shared_prompt import build_units, reused_tokens
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
    real_tokens: int  # tokens of the scored sequences, each whole (what per-sequence scoring computes)
    padded_tokens: int  # tokens the batch occupies, padding included (packed: no padding, = real_tokens)
    seconds: float
    reused_tokens: int = 0  # shared-prompt tokens not recomputed: the pass computed padded - reused


class ScoringEngine:
    def __init__(self, scorer: Scorer, batching: BatchingConfig = BatchingConfig()):
        self.scorer = scorer
        self.batching = batching  # read on every call: Serve swaps it at runtime
        self._warned: set[str] = set()

    @classmethod
    def from_config(cls, config: RMConfig) -> "ScoringEngine":
        return cls(build_scorer(config), config.batching)

    @property
    def model_name(self) -> str:
        return self.scorer.model_name

    @property
    def packing(self) -> bool:
        """Whether forward passes run padding-free packs (config, scorer support and device default)."""
        mode = self.batching.packing
        if mode == "off" or not self._supported(mode, "packing"):
            return False
        return mode == "on" or AUTO_PACKING.get(self.scorer.device_type, True)

    @property
    def shared_prompt(self) -> bool:
        """Whether responses to the same prompt tokens share one prompt computation."""
        mode = self.batching.shared_prompt
        return mode != "off" and self._supported(mode, "shared_prompt")

    def _supported(self, mode: str, what: str) -> bool:
        if self.scorer.supports_packing:
            return True
        if mode == "on" and what not in self._warned:
            self._warned.add(what)
            log.warning("%s=on, but %s failed the packing check at load; running padded batches", what,
                        self.model_name)
        return False

    @property
    def max_batch_tokens(self) -> int:
        return self.batching.token_budget(self.scorer.device_type, packed=self.packing)

    def encode(self, items: Sequence[ScoreItem]) -> list[Encoded]:
        """Tokenize each item; failures come back as the exception, in place."""
        return encode_each(self.scorer, items)

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
        budget, max_items = self.max_batch_tokens, self.batching.max_batch_size
        units = self.pack_units(encoded, todo)
        if self.packing:
            packs = plan_packs([u.num_tokens for u in units], [len(u.members) for u in units], budget, max_items)
            for pack in packs:
                self._run([units[k] for k in pack], True, encoded, results, on_batch)
            return results  # type: ignore[return-value]
        # Padded rows of single sequences; shared-prompt groups (if on) run as packs of their own.
        singles = [u for u in units if not u.prompt]
        for unit in units:
            if unit.prompt:
                self._run([unit], True, encoded, results, on_batch)
        for batch in plan_batches([u.num_tokens for u in singles], budget, max_items):
            self._run([singles[b] for b in batch], False, encoded, results, on_batch)
        return results  # type: ignore[return-value]

    def pack_units(self, encoded: Sequence[Encoded], indices: Sequence[int]) -> list[PackUnit]:
        """The units `score_encoded` runs for these items: shared-prompt groups (when on) and single sequences.

        A group stays whole up to max(token budget, max_length) tokens, the largest forward the
        engine already runs for one long item: cutting it would recompute its prompt.
        """
        group_tokens = max(self.max_batch_tokens, self.scorer.max_length)
        return build_units(encoded, indices, self.shared_prompt, group_tokens,  # type: ignore[arg-type]
                           self.batching.max_batch_size)

    def _run(self, units: list[PackUnit], packed: bool, encoded: Sequence[Encoded], results: list, on_batch) -> None:
        """One forward pass over `units`: a padding-free pack, or right-padded rows of single sequences.

        If it fails, the units are split in halves (a shared-prompt group into halves of its tails)
        until the failing item is alone and gets the error.
        """
        members = [m for u in units for m in u.members]
        start = time.perf_counter()
        try:
            if packed:
                logits = self.scorer.forward_packed(units)
            else:
                logits = self.scorer.forward([encoded[i] for i in members])  # type: ignore[misc]
        except Exception as err:  # noqa: BLE001 - isolate the failing item, keep the rest
            if len(members) == 1:
                e = encoded[members[0]]
                log.warning("item failed in %s forward: %s", "packed" if packed else "padded", err)
                results[members[0]] = ScoreResult.failed(err, e.num_tokens, e.truncated)  # type: ignore[union-attr]
                return
            _release_device_memory()
            h = len(units) // 2
            halves = (units[:h], units[h:]) if len(units) > 1 else tuple([u] for u in units[0].split())
            for half in halves:
                self._run(half, packed, encoded, results, on_batch)
            return
        seconds = time.perf_counter() - start
        for i, row in zip(members, logits):
            e = encoded[i]
            results[i] = ScoreResult(row[0], row, e.num_tokens, e.truncated, None)  # type: ignore[union-attr]
        if on_batch is not None:
            real = sum(u.real_tokens for u in units)
            computed = real if packed else len(units) * max(u.num_tokens for u in units)
            on_batch(BatchStats(len(members), real, computed, seconds, reused_tokens(units)))

    def score_conversations(self, conversations: Sequence[list[dict]]) -> list[ScoreResult]:
        """Convenience: score plain chat conversations (lists of messages)."""
        return self.score_items(conversation_items(conversations))

    def health(self) -> None:
        self.scorer.health()


def _release_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
