"""The parity oracle: the plain per-conversation HF loop, written independently of rmcluster."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class ReferenceLoop:
    """`model(apply_chat_template(conv)).logits[0][0]`, one conversation at a time."""

    def __init__(self, path, dtype=torch.float32, attn_implementation="sdpa"):
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=dtype, attn_implementation=attn_implementation
        ).eval()

    def ids(self, conversation) -> torch.Tensor:
        out = self.tokenizer.apply_chat_template(conversation, tokenize=True, return_tensors="pt")
        return out["input_ids"] if hasattr(out, "keys") else out  # transformers 5.x returns a BatchEncoding

    @torch.no_grad()
    def score_ids(self, ids) -> float:
        ids = torch.as_tensor(ids).reshape(1, -1)
        return self.model(ids).logits[0][0].item()

    def score(self, conversation) -> float:
        return self.score_ids(self.ids(conversation))

    def scores(self, conversations) -> list[float]:
        return [self.score(c) for c in conversations]
