"""The scorer contract. The engine batches; a scorer encodes items and runs forward passes.

Sequence classifiers are the first implementation. Custom classifiers (trust_remote_code heads such
as ArmoRM) and generative judges implement the same three methods with their own templating and
forward, and the batching engine stays as it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol, Sequence, Union

from ..records import ScoreItem
from ..templating import EncodedItem

if TYPE_CHECKING:
    from ..packing import PackUnit


class ItemEncoder(Protocol):
    """Templating + tokenization + truncation, without model weights (runs on CPU anywhere)."""

    def encode(self, item: ScoreItem) -> EncodedItem: ...


Encoded = Union[EncodedItem, Exception]


def encode_each(encoder: ItemEncoder, items: Sequence[ScoreItem]) -> list[Encoded]:
    """Encode every item; a failure comes back as its exception, in place: it belongs to that item alone."""
    out: list[Encoded] = []
    for item in items:
        try:
            out.append(encoder.encode(item))
        except Exception as err:  # noqa: BLE001 - any failure is this item's error, never the batch's
            out.append(err)
    return out


class Scorer(ABC):
    #: Model name written to every result row.
    model_name: str
    #: Device type the forward passes run on ("cpu", "cuda"); picks the default token budget.
    device_type: str
    #: Longest item accepted, in tokens.
    max_length: int
    #: Whether `forward_packed` works for this model (scorers that implement it check at load).
    supports_packing: bool = False

    @abstractmethod
    def encode(self, item: ScoreItem) -> EncodedItem:
        """Template and tokenize one item; raise `ItemError` when it cannot be scored."""

    @abstractmethod
    def forward(self, batch: Sequence[EncodedItem]) -> list[list[float]]:
        """Logits (all labels) for each item of one batch, in batch order."""

    def forward_packed(self, units: Sequence["PackUnit"]) -> list[list[float]]:
        """Logits for each tail of each unit, in order, from one padding-free packed row.

        Optional: the engine calls it only where `supports_packing` is true.
        """
        raise NotImplementedError(f"{type(self).__name__} does not run packed batches")

    def health(self) -> None:
        """Raise if the scorer can no longer serve (a dead device, say)."""
