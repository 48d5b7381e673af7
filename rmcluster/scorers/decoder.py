"""Hidden states of a decoder at chosen positions, padded or packed: what every head-on-a-backbone kind reads.

`DecoderRunner` runs a transformers decoder's backbone (`model.base_model`) and returns, for each
item, the final hidden states at the positions its scorer asks for (item-relative: 0 is the item's
first token). A sequence classifier asks for the last token; a generative judge too (then the LM
head's rows for its verdicts); a process reward model for each step separator; DPO for every
response token. So padding, packing and shared prompts are implemented once, here.

Padded batches are right-padded. For causal decoders no attention mask is passed: a real token
never attends to the pads after it, so its hidden state equals the unpadded one, and attention
takes the fast `is_causal` kernels. Packed batches put several sequences in one row with
restarting position ids and attend per segment (`rmcluster.segment_attention`). Load-time probes
check causality and that packed hidden states equal per-sequence ones before packing is offered.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from ..encoding import EncodedItem
from ..last_layer_rows import last_layer, rows_only
from ..outputs import ScoreOutput
from ..packing import PackLayout, PackUnit
from ..prefix_cache import LayerKV, PrefixCache, Rewrite
from .base import Scorer

if TYPE_CHECKING:
    from ..segment_attention import VarlenFn

log = logging.getLogger(__name__)


class DecoderRunner:
    """One decoder's backbone, its probes, and hidden states at item positions."""

    def __init__(self, model: Any, pad_id: Optional[int], name: str, compile: bool = False):
        self.model = model
        self.backbone = model.base_model
        self.name = name
        self.input_device: torch.device = model.get_input_embeddings().weight.device
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        # Any in-vocabulary id works as filler: pads are never attended (causal) or are masked.
        self.pad_id = pad_id if pad_id is not None and 0 <= pad_id < self.vocab_size else 0
        # Packed forwards switch the model's attention implementation for their duration.
        self._lock = threading.RLock()
        self.varlen_fn = self._varlen_kernel()
        self.causal = self._is_causal()
        self.packed_backbone = self.backbone
        if compile and self.causal:
            # Dynamic shapes: one graph serves every pack length. The probe below compiles it.
            self.packed_backbone = torch.compile(self.backbone, dynamic=True)
        self.supports_packing = self.causal and self._packing_matches()
        if self.packed_backbone is not self.backbone and not self.supports_packing:
            log.warning("%s: the compiled packed forward failed its check; packing runs eagerly", name)
            self.packed_backbone = self.backbone
            self.supports_packing = self._packing_matches()
        # Packed forwards compute the last layer at the read rows only (not inside a compiled graph).
        self.last_layer = last_layer(self.backbone) if self.packed_backbone is self.backbone else None
        if self.supports_packing and self.last_layer is not None and not self._packing_matches(prune=True):
            log.warning("%s: the last layer computed at the read rows only differs from the whole layer; "
                        "it runs whole", name)
            self.last_layer = None
        self.prefix_cache = PrefixCache()
        self.supports_prefix_cache = self.supports_packing and self._prefix_cache_matches()
        log.info("%s: causal=%s (right padding %s attention mask), packing %s (%s), last layer %s", name,
                 self.causal, "without" if self.causal else "with",
                 "supported" if self.supports_packing else "unsupported",
                 "varlen kernel" if self.varlen_fn else "sdpa per segment",
                 "at the read rows only" if self.supports_packing and self.last_layer is not None else "whole")

    @property
    def device_type(self) -> str:
        return self.input_device.type

    # -- hidden states at positions -----------------------------------------------------------------
    @torch.inference_mode()
    def padded(self, batch: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per item, hidden states [len(positions), H] from one right-padded batch of token ids."""
        lengths = [len(ids) for ids in batch]
        width = max(lengths)
        ids = torch.tensor([list(ids) + [self.pad_id] * (width - len(ids)) for ids in batch])
        mask = None
        if not self.causal:
            mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long().to(self.input_device)
        hidden = self._hidden(ids, mask)
        rows = torch.tensor([i for i, p in enumerate(positions) for _ in p], dtype=torch.long)
        cols = torch.tensor([j for p in positions for j in p], dtype=torch.long)
        picked = hidden[rows.to(hidden.device), cols.to(hidden.device)]
        return list(torch.split(picked, [len(p) for p in positions]))

    @torch.inference_mode()
    def packed(self, units: Sequence[PackUnit], positions: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per tail of `units` (in order), hidden states [len(positions), H] from one packed row.

        A position below the unit's prompt length is read from the shared prompt's rows.
        """
        rewrite = None
        if self.supports_prefix_cache and self.prefix_cache.capacity:
            rewrite = self.prefix_cache.rewrite(units, positions)
            units = rewrite.units
        layout = PackLayout(units, self.input_device)
        rows = [layout.row_of(t, j) for t, p in enumerate(positions) for j in p]
        keep = sorted(set(rows))
        hidden = self._packed_hidden(layout, keep if self.last_layer is not None else None, rewrite)
        if self.last_layer is not None:  # hidden holds the rows of `keep` only
            at = {r: i for i, r in enumerate(keep)}
            rows = [at[r] for r in rows]
        picked = hidden[torch.tensor(rows, dtype=torch.long, device=hidden.device)]
        return list(torch.split(picked, [len(p) for p in positions]))

    def _hidden(self, ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
        with self._lock:
            hidden: torch.Tensor = self.backbone(input_ids=ids.to(self.input_device), use_cache=False,
                                                 **kwargs).last_hidden_state
            return hidden

    def _packed_hidden(self, layout: PackLayout, keep: Optional[list[int]] = None,
                       rewrite: Optional[Rewrite] = None, cache: Optional[PrefixCache] = None) -> torch.Tensor:
        """Final hidden states [T, hidden] of a packed row, or [len(keep), hidden] at the sorted rows `keep`
        (the last layer computed there only). `rewrite`: the prefix-cache entries the layout reads, and the
        spans to leave in the cache (`cache`, else this runner's) once the forward succeeded.
        `use_cache=False`, or a transformers cache object would hide the packing and let sequences
        attend to each other."""
        from ..segment_attention import segment_forward

        spans = [layout.unit_rows[u] for u, _ in rewrite.keep] if rewrite is not None else []
        captured: dict[tuple[int, int], LayerKV] = {span: [] for span in spans if span is not None}
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._lock)
            stack.enter_context(segment_forward(self.model, layout, self.varlen_fn,
                                                rewrite.cached if rewrite is not None else (), captured or None))
            if keep is not None and self.last_layer is not None:
                rows = torch.tensor(keep, dtype=torch.long, device=self.input_device)
                stack.enter_context(rows_only(self.last_layer, rows, layout.query_starts(keep)))
            out = self.packed_backbone(input_ids=layout.input_ids, position_ids=layout.position_ids, use_cache=False)
            if rewrite is not None:
                for (_, ids), span in zip(rewrite.keep, spans):
                    if span is not None:
                        (cache or self.prefix_cache).store(ids, captured[span])
        hidden: torch.Tensor = out.last_hidden_state[0]
        return hidden

    def configure_prefix_cache(self, tokens: int, min_shared: int) -> None:
        self.prefix_cache.configure(tokens if self.supports_prefix_cache else 0, min_shared)

    # -- probes --------------------------------------------------------------------------------------
    def _varlen_kernel(self) -> Optional["VarlenFn"]:
        """A whole-pack varlen kernel (flash-attn's, else torch's, on CUDA); None means sdpa per segment."""
        from ..segment_attention import varlen_kernel

        return varlen_kernel(self.model, self.input_device)

    def probe_tolerance(self) -> float:
        return 1e-3 if self.model.dtype == torch.float32 else 3e-2

    @torch.inference_mode()
    def _is_causal(self) -> bool:
        """Probe: does appending tokens leave earlier hidden states unchanged?"""
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, self.vocab_size, (1, 24), generator=gen)
        full = self._hidden(ids)[0, 15].float()
        prefix = self._hidden(ids[:, :16])[0, 15].float()
        rel = ((full - prefix).abs().max() / prefix.abs().max().clamp_min(1e-6)).item()
        if rel >= self.probe_tolerance():  # it turns packing and maskless padding off: say by how much
            log.warning("%s: appending tokens changed an earlier hidden state (rel %.1e >= %.0e): treated as not "
                        "causal, so no packing and masked padded batches", self.name, rel, self.probe_tolerance())
        return bool(rel < self.probe_tolerance())

    @torch.inference_mode()
    def _packing_matches(self, prune: bool = False) -> bool:
        """Probe: do packed hidden states (plain sequences and a shared prompt with two tails) equal
        per-sequence ones? False for models whose attention or positions ignore the packing.
        `prune`: with the last layer computed at the last tokens only."""
        gen = torch.Generator().manual_seed(1)
        a, b, prompt, t1, t2 = (torch.randint(0, self.vocab_size, (n,), generator=gen).tolist()
                                for n in (11, 7, 9, 5, 6))
        units = [PackUnit.single(a, 0), PackUnit(prompt, [t1, t2], [1, 2]), PackUnit.single(b, 3)]
        try:
            layout = PackLayout(units, self.input_device)
            if prune:  # the last tokens are the rows kept, in order
                packed = self._packed_hidden(layout, layout.last_positions.tolist()).float()
            else:
                hidden = self._packed_hidden(layout)
                packed = hidden[layout.last_positions.to(hidden.device)].float()
        except Exception as err:  # noqa: BLE001 - any failure means: do not pack this model
            log.info("%s: packed forward unavailable: %s: %s", self.name, type(err).__name__, err)
            return False
        whole = [self._hidden(torch.tensor([seq]))[0, -1].float() for seq in (a, prompt + t1, prompt + t2, b)]
        rel = max(((p - w).abs().max() / w.abs().max().clamp_min(1e-6)).item() for p, w in zip(packed, whole))
        if rel >= self.probe_tolerance():
            log.warning("%s: packed hidden states differ from per-sequence ones (rel %.1e); packing off",
                        self.name, rel)
        return bool(rel < self.probe_tolerance())

    @torch.inference_mode()
    def _prefix_cache_matches(self) -> bool:
        """Probe: does a tail read from a cached prompt (computed in an earlier forward, and a single sequence
        cached whole) score as its whole sequence does?"""
        gen = torch.Generator().manual_seed(2)
        prompt, t1, t2, t3, single, t4 = (torch.randint(0, self.vocab_size, (n,), generator=gen).tolist()
                                          for n in (20, 5, 6, 4, 18, 3))
        cache = PrefixCache()
        cache.configure(1_000, 8)
        try:
            for units in ([PackUnit(prompt, [t1, t2], [0, 1]), PackUnit.single(single, 2)],
                          [PackUnit(prompt, [t3], [0]), PackUnit.single(single[:12] + t4, 1)]):
                rewrite = cache.rewrite(units, [[len(u.prompt) + len(t) - 1] for u in units for t in u.tails])
                layout = PackLayout(rewrite.units, self.input_device)
                hidden = self._packed_hidden(layout, rewrite=rewrite, cache=cache)
            packed = hidden[layout.last_positions.to(hidden.device)].float()
        except Exception as err:  # noqa: BLE001 - any failure means: no prefix cache for this model
            log.info("%s: prefix cache unavailable: %s: %s", self.name, type(err).__name__, err)
            return False
        if cache.hits != 2:
            return False
        whole = [self._hidden(torch.tensor([seq]))[0, -1].float() for seq in (prompt + t3, single[:12] + t4)]
        rel = max(((p - w).abs().max() / w.abs().max().clamp_min(1e-6)).item() for p, w in zip(packed, whole))
        if rel >= self.probe_tolerance():
            log.warning("%s: tails read from the prefix cache differ from whole sequences (rel %.1e); cache off",
                        self.name, rel)
        return bool(rel < self.probe_tolerance())

    def health(self) -> None:
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.input_device)


