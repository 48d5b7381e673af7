"""The batching engine: items -> encoded -> planned batches -> scorer forward -> results in input order.

Batches are padding-free packs where the scorer supports them (`packing`), else right-padded rows.
With `shared_prompt`, items whose token ids start alike compute their common prefix once.
One bad item yields an error for that item only: encoding errors are per item, and a batch whose
forward pass fails is split in halves until the failing item is alone.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Callable, Optional, Sequence

from .batching import plan_batches, plan_packs
from .config import BatchingConfig, RMConfig
from .encoding import Encoded, EncodedItem, Encoder
from .outputs import BatchStats, ScoreOutput, ScoreResult
from .packing import PackUnit
from .records import ScoreItem, conversation_items
from .scorers import Scorer, build_scorer
from .shared_prompt import build_units, computed_tokens, reused_tokens

log = logging.getLogger(__name__)

OnBatch = Optional[Callable[[BatchStats], None]]
_PENDING = ScoreResult.failed("not scored")  # a placeholder that every path overwrites


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
    def encoder(self) -> Encoder:
        return self.scorer.encoder

    @property
    def packing(self) -> bool:
        """Whether forward passes run padding-free packs (config and scorer support)."""
        mode = self.batching.packing
        return mode != "off" and self._supported(mode, "packing")

    @property
    def shared_prompt(self) -> bool:
        """Whether items with a common token prefix compute it once."""
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
        return self.batching.token_budget(self.scorer.device_type)

    @property
    def max_group_tokens(self) -> int:
        """The largest shared-prefix group kept whole: max(token budget, max_length), the largest forward
        the engine already runs for one long item."""
        return max(self.max_batch_tokens, self.scorer.max_length)

    @property
    def prefix_cache_on(self) -> bool:
        return self.shared_prompt and self.scorer.supports_prefix_cache and self.batching.prefix_cache_tokens > 0

    def computed_tokens(self, encoded: Sequence[EncodedItem]) -> int:
        """Tokens `score_encoded` would compute for these items, shared prefixes once."""
        return computed_tokens([e.input_ids for e in encoded],
                               self.batching.min_shared_tokens if self.shared_prompt else None)

    def encode(self, items: Sequence[ScoreItem]) -> list[Encoded]:
        """Each item encoded on its own (no record expansion); a failure is an `EncodeFailure` in place."""
        return [self.encoder.encode_or_fail(item) for item in items]

    def score_items(self, items: Sequence[ScoreItem], on_batch: OnBatch = None) -> list[ScoreResult]:
        """Score items on their own; for whole records use `rmcluster.pipeline.score_records`."""
        return self.score_encoded(self.encode(items), on_batch)

    def score_encoded(self, encoded: Sequence[Encoded], on_batch: OnBatch = None) -> list[ScoreResult]:
        """Score encoded units; failed encodings fail their unit alone. Results in input order."""
        results: list[ScoreResult] = [ScoreResult.failed(e.message) if not isinstance(e, EncodedItem) else _PENDING
                                      for e in encoded]
        # Identical units (a pair with the same two responses, a repeated sample) run once: the copies get the
        # same result, so a tie is exactly a tie rather than two sums in different batch shapes.
        todo: list[tuple[int, int]] = []
        first: dict[tuple[tuple[int, ...], int, bool], int] = {}
        unique: list[EncodedItem] = []
        for i, e in enumerate(encoded):
            if isinstance(e, EncodedItem):
                key = (tuple(e.input_ids), e.prompt_tokens, e.truncated)
                if key not in first:
                    first[key] = len(unique)
                    unique.append(e)
                todo.append((i, first[key]))
        scored = self._score(unique, on_batch)
        for i, k in todo:
            results[i] = scored[k]
        return results

    def _score(self, encoded: Sequence[EncodedItem], on_batch: OnBatch) -> list[ScoreResult]:
        results = [_PENDING] * len(encoded)
        cache_on = self.prefix_cache_on
        self.scorer.configure_prefix_cache(self.batching.prefix_cache_tokens if cache_on else 0,
                                           self.batching.min_shared_tokens)
        budget, max_items = self.max_batch_tokens, self.batching.max_batch_size
        units = self.pack_units(encoded)
        if self.packing or cache_on:  # the prefix cache reads and fills packed rows only
            packs = plan_packs([u.num_tokens for u in units], [len(u.members) for u in units], budget, max_items)
            for pack in packs:
                self._run([units[k] for k in pack], True, encoded, results, on_batch)
            return results
        # Padded rows of single sequences; shared-prompt groups (if on) run as packs of their own.
        singles = [u for u in units if not u.prompt]
        for unit in units:
            if unit.prompt:
                self._run([unit], True, encoded, results, on_batch)
        for batch in plan_batches([u.num_tokens for u in singles], budget, max_items):
            self._run([singles[b] for b in batch], False, encoded, results, on_batch)
        return results

    def pack_units(self, encoded: Sequence[EncodedItem]) -> list[PackUnit]:
        """The units `score_encoded` runs for these items: shared-prefix groups (when on) and single sequences.

        A group stays whole up to `max_group_tokens`: cutting it would recompute its prefix.
        """
        return build_units(encoded, range(len(encoded)), self.shared_prompt, self.max_group_tokens,
                           self.batching.max_batch_size, self.batching.min_shared_tokens)

    def _run(self, units: list[PackUnit], packed: bool, encoded: Sequence[EncodedItem], results: list[ScoreResult],
             on_batch: OnBatch) -> None:
        """One forward pass over `units`: a padding-free pack, or right-padded rows of single sequences.

        If it fails, the units are split in halves (a shared-prompt group into halves of its tails)
        until the failing item is alone and gets the error.
        """
        members = [m for u in units for m in u.members]
        start = time.perf_counter()
        outcome = self._forward(units, packed, encoded, members)
        if isinstance(outcome, Exception):
            if _poisons_device(outcome):  # every later call fails too: retrying item by item blames the innocent
                raise outcome
            if len(members) == 1:
                e = encoded[members[0]]
                log.warning("item failed in %s forward: %s", "packed" if packed else "padded", outcome)
                results[members[0]] = ScoreResult.failed(outcome, e.num_tokens, e.truncated)
                return
            del outcome  # free what the failed forward held before retrying smaller
            _release_device_memory()
            h = len(units) // 2
            halves = (units[:h], units[h:]) if len(units) > 1 else tuple([u] for u in units[0].split())
            for half in halves:
                self._run(half, packed, encoded, results, on_batch)
            return
        seconds = time.perf_counter() - start
        for i, output in zip(members, outcome):
            e = encoded[i]
            results[i] = ScoreResult.ok(output, e.num_tokens, e.truncated)
        if on_batch is not None:
            real = sum(u.real_tokens for u in units)
            computed = real if packed else len(units) * max(u.num_tokens for u in units)
            on_batch(BatchStats(len(members), real, computed, seconds, reused_tokens(units)))

    def _forward(self, units: list[PackUnit], packed: bool, encoded: Sequence[EncodedItem],
                 members: list[int]) -> list[ScoreOutput] | Exception:
        """The scorer's outputs, or the exception it raised (returned, so no traceback outlives this frame)."""
        try:
            items = [encoded[i] for i in members]
            return self.scorer.forward_packed(units, items) if packed else self.scorer.forward(items)
        except Exception as err:  # noqa: BLE001 - isolate the failing item, keep the rest
            return err.with_traceback(None)

    def score_conversations(self, conversations: Sequence[list[dict[str, Any]]]) -> list[ScoreResult]:
        """Convenience: score plain chat conversations (lists of messages)."""
        return self.score_items(conversation_items(conversations))

    def health(self) -> None:
        self.scorer.health()


def _poisons_device(err: Exception) -> bool:
    """CUDA errors that leave the context unusable (a device-side assert, an illegal access), unlike OOM."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return False
    if isinstance(err, getattr(torch, "AcceleratorError", ())):
        return True
    text = str(err)
    return "device-side assert" in text or "illegal memory access" in text


def _release_device_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
