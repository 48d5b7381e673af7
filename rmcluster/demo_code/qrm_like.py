"""QRM-like reward model (mimics nicolinho/QRM-Llama3.1-8B): ArmoRM-style gating over quantile rewards.

Each objective predicts Q quantiles of its reward distribution; an objective's reward is their mean.
Written from the described behaviour, not copied. Loaded with
AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True). Its pooling and gate
positions come from armo_like.py, which the checkpoint carries beside it (transformers copies a remote
module's relative imports too).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel
from transformers.utils import ModelOutput

from .armo_like import first_pad_minus_one, last_pattern_end


@dataclass
class QuantileRewardOutput(ModelOutput):
    reward_quantiles: torch.FloatTensor | None = None  # [B, K, Q]
    rewards: torch.FloatTensor | None = None  # [B, K] mean over quantiles
    gating_output: torch.FloatTensor | None = None  # [B, K]
    score: torch.FloatTensor | None = None  # [B, 1]
    logits: torch.FloatTensor | None = None  # == score


class LlamaForQuantileRewardModelWithGating(LlamaPreTrainedModel):
    """Config extras: num_objectives (K), num_quantiles (Q), gating_hidden_dim, gating_token_pattern."""

    def __init__(self, config) -> None:
        super().__init__(config)
        k, q = config.num_objectives, config.num_quantiles
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, k * q, bias=False)
        self.gating = nn.Sequential(
            nn.Linear(config.hidden_size, config.gating_hidden_dim),
            nn.ReLU(),
            nn.Linear(config.gating_hidden_dim, k),
        )
        self.reward_transform_matrix = nn.Parameter(torch.eye(k), requires_grad=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> QuantileRewardOutput:
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        pooled = first_pad_minus_one(input_ids, self.config.pad_token_id)
        gate_at = last_pattern_end(input_ids, list(self.config.gating_token_pattern), pooled)
        quantiles = self.regression_layer(hidden[rows, pooled]).view(
            -1, self.config.num_objectives, self.config.num_quantiles
        )
        # Quantile heads are unordered at random init; sort so they read as quantiles.
        quantiles = quantiles.sort(dim=-1).values
        rewards = quantiles.mean(dim=-1)
        gating_output = torch.softmax(self.gating(hidden[rows, gate_at]), dim=-1)
        score = torch.sum(gating_output * (rewards @ self.reward_transform_matrix), dim=1, keepdim=True)
        return QuantileRewardOutput(
            reward_quantiles=quantiles, rewards=rewards, gating_output=gating_output, score=score, logits=score
        )
