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

from ..model_loading import max_positions
from ..packing import PackLayout, PackUnit
from ..records import ScoreItem
from ..templating import ChatTokenizer, EncodedItem
from .base import Scorer

if TYPE_CHECKING:
    from ..config import RMConfig

log = logging.getLogger(__name__)

class SequenceClassifierScorer(Scorer):
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_name: str,
        max_length: Optional[int] = None,
        on_overflow: str = "error",
        share_prompts: bool = True,
        compile: bool = False,
    ):
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
        self.input_device = model.get_input_embeddings().weight.device
        self.device_type = self.input_device.type
        self.max_length = max_length or max_positions(model.config)
        self.chat = ChatTokenizer(tokenizer, self.max_length, on_overflow, share_prompts)
        # Any in-vocabulary id works as filler: pads are never attended (causal) or are masked.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
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
    def from_config(cls, config: "RMConfig") -> "SequenceClassifierScorer":
        from ..model_loading import load_sequence_classifier

        model, tokenizer, _ = load_sequence_classifier(config.model)
        tok = config.tokenization
        share = config.batching.shared_prompt != "off"
        return cls(model, tokenizer, config.model.name, tok.max_length, tok.on_overflow, share, config.model.compile)

    @staticmethod
    def encoder_from_config(config: "RMConfig") -> ChatTokenizer:
        """The same encoding without the weights, for tokenizing outside the model replica."""
        from ..model_loading import load_model_config, load_tokenizer

        tok = config.tokenization
        max_length = tok.max_length or max_positions(load_model_config(config.model))
        share = config.batching.shared_prompt != "off"
        return ChatTokenizer(load_tokenizer(config.model), max_length, tok.on_overflow, share)

    def _hidden(self, ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
        with self._forward_lock:
            return self.backbone(input_ids=ids.to(self.input_device), use_cache=False, **kwargs).last_hidden_state

    def _packed_hidden(self, layout: PackLayout) -> torch.Tensor:
        """Final hidden states [T, hidden] of a packed row; `use_cache=False`, or a cache object would
        hide the packing and let sequences attend to each other."""
        from ..segment_attention import segment_forward

        with self._forward_lock, segment_forward(self.model, layout, self.varlen_fn):
            out = self.packed_backbone(input_ids=layout.input_ids, position_ids=layout.position_ids, use_cache=False)
        return out.last_hidden_state[0]

    def _varlen_kernel(self):
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
        return rel < self._probe_tolerance()

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
        return rel < self._probe_tolerance()

    def encode(self, item: ScoreItem) -> EncodedItem:
        return self.chat.encode(item)

    @torch.inference_mode()
    def forward(self, batch: Sequence[EncodedItem]) -> list[list[float]]:
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
        return self.head(hidden[rows, last]).float().cpu().tolist()

    @torch.inference_mode()
    def forward_packed(self, units: Sequence[PackUnit]) -> list[list[float]]:
        layout = PackLayout(units, self.input_device)
        hidden = self._packed_hidden(layout)
        return self.head(hidden[layout.last_positions.to(hidden.device)]).float().cpu().tolist()

    def health(self) -> None:
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.input_device)
