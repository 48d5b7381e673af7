"""Parity oracles for the non-classifier reward-model kinds: each checkpoint's own documented usage.

One conversation at a time, exactly as the model cards show, independent of rmcluster: each takes a
checkpoint path. Models and tokenizers are loaded once per path (float32, sdpa, eval).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

Conversation = list[dict]


@functools.cache
def load(path: str | Path, auto_class=AutoModelForSequenceClassification, trust_remote_code: bool = True):
    """(model, tokenizer) for a checkpoint, cached so an oracle can run hundreds of times cheaply."""
    # As the cards do: a config that is itself remote code (InternLM2) needs trust for the tokenizer too.
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = auto_class.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=trust_remote_code
    ).eval()
    return model, tokenizer


def chat_ids(tokenizer, conversation: Conversation) -> torch.Tensor:
    out = tokenizer.apply_chat_template(conversation, tokenize=True, return_tensors="pt")
    return out["input_ids"] if hasattr(out, "keys") else out  # transformers 5.x returns a BatchEncoding


@torch.no_grad()
def armo_reference(path, conversation: Conversation) -> tuple[float, list[float], list[float]]:
    """ArmoRM card: `output = model(input_ids)`; (score, per-objective rewards, gating weights)."""
    model, tokenizer = load(str(path))
    output = model(chat_ids(tokenizer, conversation))
    return output.score.float().item(), output.rewards[0].tolist(), output.gating_output[0].tolist()


@torch.no_grad()
def grm_reference(path, conversation: Conversation) -> float:
    """GRM card: `_, _, reward = model(input_ids=..., attention_mask=...)`."""
    model, tokenizer = load(str(path))
    ids = chat_ids(tokenizer, conversation)
    _, _, reward = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return reward.item()


@torch.no_grad()
def internlm2_reference(path, conversation: Conversation) -> float:
    """InternLM2-reward card: `model.get_score(tokenizer, conversation)` (AutoModel)."""
    model, tokenizer = load(str(path), AutoModel)
    return model.get_score(tokenizer, conversation)


@torch.no_grad()
def qwen_prm_reference(path, prompt: str, steps: list[str], system: str | None = None) -> list[float]:
    """Qwen2.5-Math-PRM card: steps joined and ended by <extra_0>; P(good) at each separator."""
    model, tokenizer = load(str(path), AutoModel)
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    # The template already emits BOS and plain demo-tokenizer calls add another: no specials here.
    ids = tokenizer.encode(text, return_tensors="pt", add_special_tokens=False)
    sep_id = tokenizer.convert_tokens_to_ids("<extra_0>")  # the card's encode("<extra_0>")[0] would be BOS here
    outputs = model(input_ids=ids)
    return make_step_rewards(outputs[0], ids == sep_id)[0]


def make_step_rewards(logits: torch.Tensor, token_masks: torch.Tensor) -> list[list[float]]:
    """Per sequence, softmax(logits)[..., 1] at the masked (separator) positions."""
    probabilities = torch.softmax(logits, dim=-1)[..., 1]
    return [row[mask].tolist() for row, mask in zip(probabilities, token_masks)]


@torch.no_grad()
def math_shepherd_reference(
    path, conversation_or_ids, step_tag: str = "ки", good: str = "+", bad: str = "-"
) -> list[float]:
    """Math-Shepherd card: P(good) among {good, bad} at every step tag.

    `conversation_or_ids`: the card's plain "question answer-with-step-tags" string (encoded with BOS,
    as the card's tokenizer.encode does), a chat conversation, or token ids.
    """
    model, tokenizer = load(str(path), AutoModelForCausalLM, False)
    if isinstance(conversation_or_ids, str):
        ids = torch.tensor([tokenizer.encode(conversation_or_ids)])
    elif isinstance(conversation_or_ids, list) and isinstance(next(iter(conversation_or_ids), None), dict):
        ids = chat_ids(tokenizer, conversation_or_ids)
    else:
        ids = torch.as_tensor(conversation_or_ids).reshape(1, -1)
    # The card slices tokenizer.encode("+ -") for Mistral's vocabulary; here the token strings are looked up.
    good_id, bad_id, tag_id = tokenizer.convert_tokens_to_ids([good, bad, step_tag])
    logits = model(ids).logits[:, :, [good_id, bad_id]]
    scores = logits.softmax(dim=-1)[:, :, 0]
    return scores[ids == tag_id].tolist()
