"""Batching a checkpoint's own forward (remote code), only the way a load-time probe proved equal.

Custom heads rely on their own padding conventions: ArmoRM pools at the *first* pad token, GRM at
`attention_mask.sum() - 1`, InternLM2 at the last real token of the mask. So nothing is assumed. At
load, the probe scores a few sequences one at a time (the checkpoint's documented usage), then as
right-padded and left-padded batches with the model's own pad id and an attention mask, and the
runner keeps the first mode whose outputs match: right, left, else one sequence per forward. It
never packs. The scorer reads its outputs from the model's output object (`read`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence

import torch

from ..encoding import EncodedItem
from ..outputs import ScoreOutput

log = logging.getLogger(__name__)

Mode = Literal["right", "left", "single"]


@dataclass(frozen=True)
class PaddedBatch:
    """A forward's inputs and where each item's tokens sit in its row."""

    input_ids: torch.Tensor  # [B, W]
    attention_mask: torch.Tensor  # [B, W]
    offsets: list[int]  # row position of each item's first token (left padding shifts it)
    lengths: list[int]

    def row_position(self, row: int, position: int) -> int:
        return self.offsets[row] + position


Reader = Callable[[Any, PaddedBatch], list[ScoreOutput]]


def output_field(output: Any, where: int | str, setting: str) -> Any:
    """A field of a forward's output, by attribute name or tuple position, or a clear error naming both."""
    if isinstance(where, int):
        fields = output.to_tuple() if hasattr(output, "to_tuple") else tuple(output)
        if not 0 <= where < len(fields):
            raise ValueError(f"model.{setting}: position {where}, but {type(output).__name__} has {len(fields)} fields")
        return fields[where]
    value = output.get(where) if isinstance(output, dict) else getattr(output, where, None)
    if value is None:
        names = list(output.keys()) if isinstance(output, dict) else f"a {type(output).__name__} of {len(output)}"
        none = ", or null for none" if setting == "values_output" else ""
        raise ValueError(f"model.{setting}: the model's output has no field {where!r}; it has {names} "
                         f"(set a name, or a position for tuple outputs{none})")
    return value


class OwnForwardRunner:
    """The checkpoint's forward on padded batches, in the mode the probe chose."""

    def __init__(self, model: Any, pad_id: Optional[int], name: str, read: Reader,
                 probe_items: Sequence[EncodedItem]):
        self.model = model
        self.name = name
        self.read = read
        self.input_device: torch.device = model.get_input_embeddings().weight.device
        vocab = int(model.get_input_embeddings().num_embeddings)
        self.pad_id = pad_id if pad_id is not None and 0 <= pad_id < vocab else None
        self.vocab_size = vocab
        self.mode: Mode = self._probe(list(probe_items))
        log.info("%s: its own forward runs %s (probe against one at a time)", name,
                 {"right": "right-padded batches", "left": "left-padded batches", "single": "one item per forward"}
                 [self.mode])

    @property
    def device_type(self) -> str:
        return self.input_device.type

    def forward(self, batch: Sequence[EncodedItem]) -> list[ScoreOutput]:
        if self.mode == "single" or len(batch) == 1:
            return [out for e in batch for out in self._run([e], "right")]
        return self._run(batch, self.mode)

    @torch.inference_mode()
    def _run(self, batch: Sequence[EncodedItem], side: Mode) -> list[ScoreOutput]:
        padded = self._pad(batch, side)
        output = self.model(input_ids=padded.input_ids, attention_mask=padded.attention_mask)
        return self.read(output, padded)

    def _pad(self, batch: Sequence[EncodedItem], side: Mode) -> PaddedBatch:
        lengths = [e.num_tokens for e in batch]
        width = max(lengths)
        if width != min(lengths) and self.pad_id is None:
            raise ValueError(f"{self.name}: no pad token to batch sequences of different lengths")
        pad = self.pad_id if self.pad_id is not None else 0
        rows, masks, offsets = [], [], []
        for e in batch:
            fill = width - e.num_tokens
            offset = fill if side == "left" else 0
            rows.append([pad] * fill + e.input_ids if side == "left" else e.input_ids + [pad] * fill)
            masks.append([0] * fill + [1] * e.num_tokens if side == "left" else [1] * e.num_tokens + [0] * fill)
            offsets.append(offset)
        ids = torch.tensor(rows, device=self.input_device)
        return PaddedBatch(ids, torch.tensor(masks, device=self.input_device), offsets, lengths)

    def _probe(self, items: list[EncodedItem]) -> Mode:
        alone = [self._run([e], "right")[0] for e in items]  # also fails early on a misconfigured output field
        tolerance = 1e-4 if self.model.dtype == torch.float32 else 3e-2
        sides: tuple[Mode, Mode] = ("right", "left")
        for side in sides:
            try:
                batched = self._run(items, side)
            except Exception as err:  # noqa: BLE001 - a model that cannot batch this way
                log.info("%s: %s-padded batch failed: %s: %s", self.name, side, type(err).__name__, err)
                continue
            worst = max(_difference(a, b) for a, b in zip(alone, batched))
            if worst <= tolerance:
                return side
            log.info("%s: %s-padded batches differ from one at a time (rel %.1e)", self.name, side, worst)
        log.warning("%s: padded batches of its own forward differ from one at a time; scoring one item per "
                    "forward (slow, but exact)", self.name)
        return "single"

    def health(self) -> None:
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.input_device)


def _flat(out: ScoreOutput) -> list[float]:
    return [out.score, *(out.values or {}).values(), *(out.step_scores or [])]


def _difference(a: ScoreOutput, b: ScoreOutput) -> float:
    x, y = _flat(a), _flat(b)
    if len(x) != len(y):
        return math.inf
    scale = max(1.0, *(abs(v) for v in x))
    return max(abs(p - q) for p, q in zip(x, y)) / scale


def random_items(vocab: int, avoid: Sequence[int], mark: Optional[int] = None,
                 lengths: Sequence[int] = (7, 19, 12)) -> list[EncodedItem]:
    """Probe sequences of several lengths that never hold the `avoid` ids (a pad id a custom head searches
    for); with `mark`, that id every fifth token and last (a step separator the scorer reads at)."""
    gen = torch.Generator().manual_seed(2)
    banned = set(avoid) | ({mark} if mark is not None else set())
    allowed = [i for i in range(vocab) if i not in banned]
    items = []
    for n in lengths:
        ids = [allowed[k] for k in torch.randint(0, len(allowed), (n,), generator=gen).tolist()]
        if mark is not None:
            ids = [mark if (j + 1) % 5 == 0 or j == n - 1 else t for j, t in enumerate(ids)]
        items.append(EncodedItem(ids))
    return items
