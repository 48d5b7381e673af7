"""Conversations -> token ids exactly as the reference loop makes them, plus the truncation policy.

The reference is `tokenizer.apply_chat_template(conversation, tokenize=True)`. Already-templated
text is tokenized with `add_special_tokens=False`, because the template already emitted BOS.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .encoding import EncodedItem, Encoder, ItemError, KindEncoding, common_prefix_len
from .records import ScoreItem

if TYPE_CHECKING:
    from .config import RMConfig


def _id_list(out: Any) -> list[int]:
    """apply_chat_template returns a list (transformers 4.x) or a BatchEncoding (5.x)."""
    if hasattr(out, "keys") and "input_ids" in out:
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):  # batched shape [[...]]
        out = out[0]
    return list(out)


class ChatEncoder(Encoder):
    """Templating, tokenization and the truncation policy for one tokenizer."""

    def __init__(self, tokenizer: Any, max_length: int, on_overflow: str = "error",
                 kind: KindEncoding = KindEncoding(), vocab_size: Optional[int] = None):
        self.tokenizer = tokenizer
        # The model's embedding size: a tokenizer can hold more tokens than the model has rows for, and an
        # out-of-range id poisons every later CUDA call (a device-side assert), so it must never reach a forward.
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.on_overflow = on_overflow
        self.kind = kind
        self.step_token_id = single_token_id(tokenizer, kind.step_token) if kind.step_token else None
        # The responses of one record arrive one after another: template their prompt once.
        self._last_prompt: tuple[Any, list[list[int]]] = (None, [])
        self.bos_id: Optional[int] = tokenizer.bos_token_id
        self._adds_bos = _adds_bos(tokenizer)
        if getattr(tokenizer, "chat_template", None) is None:
            self._no_template: Optional[str] = ("this tokenizer has no chat template; send already-templated "
                                                "{'text': ...} records")
        else:
            self._no_template = None

    @classmethod
    def from_config(cls, config: "RMConfig") -> "ChatEncoder":
        """The model's tokenizer and context length, read from its files (no weights, no torch)."""
        from .checkpoint import (
            check_remote_code, load_tokenizer, max_positions, model_config, resolve_model_path, vocab_size,
        )

        m, tok = config.model, config.tokenization
        path = resolve_model_path(m.name, m.kind)
        checkpoint = model_config(path, m.revision)
        check_remote_code(m.name, checkpoint, m.auto_class_name, m.trust_remote_code)
        max_length = tok.max_length or max_positions(checkpoint)
        tokenizer = load_tokenizer(path, m.revision, m.trust_remote_code)
        return cls(tokenizer, max_length, tok.on_overflow, m.encoding(checkpoint), vocab_size(checkpoint))

    # -- tokenization -------------------------------------------------------------------------
    def conversation_ids(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> list[int]:
        if self._no_template:
            raise ItemError(self._no_template)
        out = self.tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt
        )
        return self._single_bos(_id_list(out))

    def text_ids(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Templated text's ids. `add_special_tokens` (vLLM's /classify default) puts the tokenizer's
        BOS in front, as a plain tokenizer call would; a text that already starts with BOS keeps one."""
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if add_special_tokens and self._adds_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return self._single_bos(ids)

    def given_ids(self, item: ScoreItem) -> Optional[list[int]]:
        """The ids of an item sent already templated: token ids as they are, text tokenized; else None."""
        if item.input_ids is not None:
            return list(item.input_ids)
        if item.text is not None:
            return self.text_ids(item.text, item.add_special_tokens)
        return None

    def _single_bos(self, ids: list[int]) -> list[int]:
        # A template that emits BOS plus a tokenizer that adds one gives [BOS, BOS, ...]; the
        # model never saw that in training and scores shift, so keep exactly one.
        if self.bos_id is not None:
            k = 0
            while k + 1 < len(ids) and ids[k] == self.bos_id and ids[k + 1] == self.bos_id:
                k += 1
            ids = ids[k:]
        return ids

    def final_message_start(self, item: ScoreItem, ids: list[int]) -> int:
        """Index of the first token of the final message (everything before it is the prompt side)."""
        if item.messages is None or len(item.messages) < 2:
            return 1 if ids and ids[0] == self.bos_id else 0
        head = item.messages[:-1]
        gen_prompt = item.messages[-1].get("role") == "assistant"
        return common_prefix_len(self.conversation_ids(head, add_generation_prompt=gen_prompt), ids)

    # -- items ---------------------------------------------------------------------------------
    def encode(self, item: ScoreItem) -> EncodedItem:
        item = self._join_steps(item)
        given = self.given_ids(item)
        if given is not None:
            ids = given
        elif item.messages is not None:
            ids = self.conversation_ids(item.messages)
        else:
            raise ItemError("item has neither messages nor text")
        if not ids:
            raise ItemError("item tokenizes to zero tokens")
        ids += self.kind.append_ids
        self.check_vocabulary(ids)
        if self.step_token_id is not None and self.step_token_id not in ids:
            raise ItemError(f"no step separator {self.kind.step_token!r} in the item: send the final message as a "
                            "list of steps, or put the separator after each step")
        need_prompt = self.kind.require_prompt
        if len(ids) <= self.max_length:
            if not need_prompt:
                return EncodedItem(ids)
            return EncodedItem(ids, prompt_tokens=self._required(self.prompt_prefix_tokens(item, ids)))
        if self.on_overflow != "truncate_left":
            raise ItemError(
                f"item is {len(ids)} tokens, over max_length {self.max_length} (on_overflow=error); "
                "raise max_length or set on_overflow=truncate_left"
            )
        kept = self.truncate_left(ids, self.final_message_start(item, ids))
        if not need_prompt:
            return EncodedItem(kept, truncated=True)
        # Truncation drops prompt tokens only, so the response starts that many tokens earlier.
        full = self._required(self.prompt_prefix_tokens(item, ids))
        return EncodedItem(kept, truncated=True, prompt_tokens=self._required(full - (len(ids) - len(kept))))

    def _required(self, prompt_tokens: int) -> int:
        if prompt_tokens <= 0:
            raise ItemError("the templated prompt is not an exact token prefix of the conversation (or there is no "
                            "prompt), so the response tokens are not defined; this kind scores the tokens after it")
        return prompt_tokens

    def check_vocabulary(self, ids: Sequence[int]) -> None:
        if self.vocab_size is not None and ids and (max(ids) >= self.vocab_size or min(ids) < 0):
            bad = max(ids) if max(ids) >= self.vocab_size else min(ids)
            raise ItemError(f"token id {bad} is outside the model's vocabulary (0..{self.vocab_size - 1}); the "
                            "tokenizer has tokens the model has no embedding for")

    def _join_steps(self, item: ScoreItem) -> ScoreItem:
        """A final message given as steps, as one assistant message: each step followed by the separator."""
        if item.steps is None:
            return item
        if self.kind.step_token is None:
            raise ItemError("a response given as a list of steps needs model.kind: process_reward (which joins the "
                            "steps with its step_token)")
        content = "".join(step + self.kind.step_token for step in item.steps)
        return replace(item, messages=[*(item.messages or []), {"role": "assistant", "content": content}], steps=None)

    def prompt_prefix_tokens(self, item: ScoreItem, ids: list[int]) -> int:
        """Length of the item's prompt tokens when they are an exact prefix of `ids`, else 0.

        The prompt is templated alone, first with the assistant header (shared by every response),
        then without it. Templates that render a message differently depending on what follows, or
        tokenizers that merge across the boundary, fail the check (0): a kind that scores the response
        tokens (DPO) makes that the item's error.
        """
        n = item.num_prompt_messages
        if item.messages is None or not 0 < n < len(item.messages):
            return 0
        prompt = item.messages[:n]
        gens = (True, False) if item.messages[n].get("role") == "assistant" else (False,)
        key = (prompt, gens)
        cached, candidates = self._last_prompt
        if cached != key:
            try:
                candidates = [self.conversation_ids(prompt, add_generation_prompt=g) for g in gens]
            except Exception:  # noqa: BLE001 - a template that refuses a prompt alone: no sharing
                candidates = []
            self._last_prompt = (([dict(m) for m in prompt], gens), candidates)
        for p in candidates:
            if 0 < len(p) < len(ids) and ids[: len(p)] == p:
                return len(p)
        return 0

    def truncate_left(self, ids: list[int], keep_from: int) -> list[int]:
        """Drop the oldest tokens after BOS so the sequence fits, keeping ids[keep_from:] whole."""
        head = [ids[0]] if self.bos_id is not None and ids[0] == self.bos_id else []
        keep_from = max(keep_from, len(head))
        tail_room = self.max_length - len(head)
        if len(ids) - keep_from > tail_room:
            raise ItemError(
                f"the final message alone is {len(ids) - keep_from} tokens (+{len(head)} BOS), over "
                f"max_length {self.max_length}; truncate_left never cuts the final message"
            )
        return head + ids[len(ids) - tail_room :]


def _adds_bos(tokenizer: Any) -> bool:
    """Whether a plain `tokenizer(text)` call puts BOS in front (Llama-3 does; Qwen does not)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    return bool(with_special[:1] == [bos] and plain[:1] != [bos])


def single_token_id(tokenizer: Any, text: str) -> int:
    """The id of `text`, which must tokenize to exactly one token (step separators, verdicts)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens {ids} for this tokenizer; it must be exactly one")
    return int(ids[0])
