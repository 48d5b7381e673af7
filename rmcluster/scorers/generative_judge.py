"""Generative judges: a causal LM's judgement read from its vocabulary, in one forward pass.

The judge prompt (rmcluster/judging.py) ends with the answer prefix; the logits at its last position,
restricted to the verdict tokens, are a linear head made of the LM head's rows for those tokens. So
a judgement is a head on the decoder runner like a sequence classifier's, and padded, packed and
shared-prompt batches apply unchanged.

- two verdicts (Yes/No, A/B): `score` = logit(first) - logit(second), the log-odds of the two-way
  softmax; `values` holds each verdict's probability.
- grades (1..5): `score` = the expected grade under the softmax over the grade tokens.

With `generate`, the judge first writes a rationale: greedy, batched `generate` with a KV cache, until
it emits the answer prefix (or stops, and then the prefix is appended); the verdict is then read at
that position as in one-pass mode, so the score is still a probability. The rationale is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from ..encoding import EncodedItem
from ..judging import JudgeEncoder
from ..outputs import ScoreOutput
from .base import Scorer
from .decoder import DecoderRunner, DecoderScorer, capped_logits, lm_head_rows

if TYPE_CHECKING:
    from ..config import RMConfig


class GenerativeJudgeScorer(DecoderScorer):
    encoder: JudgeEncoder

    def __init__(self, model: Any, encoder: JudgeEncoder, model_name: str, compile: bool = False,
                 max_new_tokens: Optional[int] = None):
        self.encoder = encoder
        self.head = lm_head_rows(model, encoder.verdict_ids)
        self.output_names = encoder.verdicts
        self.max_new_tokens = max_new_tokens
        super().__init__(DecoderRunner(model, encoder.tokenizer.pad_token_id, model_name, compile), model_name)
        if max_new_tokens is not None:
            self.supports_packing = self.supports_prefix_cache = False  # generation runs HF generate on padded batches

    @classmethod
    def from_config(cls, config: "RMConfig", encoder: JudgeEncoder) -> Scorer:
        from ..model_loading import load_model

        model, _ = load_model(config.model)
        generate = getattr(config.model, "generate", None)
        return cls(model, encoder, config.model.name, config.model.compile,
                   generate.max_new_tokens if generate is not None else None)

    def read(self, hidden: list[torch.Tensor], items: Sequence[EncodedItem]) -> list[ScoreOutput]:
        logits = capped_logits(self.model, self.head(torch.cat(hidden)).float()).double()
        probs = logits.softmax(-1).cpu().tolist()
        out = []
        for row, p in zip(logits.cpu().tolist(), probs):
            values = dict(zip(self.output_names, p))
            if self.encoder.grades is not None:
                score = sum(g * q for g, q in zip(self.encoder.grades, p))
            else:
                score = row[0] - row[1]
            out.append(ScoreOutput(float(score), values=values))
        return out

    def forward(self, batch: Sequence[EncodedItem]) -> list[ScoreOutput]:
        if self.max_new_tokens is None:
            return super().forward(batch)
        continued, rationales = self._reason(batch)
        outputs = super().forward(continued)
        return [ScoreOutput(o.score, values=o.values, rationale=r) for o, r in zip(outputs, rationales)]

    @torch.inference_mode()
    def _reason(self, batch: Sequence[EncodedItem]) -> tuple[list[EncodedItem], list[str]]:
        """Greedy generation per prompt up to the answer prefix: (prompt + rationale + prefix, rationale)."""
        assert self.max_new_tokens is not None
        prefix = self.encoder.prefix_ids
        tokenizer = self.encoder.tokenizer
        pad = self.runner.pad_id
        width = max(e.num_tokens for e in batch)
        rows = [[pad] * (width - e.num_tokens) + e.input_ids for e in batch]  # left-padded, as generate wants
        mask = [[0] * (width - e.num_tokens) + [1] * e.num_tokens for e in batch]
        device = self.runner.input_device
        generated = self.model.generate(
            input_ids=torch.tensor(rows, device=device), attention_mask=torch.tensor(mask, device=device),
            max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad,
            stopping_criteria=_ends_with(prefix, width),
        )[:, width:].tolist()
        eos = set(_as_list(self.model.generation_config.eos_token_id) + _as_list(tokenizer.eos_token_id))
        continued, rationales = [], []
        for e, new in zip(batch, generated):
            rationale, tail = _cut(new, prefix, eos)
            continued.append(EncodedItem(e.input_ids + rationale + tail, e.truncated))
            rationales.append(tokenizer.decode(rationale, skip_special_tokens=True))
        return continued, rationales


def _as_list(ids: Any) -> list[int]:
    if ids is None:
        return []
    return [int(i) for i in ids] if isinstance(ids, (list, tuple)) else [int(ids)]


def _cut(new: list[int], prefix: list[int], eos: set[int]) -> tuple[list[int], list[int]]:
    """(the rationale, then the prefix): up to the first emitted prefix, else up to the stop with the
    prefix appended, as if the judge had then written it."""
    n = len(prefix)
    for end in range(len(new)):
        if new[end] in eos:
            return new[:end], list(prefix)
        if n and end + 1 >= n and new[end + 1 - n : end + 1] == prefix:
            return new[: end + 1 - n], list(prefix)
    return new, list(prefix)


def _ends_with(tokens: list[int], prompt_width: int) -> Any:
    """Stop a row once its generated tokens end with the answer prefix (generate pads finished rows)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class EndsWith(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            n = len(tokens)
            if not n or input_ids.shape[1] - prompt_width < n:
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            return (input_ids[:, -n:] == torch.tensor(tokens, device=input_ids.device)).all(-1)

    return StoppingCriteriaList([EndsWith()])
