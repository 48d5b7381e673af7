"""Parity oracles for the non-classifier reward-model kinds: each checkpoint's own documented usage.

One conversation at a time, exactly as the model cards show, independent of rmcluster: each takes a
checkpoint path. Models and tokenizers are loaded once per path (float32, sdpa, eval).
"""

from __future__ import annotations

import functools
import math
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


@torch.no_grad()
def judge_reference(path, messages: Conversation, answer_prefix: str, verdicts: list[str]) -> list[float]:
    """A one-pass judge, plainly: the judge chat with its generation prompt, then the answer prefix's
    tokens; the logits at the last position, read at each verdict's token (the token after the prefix)."""
    model, tokenizer = load(str(path), AutoModelForCausalLM, False)
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    # As if the judge had written the prefix text and then a verdict: the tokens of prefix + verdict.
    split = [tokenizer(answer_prefix + v, add_special_tokens=False)["input_ids"] for v in verdicts]
    prefix, verdict_ids = split[0][:-1], [t[-1] for t in split]
    logits = model(torch.tensor([ids + prefix])).logits[0, -1]
    return [logits[v].item() for v in verdict_ids]


@torch.no_grad()
def reasoning_judge_reference(path, messages: Conversation, answer_prefix: str, verdicts: list[str],
                              max_new_tokens: int) -> tuple[list[float], str]:
    """A judge that reasons first, one item at a time: greedy `generate` for max_new_tokens (or to EOS),
    cut at the first answer prefix it wrote (else append the prefix), then the verdict logits there."""
    model, tokenizer = load(str(path), AutoModelForCausalLM, False)
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    # An explicit mask: without one, generate takes every pad-id token for padding (and pad may be BOS's id).
    prompt = torch.tensor([ids])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.eos_token_id)[0, len(ids):].tolist()
    split = [tokenizer(answer_prefix + v, add_special_tokens=False)["input_ids"] for v in verdicts]
    prefix = split[0][:-1]
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    rationale = out
    for end, token in enumerate(out):
        if token in eos:
            rationale = out[:end]
            break
        if out[max(0, end + 1 - len(prefix)) : end + 1] == prefix and end + 1 >= len(prefix):
            rationale = out[: end + 1 - len(prefix)]
            break
    verdict_ids = [t[-1] for t in split]
    logits = model(torch.tensor([ids + rationale + prefix])).logits[0, -1]
    return [logits[v].item() for v in verdict_ids], tokenizer.decode(rationale, skip_special_tokens=True)


@torch.no_grad()
def response_logps(path, prompt: Conversation, response: Conversation) -> list[float]:
    """DPO's per-token log-probs of the response tokens, one conversation at a time: log_softmax of the
    logits at each position, gathered at the next token, over the tokens after the templated prompt."""
    model, tokenizer = load(str(path), AutoModelForCausalLM, False)
    full = chat_ids(tokenizer, prompt + response)[0]
    head = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
    start = len(head["input_ids"] if hasattr(head, "keys") else head)
    assert full[:start].tolist() == list(head["input_ids"] if hasattr(head, "keys") else head)
    logps = model(full[None]).logits[0].float().log_softmax(-1)
    return [logps[t - 1, full[t]].item() for t in range(start, len(full))]


def judge_messages(system: str | None, template: str, **fields) -> Conversation:
    """A judge's chat: the system message, then the user message rendered from the Jinja template."""
    import jinja2

    user = jinja2.Template(template, keep_trailing_newline=True).render(**fields)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def pairwise_judge_reference(path, system, template, prefix: str, prompt: str, first: str, second: str):
    """(the first response's log-odds of winning, P(win as A), P(win as B)) from both orders, plainly."""
    a, b = judge_reference(path, judge_messages(system, template, prompt=prompt, response_a=first, response_b=second),
                           prefix, ["A", "B"])
    c, d = judge_reference(path, judge_messages(system, template, prompt=prompt, response_a=second, response_b=first),
                           prefix, ["A", "B"])
    as_a, as_b = 1 / (1 + math.exp(b - a)), 1 / (1 + math.exp(c - d))
    p = (as_a + as_b) / 2
    return math.log(p / (1 - p)), as_a, as_b
