"""Qwen2.5-Math-PRM-like process reward model (mimics Qwen/Qwen2.5-Math-PRM-7B).

A two-class head on every token; a step's reward is softmax(logits)[..., 1] at each `<extra_0>`
separator. Llama backbone here (the real one is Qwen2), same head shape and outputs. Written from
the described behaviour, not copied. Loaded with AutoModel.from_pretrained(path, trust_remote_code=True).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class ProcessRewardOutput(ModelOutput):
    logits: torch.FloatTensor | None = None  # [B, T, 2]: (bad, good) per token


class Qwen2ForProcessRewardModel(LlamaPreTrainedModel):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, 2),
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> ProcessRewardOutput:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = outputs.last_hidden_state
        return ProcessRewardOutput(logits=self.score(hidden))
