"""Sequence-classifier reward models (AutoModelForSequenceClassification): score = logit 0 at the last token.

Batches are right-padded. For causal decoders no attention mask is passed: a real token never
attends to the pads after it, so its hidden state equals the unpadded one, and attention takes the
fast `is_causal` kernels instead of a masked path. Pooling uses each item's own length, so it never
depends on `config.pad_token_id` and tokenizers without a pad token batch too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from ..model_loading import max_positions
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
        self.chat = ChatTokenizer(tokenizer, self.max_length, on_overflow)
        # Any in-vocabulary id works as filler: pads are never attended (causal) or are masked.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.causal = self._is_causal()
        log.info("%s: causal=%s (right padding %s attention mask)", model_name, self.causal,
                 "without" if self.causal else "with")

    @classmethod
    def from_config(cls, config: "RMConfig") -> "SequenceClassifierScorer":
        from ..model_loading import load_sequence_classifier

        model, tokenizer, _ = load_sequence_classifier(config.model)
        tok = config.tokenization
        return cls(model, tokenizer, config.model.name, tok.max_length, tok.on_overflow)

    @staticmethod
    def encoder_from_config(config: "RMConfig") -> ChatTokenizer:
        """The same encoding without the weights, for tokenizing outside the model replica."""
        from ..model_loading import load_model_config, load_tokenizer

        tok = config.tokenization
        max_length = tok.max_length or max_positions(load_model_config(config.model))
        return ChatTokenizer(load_tokenizer(config.model), max_length, tok.on_overflow)

    def _hidden(self, ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
        return self.backbone(input_ids=ids.to(self.input_device), use_cache=False, **kwargs).last_hidden_state

    @torch.inference_mode()
    def _is_causal(self) -> bool:
        """Probe: does appending tokens leave earlier hidden states unchanged?"""
        gen = torch.Generator().manual_seed(0)
        vocab = self.model.get_input_embeddings().num_embeddings
        ids = torch.randint(0, vocab, (1, 24), generator=gen)
        full = self._hidden(ids)[0, 15].float()
        prefix = self._hidden(ids[:, :16])[0, 15].float()
        rel = ((full - prefix).abs().max() / prefix.abs().max().clamp_min(1e-6)).item()
        return rel < (1e-3 if self.model.dtype == torch.float32 else 3e-2)

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

    def health(self) -> None:
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.input_device)
