"""The scorer contract. The engine plans batches and calls `forward`; what a forward returns is the scorer's.

A scorer holds a model and the `Encoder` that makes its inputs (the same encoder the weight-free
stages build, so tokens are identical wherever they are made). `forward` returns one typed
`ScoreOutput` per item: the reward, plus the named `values` the scorer declares at load in
`output_names`, and per-step scores for process reward models. The engine never looks inside.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Sequence

from ..encoding import EncodedItem, Encoder
from ..outputs import ScoreOutput

if TYPE_CHECKING:
    from ..packing import PackUnit


class Scorer(ABC):
    #: Model name written to every result row.
    model_name: str
    #: Device type the forward passes run on ("cpu", "cuda"); picks the default token budget.
    device_type: str
    #: Templating and tokenization for this model.
    encoder: Encoder
    #: Names of `ScoreOutput.values`, fixed at load (empty: the scorer gives no named values).
    output_names: tuple[str, ...] = ()
    #: Whether `forward_packed` works for this model (scorers that implement it check at load).
    supports_packing: bool = False
    #: Whether `configure_prefix_cache` keeps prefixes between calls (checked at load).
    supports_prefix_cache: bool = False

    @property
    def max_length(self) -> int:
        """Longest item accepted, in tokens (the encoder's limit)."""
        return self.encoder.max_length

    @abstractmethod
    def forward(self, batch: Sequence[EncodedItem]) -> list[ScoreOutput]:
        """One output per item of one batch, in batch order."""

    def forward_packed(self, units: Sequence["PackUnit"], items: Sequence[EncodedItem]) -> list[ScoreOutput]:
        """One output per tail of each unit, in order, from one padding-free packed row.

        `items` are the tails' items, in the same order (their full ids are the unit's prompt, then
        the tail). Optional: the engine calls it only where `supports_packing` is true.
        """
        raise NotImplementedError(f"{type(self).__name__} does not run packed batches")

    def configure_prefix_cache(self, tokens: int, min_shared: int) -> None:
        """Keep up to `tokens` of computed prefixes between calls (`rmcluster.prefix_cache`); no-op by default."""

    def prefix_cache_stats(self) -> dict[str, int]:
        return {}

    def health(self) -> None:
        """Raise if the scorer can no longer serve (a dead device, say)."""
