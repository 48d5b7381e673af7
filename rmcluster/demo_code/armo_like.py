"""ArmoRM-like reward model (mimics RLHFlow/ArmoRM-Llama3-8B-v0.1): multi-objective rewards mixed by a gate.

Written from the model card's described behaviour, not copied. Loaded with
AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True). Self-contained:
imports only torch and transformers, because transformers copies this single file into its module cache.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class RewardOutputWithGating(ModelOutput):
    rewards: torch.FloatTensor | None = None  # [B, K] per-objective rewards
    gating_output: torch.FloatTensor | None = None  # [B, K] mixing weights, rows sum to 1
    score: torch.FloatTensor | None = None  # [B] the preference score
    logits: torch.FloatTensor | None = None  # == score, for pipelines that read .logits


def first_pad_minus_one(input_ids: torch.LongTensor, pad_token_id: int | None) -> torch.LongTensor:
    """[B] pooling positions: the token before the first pad; the last token when a row has no pad.

    A row whose first token is a pad (left padding) also pools at the last token, through the modulo.
    """
    batch, length = input_ids.shape
    if pad_token_id is None:
        if batch > 1:
            raise ValueError("pad_token_id must be set to score a batch: pooling reads the first pad")
        return torch.full((1,), length - 1, dtype=torch.long, device=input_ids.device)
    first_pad = torch.eq(input_ids, pad_token_id).int().argmax(-1)
    return (first_pad - 1) % length


def last_pattern_end(input_ids: torch.LongTensor, pattern: list[int], fallback: torch.Tensor) -> torch.Tensor:
    """[B] position of the last token of the last occurrence of `pattern`; `fallback` where it is absent."""
    width = len(pattern)
    if width == 0 or input_ids.shape[1] < width:
        return fallback
    windows = input_ids.unfold(1, width, 1)  # [B, T - width + 1, width]
    found = (windows == torch.tensor(pattern, device=input_ids.device)).all(-1)
    ends = torch.arange(width - 1, input_ids.shape[1], device=input_ids.device).expand_as(found)
    last = torch.where(found, ends, torch.full_like(ends, -1)).max(-1).values
    return torch.where(last >= 0, last, fallback)


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    """Config extras: num_objectives (K), gating_hidden_dim, gating_token_pattern (token ids)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        k = config.num_objectives
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, k, bias=False)
        self.gating = nn.Sequential(
            nn.Linear(config.hidden_size, config.gating_hidden_dim),
            nn.ReLU(),
            nn.Linear(config.gating_hidden_dim, k),
        )
        # Fixed (not trained) mixing of objectives; always loaded from the checkpoint.
        self.reward_transform_matrix = nn.Parameter(torch.eye(k), requires_grad=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> RewardOutputWithGating:
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        pooled = first_pad_minus_one(input_ids, self.config.pad_token_id)
        # The gate reads the prompt side: the end of the last assistant header. No header: the pooled token.
        gate_at = last_pattern_end(input_ids, list(self.config.gating_token_pattern), pooled)
        gating_output = torch.softmax(self.gating(hidden[rows, gate_at]), dim=-1)
        return self.rewards_output(hidden[rows, pooled], gating_output)

    def rewards_output(self, pooled: torch.Tensor, gating_output: torch.Tensor) -> ModelOutput:
        """The objectives' rewards at the pooled token, mixed by the gate."""
        rewards = self.regression_layer(pooled)
        score = torch.sum(gating_output * (rewards @ self.reward_transform_matrix), dim=1)
        return RewardOutputWithGating(rewards=rewards, gating_output=gating_output, score=score, logits=score)
