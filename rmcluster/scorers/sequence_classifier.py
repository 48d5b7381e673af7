"""Sequence-classifier reward models (AutoModelForSequenceClassification): score = logit 0 at the last token.

Batches are right-padded. For causal decoders no attention mask is passed: a real token never
attends to the pads after it, so its hidden state equals the unpadded one, and attention takes the
fast `is_causal` kernels instead of a masked path. Pooling uses each item's own length, so it never
depends on `config.pad_token_id` and tokenizers without a pad token batch too.

Packed batches (`forward_packed`) put several sequences in one row with restarting position ids and
attend per segment (`rmcluster.segment_attention`); the head reads each sequence's last token. A
load-time probe checks that packed hidden states equal per-sequence ones before packing is offered.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from ..encoding import EncodedItem
from ..outputs import ScoreOutput
from ..packing import PackLayout, PackUnit
from ..templating import ChatEncoder
from .base import Scorer

if TYPE_CHECKING:
    from ..config import RMConfig
    from ..segment_attention import VarlenFn

log = logging.getLogger(__name__)


class SequenceClassifierScorer(Scorer):
    def __init__(self, model: Any, encoder: ChatEncoder, model_name: str, compile: bool = False):
        head = getattr(model, "score", None)
        if not isinstance(head, torch.nn.Module):
            raise ValueError(
                f"{type(model).__name__} has no per-token `score` head; the sequence-classifier scorer "
                "supports decoder reward models (Llama, Mistral, Qwen, Gemma, ...)"
            )
        self.model = model
        self.backbone = model.base_model
        self.head = head
        self.model_name = model_name
        self.encoder = encoder
        self.input_device = model.get_input_embeddings().weight.device
        self.device_type = self.input_device.type
        self.output_names = _label_names(model.config)
        # Any in-vocabulary id works as filler: pads are never attended (causal) or are masked.
        pad = encoder.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else 0
        # Packed forwards switch the model's attention implementation for their duration.
        self._forward_lock = threading.RLock()
        self.varlen_fn = self._varlen_kernel()
        self.causal = self._is_causal()
        self.packed_backbone = self.backbone
        if compile and self.causal:
            # Dynamic shapes: one graph serves every pack length. The probe below compiles it.
            self.packed_backbone = torch.compile(self.backbone, dynamic=True)
        self.supports_packing = self.causal and self._packing_matches()
        if self.packed_backbone is not self.backbone and not self.supports_packing:
            log.warning("%s: the compiled packed forward failed its check; packing runs eagerly", model_name)
            self.packed_backbone = self.backbone
            self.supports_packing = self._packing_matches()
        log.info("%s: causal=%s (right padding %s attention mask), packing %s (%s)", model_name, self.causal,
                 "without" if self.causal else "with", "supported" if self.supports_packing else "unsupported",
                 "flash-attn varlen" if self.varlen_fn else "sdpa per segment")

    @classmethod
    def from_config(cls, config: "RMConfig", encoder: ChatEncoder) -> "SequenceClassifierScorer":
        from ..model_loading import load_sequence_classifier

        model, _ = load_sequence_classifier(config.model)
        return cls(model, encoder, config.model.name, config.model.compile)

    def _hidden(self, ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
        with self._forward_lock:
            hidden: torch.Tensor = self.backbone(input_ids=ids.to(self.input_device), use_cache=False,
                                                 **kwargs).last_hidden_state
            return hidden

    def _packed_hidden(self, layout: PackLayout) -> torch.Tensor:
        """Final hidden states [T, hidden] of a packed row; `use_cache=False`, or a cache object would
        hide the packing and let sequences attend to each other."""
        from ..segment_attention import segment_forward

        with self._forward_lock, segment_forward(self.model, layout, self.varlen_fn):
            out = self.packed_backbone(input_ids=layout.input_ids, position_ids=layout.position_ids, use_cache=False)
        hidden: torch.Tensor = out.last_hidden_state[0]
        return hidden

    def _varlen_kernel(self) -> Optional[VarlenFn]:
        """flash-attn's varlen kernel for flash_attention_2 models on CUDA; None means sdpa per segment."""
        from ..segment_attention import flash_varlen_fn

        flash = self.model.config._attn_implementation == "flash_attention_2"
        half = self.model.dtype in (torch.float16, torch.bfloat16)
        return flash_varlen_fn() if flash and half and self.device_type == "cuda" else None

    @torch.inference_mode()
    def _is_causal(self) -> bool:
        """Probe: does appending tokens leave earlier hidden states unchanged?"""
        gen = torch.Generator().manual_seed(0)
        vocab = self.model.get_input_embeddings().num_embeddings
        ids = torch.randint(0, vocab, (1, 24), generator=gen)
        full = self._hidden(ids)[0, 15].float()
        prefix = self._hidden(ids[:, :16])[0, 15].float()
        rel = ((full - prefix).abs().max() / prefix.abs().max().clamp_min(1e-6)).item()
        return bool(rel < self._probe_tolerance())

    def _probe_tolerance(self) -> float:
        return 1e-3 if self.model.dtype == torch.float32 else 3e-2

    @torch.inference_mode()
    def _packing_matches(self) -> bool:
        """Probe: do packed hidden states (plain sequences and a shared prompt with two tails) equal
        per-sequence ones? False for models whose attention or positions ignore the packing."""
        gen = torch.Generator().manual_seed(1)
        vocab = self.model.get_input_embeddings().num_embeddings
        a, b, prompt, t1, t2 = (torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (11, 7, 9, 5, 6))
        units = [PackUnit.single(a, 0), PackUnit(prompt, [t1, t2], [1, 2]), PackUnit.single(b, 3)]
        try:
            layout = PackLayout(units, self.input_device)
            hidden = self._packed_hidden(layout)
            packed = hidden[layout.last_positions.to(hidden.device)].float()
        except Exception as err:  # noqa: BLE001 - any failure means: do not pack this model
            log.info("%s: packed forward unavailable: %s: %s", self.model_name, type(err).__name__, err)
            return False
        whole = [self._hidden(torch.tensor([seq]))[0, -1].float() for seq in (a, prompt + t1, prompt + t2, b)]
        rel = max(((p - w).abs().max() / w.abs().max().clamp_min(1e-6)).item() for p, w in zip(packed, whole))
        if rel >= self._probe_tolerance():
            log.warning("%s: packed hidden states differ from per-sequence ones (rel %.1e); packing off",
                        self.model_name, rel)
        return bool(rel < self._probe_tolerance())

    @torch.inference_mode()
    def forward(self, batch: Sequence[EncodedItem]) -> list[ScoreOutput]:
        lengths = [e.num_tokens for e in batch]
        width = max(lengths)
        ids = torch.tensor([e.input_ids + [self.pad_id] * (width - e.num_tokens) for e in batch])
        mask = None
        if not self.causal:
            mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
            mask = mask.to(self.input_device)
        hidden = self._hidden(ids, mask)
        rows = torch.arange(len(batch), device=hidden.device)
        last = torch.tensor(lengths, device=hidden.device) - 1
        return self._outputs(hidden[rows, last])

    @torch.inference_mode()
    def forward_packed(self, units: Sequence[PackUnit]) -> list[ScoreOutput]:
        layout = PackLayout(units, self.input_device)
        hidden = self._packed_hidden(layout)
        return self._outputs(hidden[layout.last_positions.to(hidden.device)])

    def _outputs(self, pooled: torch.Tensor) -> list[ScoreOutput]:
        """The head on each item's last hidden state: score = logit 0, every label's logit, named."""
        out = []
        for logits in self.head(pooled).float().cpu().tolist():
            values = dict(zip(self.output_names, logits)) if self.output_names else None
            out.append(ScoreOutput(logits[0], values=values, logits=logits))
        return out

    def health(self) -> None:
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.input_device)


def _label_names(config: Any) -> tuple[str, ...]:
    """Names of the labels of a multi-label head, from `id2label`; none for a one-label reward head."""
    labels = int(getattr(config, "num_labels", 1) or 1)
    if labels < 2:
        return ()
    id2label = getattr(config, "id2label", None) or {}
    return tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(labels))
