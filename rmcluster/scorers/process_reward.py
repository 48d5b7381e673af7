"""Process reward models: one score per reasoning step, read at each step separator token.

Two heads, as the public checkpoints have them:
- a token head of the checkpoint's own code (Qwen2.5-Math-PRM: `outputs[0]` is [B, T, 2]); a step's
  score is softmax(logits)[positive_label] at its separator. Runs the checkpoint's own forward,
  batched as the load-time probe allows (`own_forward`).
- a causal LM's vocabulary (Math-Shepherd): softmax over the logits of `candidate_tokens` at each
  separator, taking the first. Runs on the shared decoder runner, so it packs and shares prompts.
The item's `score` aggregates its step scores (`aggregate`: min, last, mean or prod).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..config import ProcessRewardModel
from ..encoding import EncodedItem
from ..outputs import ScoreOutput
from ..templating import ChatEncoder, single_token_id
from .base import Scorer
from .custom_classifier import pad_id_of
from .decoder import DecoderRunner, DecoderScorer, capped_logits, lm_head_rows
from .own_forward import OwnForwardRunner, PaddedBatch, output_field, random_items

if TYPE_CHECKING:
    from ..config import RMConfig

AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "min": min, "last": lambda s: s[-1], "mean": lambda s: sum(s) / len(s), "prod": math.prod}
PROBE_STEPS = [("What is 3 * 4 + 1?", ["3 * 4 = 12.", "12 + 1 = 13.", "The answer is 13."]),
               ("Is 9 even?", ["9 = 2 * 4 + 1, so it is odd.", "No."])]


def step_positions(item: EncodedItem, step_id: int) -> list[int]:
    return [j for j, t in enumerate(item.input_ids) if t == step_id]


def step_output(steps: list[float], aggregate: str) -> ScoreOutput:
    if not steps:
        raise ValueError("no step separator in the item (truncated away?)")
    return ScoreOutput(float(AGGREGATES[aggregate](steps)), step_scores=steps)


def _probes(encoder: ChatEncoder, vocab: int, avoid: list[int], step_id: int) -> list[EncodedItem]:
    from ..records import ScoreItem

    chats = [encoder.encode(ScoreItem(str(i), 0, messages=[{"role": "user", "content": q}], num_prompt_messages=1,
                                      steps=tuple(steps)))
             for i, (q, steps) in enumerate(PROBE_STEPS)]
    return chats + random_items(vocab, avoid, mark=step_id)


class TokenHeadPRMScorer(Scorer):
    """The checkpoint's own per-token head (remote code), read at the step separators."""

    def __init__(self, model: Any, encoder: ChatEncoder, settings: ProcessRewardModel, model_name: str):
        assert encoder.step_token_id is not None
        self.model = model
        self.encoder = encoder
        self.settings = settings
        self.model_name = model_name
        self.step_id = encoder.step_token_id
        pad = pad_id_of(model, encoder)
        vocab = int(model.get_input_embeddings().num_embeddings)
        self.runner = OwnForwardRunner(model, pad, model_name, self._read, _probes(encoder, vocab, [pad], self.step_id))
        self.device_type = self.runner.device_type

    def _read(self, output: Any, batch: PaddedBatch) -> list[ScoreOutput]:
        logits = torch.as_tensor(output_field(output, 0, "step head (outputs[0])")).float()
        if logits.dim() != 3 or logits.shape[-1] <= self.settings.positive_label:
            raise ValueError(f"a token-head PRM's outputs[0] must be [batch, tokens, labels > "
                             f"{self.settings.positive_label}], got {list(logits.shape)}")
        probs = logits.softmax(-1)[..., self.settings.positive_label].cpu()
        out = []
        for row in range(len(batch.lengths)):
            ids = batch.input_ids[row].tolist()
            real = range(batch.offsets[row], batch.offsets[row] + batch.lengths[row])
            steps = [float(probs[row, j]) for j in real if ids[j] == self.step_id]
            out.append(step_output(steps, self.settings.aggregate))
        return out

    def forward(self, batch: Sequence[EncodedItem]) -> list[ScoreOutput]:
        return self.runner.forward(batch)

    def health(self) -> None:
        self.runner.health()


class CandidateTokenPRMScorer(DecoderScorer):
    """A causal LM read at each separator: softmax over the candidate tokens' logits, taking the first."""

    def __init__(self, model: Any, encoder: ChatEncoder, settings: ProcessRewardModel, model_name: str):
        assert encoder.step_token_id is not None and settings.candidate_tokens
        self.encoder = encoder
        self.settings = settings
        self.step_id = encoder.step_token_id
        candidates = [single_token_id(encoder.tokenizer, t) for t in settings.candidate_tokens]
        self.head = lm_head_rows(model, candidates)
        super().__init__(DecoderRunner(model, encoder.tokenizer.pad_token_id, model_name, settings.compile),
                         model_name)

    def positions(self, item: EncodedItem) -> list[int]:
        return step_positions(item, self.step_id)

    def read(self, hidden: list[torch.Tensor], items: Sequence[EncodedItem]) -> list[ScoreOutput]:
        probs = capped_logits(self.model, self.head(torch.cat(hidden)).float()).softmax(-1)[:, 0].cpu().tolist()
        out, at = [], 0
        for h in hidden:
            out.append(step_output(probs[at:at + len(h)], self.settings.aggregate))
            at += len(h)
        return out


def build(config: "RMConfig", encoder: ChatEncoder) -> Scorer:
    """The scorer for the configured head (the registry's entry point for this kind)."""
    from ..model_loading import load_model

    settings = config.model
    assert isinstance(settings, ProcessRewardModel)
    model, _ = load_model(settings)
    if settings.candidate_tokens:
        return CandidateTokenPRMScorer(model, encoder, settings, settings.name)
    return TokenHeadPRMScorer(model, encoder, settings, settings.name)
