"""GRM-like value-head reward model (mimics Ray2333/GRM-llama3-8B-sftreg).

A Llama backbone with its LM head kept (GRM regularises with a text-generation loss) plus a scalar
value head. forward returns a plain tuple (lm_logits, loss, reward), used as
`_, _, reward = model(**tokens)`; reward [B] is read at the last real token of a right-padded batch.
Written from the described behaviour, not copied. Loaded with
AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).
"""


import torch
from torch import nn
from transformers import LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel


class LlamaForRewardWithValueHead(LlamaPreTrainedModel):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = outputs.last_hidden_state
        lm_logits = self.lm_head(hidden)
        if attention_mask is None:
            last = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        else:
            last = attention_mask.sum(-1) - 1  # assumes right padding, as GRM's own usage does
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        reward = self.v_head(hidden[rows, last]).squeeze(-1)
        return lm_logits, None, reward  # the loss slot is None: no labels at inference