def lm_head_rows(model: Any, token_ids: Sequence[int]) -> torch.nn.Linear:
    """A linear head made of the LM head's rows for `token_ids`: those tokens' logits, nothing else.

    The final-logit soft cap of models that have one (Gemma 2) is not linear; `capped_logits` applies it.
    """
    weight = model.get_output_embeddings().weight
    head = torch.nn.Linear(weight.shape[1], len(token_ids), bias=False, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        head.weight.copy_(weight[torch.tensor(list(token_ids), device=weight.device)])
    return head


def capped_logits(model: Any, logits: torch.Tensor) -> torch.Tensor:
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


class DecoderScorer(Scorer):
    """A scorer that reads a head at chosen positions of one decoder (the last token by default)."""

    runner: DecoderRunner

    def __init__(self, runner: DecoderRunner, model_name: str):
        self.runner = runner
        self.model_name = model_name
        self.device_type = runner.device_type
        self.supports_packing = runner.supports_packing
        self.supports_prefix_cache = runner.supports_prefix_cache

    @property
    def model(self) -> Any:
        return self.runner.model

    def positions(self, item: EncodedItem) -> list[int]:
        """Item-relative positions whose hidden states `read` gets (default: the last token)."""
        return [item.num_tokens - 1]

    def read(self, hidden: list[torch.Tensor], items: Sequence[EncodedItem]) -> list[ScoreOutput]:
        """One output per item from its hidden states at `positions(item)`."""
        raise NotImplementedError

    def forward(self, batch: Sequence[EncodedItem]) -> list[ScoreOutput]:
        hidden = self.runner.padded([e.input_ids for e in batch], [self.positions(e) for e in batch])
        with torch.inference_mode():
            return self.read(hidden, batch)

    def forward_packed(self, units: Sequence[PackUnit], items: Sequence[EncodedItem]) -> list[ScoreOutput]:
        hidden = self.runner.packed(units, [self.positions(e) for e in items])
        with torch.inference_mode():
            return self.read(hidden, items)

    def configure_prefix_cache(self, tokens: int, min_shared: int) -> None:
        self.runner.configure_prefix_cache(tokens, min_shared)

    def prefix_cache_stats(self) -> dict[str, int]:
        return self.runner.prefix_cache.stats()

    def health(self) -> None:
        self.runner.health()
