"""The parity oracles: the plain per-conversation HF loop, written independently of rmcluster, and
flash-attn's varlen semantics in plain torch, standing in for the CUDA kernel on CPU."""

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


def reference_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                     softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0):
    """flash_attn_varlen_func's documented semantics in plain torch (GQA; causal aligned to the bottom
    right), for checking the varlen plumbing on CPU. Not a kernel: slow, one segment at a time."""
    assert q.dim() == 3 and cu_seqlens_q.dtype == torch.int32 and dropout_p == 0.0 and causal and not softcap
    rep = q.shape[1] // k.shape[1]
    out = torch.empty_like(q)
    for i in range(len(cu_seqlens_q) - 1):
        qs, qe, ks, ke = (int(x) for x in (cu_seqlens_q[i], cu_seqlens_q[i + 1], cu_seqlens_k[i], cu_seqlens_k[i + 1]))
        assert qe - qs <= max_seqlen_q and ke - ks <= max_seqlen_k
        qi = q[qs:qe].transpose(0, 1)
        ki = k[ks:ke].repeat_interleave(rep, 1).transpose(0, 1)
        vi = v[ks:ke].repeat_interleave(rep, 1).transpose(0, 1)
        scores = qi @ ki.transpose(-1, -2) * (softmax_scale or q.shape[-1] ** -0.5)
        q_pos = torch.arange(ke - ks - (qe - qs), ke - ks)[:, None]
        k_pos = torch.arange(ke - ks)[None, :]
        allowed = k_pos <= q_pos
        if window_size[0] >= 0:
            allowed &= k_pos >= q_pos - window_size[0]
        out[qs:qe] = (scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ vi).transpose(0, 1)
    return out
