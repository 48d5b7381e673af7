"""QRM-like reward model (mimics nicolinho/QRM-Llama3.1-8B): ArmoRM-style gating over quantile rewards.

Each objective predicts Q quantiles of its reward distribution; an objective's reward is their mean.
Written from the described behaviour, not copied. Loaded with
AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True). It is ArmoRM-like
(armo_like.py, which the checkpoint carries beside it: transformers copies a remote module's relative
imports too) but for the heads.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from .armo_like import LlamaForRewardModelWithGating


@dataclass
class QuantileRewardOutput(ModelOutput):
    reward_quantiles: torch.FloatTensor | None = None  # [B, K, Q]
    rewards: torch.FloatTensor | None = None  # [B, K] mean over quantiles
    gating_output: torch.FloatTensor | None = None  # [B, K]
    score: torch.FloatTensor | None = None  # [B, 1]
    logits: torch.FloatTensor | None = None  # == score


class LlamaForQuantileRewardModelWithGating(LlamaForRewardModelWithGating):
    """ArmoRM's pooling and gate; each objective's head predicts num_quantiles (Q) quantiles instead of one value."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.regression_layer = nn.Linear(config.hidden_size, config.num_objectives * config.num_quantiles, bias=False)
        self.post_init()

    def rewards_output(self, pooled: torch.Tensor, gating_output: torch.Tensor) -> QuantileRewardOutput:
        quantiles = self.regression_layer(pooled).view(-1, self.config.num_objectives, self.config.num_quantiles)
        # Quantile heads are unordered at random init; sort so they read as quantiles.
        quantiles = quantiles.sort(dim=-1).values
        rewards = quantiles.mean(dim=-1)
        score = torch.sum(gating_output * (rewards @ self.reward_transform_matrix), dim=1, keepdim=True)
        return QuantileRewardOutput(
            reward_quantiles=quantiles, rewards=rewards, gating_output=gating_output, score=score, logits=score
        )
