"""Sequence-classifier reward models (AutoModelForSequenceClassification): score = logit 0 at the last token.

The head (`model.score`, one row per label) is applied to the final hidden state of each item's
last real token, from padded or packed forwards of the backbone (`DecoderRunner`). Pooling uses
each item's own length, so it never depends on `config.pad_token_id` and tokenizers without a pad
token batch too.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..encoding import EncodedItem
from ..outputs import ScoreOutput
from ..templating import ChatEncoder
from .decoder import DecoderRunner, DecoderScorer

if TYPE_CHECKING:
    from ..config import RMConfig


class SequenceClassifierScorer(DecoderScorer):
    def __init__(self, model: Any, encoder: ChatEncoder, model_name: str, compile: bool = False,
                 fp32_head: bool = False):
        head = getattr(model, "score", None)
        if not isinstance(head, torch.nn.Module):
            raise ValueError(
                f"{type(model).__name__} has no per-token `score` head; the sequence-classifier scorer "
                "supports decoder reward models (Llama, Mistral, Qwen, Gemma, ...). A checkpoint with its own "
                "head code takes model.kind: custom_classifier."
            )
        # A float32 copy: the model's own head (and its bf16 parity with the reference loop) stays as it is.
        self.head = copy.deepcopy(head).float() if fp32_head else head
        self.fp32_head = fp32_head
        self.encoder = encoder
        self.output_names = _label_names(model.config)
        super().__init__(DecoderRunner(model, encoder.tokenizer.pad_token_id, model_name, compile), model_name)

    @classmethod
    def from_config(cls, config: "RMConfig", encoder: ChatEncoder) -> "SequenceClassifierScorer":
        from ..model_loading import load_model

        labels = getattr(config.model, "num_labels", None)
        model, _ = load_model(config.model, **({"num_labels": labels} if labels is not None else {}))
        return cls(model, encoder, config.model.name, config.model.compile,
                   bool(getattr(config.model, "fp32_head", False)))

    def read(self, hidden: list[torch.Tensor], items: Sequence[EncodedItem]) -> list[ScoreOutput]:
        """The head on each item's last hidden state: score = logit 0, every label's logit, named."""
        out = []
        pooled = torch.cat(hidden)
        for logits in self.head(pooled.float() if self.fp32_head else pooled).float().cpu().tolist():
            values = dict(zip(self.output_names, logits)) if self.output_names else None
            out.append(ScoreOutput(logits[0], values=values, logits=logits))
        return out


def _label_names(config: Any) -> tuple[str, ...]:
    """Label names from `id2label`, when they say something: several labels, or one named label."""
    labels = int(getattr(config, "num_labels", 1) or 1)
    id2label = getattr(config, "id2label", None) or {}
    names = tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(labels))
    return names if labels > 1 or names != ("LABEL_0",) else ()
