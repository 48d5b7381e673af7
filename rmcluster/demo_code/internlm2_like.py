"""InternLM2-reward-like model (mimics internlm/internlm2-7b-reward).

A value head over every token, read at the last real token; callers append `config.reward_token_id`
to the conversation, and `get_score(tokenizer, conversation)` does that as the model card shows.
It has its own config class (model_type "internlm2", unknown to transformers), so, like the real
checkpoint, it cannot load at all without trust_remote_code. Written from the described behaviour,
not copied. Loaded with AutoModel.from_pretrained(path, trust_remote_code=True).
"""


import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel
from transformers.modeling_outputs import SequenceClassifierOutputWithPast
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel


class InternLM2Config(LlamaConfig):
    """A Llama config under another model_type, plus the id of the token whose value is the reward."""

    model_type = "internlm2"

    def __init__(self, reward_token_id: int | None = None, **kwargs) -> None:
        self.reward_token_id = reward_token_id
        super().__init__(**kwargs)


class InternLM2ForRewardModel(LlamaPreTrainedModel):
    config_class = InternLM2Config

    def __init__(self, config: InternLM2Config) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
        self.reward_token_id = config.reward_token_id
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = outputs.last_hidden_state
        values = self.v_head(hidden).squeeze(-1)  # [B, T]
        # First position where the running count of real tokens peaks: the last real token (right padding).
        ends = attention_mask.cumsum(dim=1).argmax(dim=1).view(-1, 1)
        return SequenceClassifierOutputWithPast(logits=torch.gather(values, 1, ends))  # [B, 1]

    @torch.no_grad()
    def get_score(self, tokenizer, conversation: list[dict]) -> float:
        """The card's usage: template without generation prompt, no extra specials, reward token appended."""
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
        input_ids = tokenizer.encode(text, return_tensors="pt", add_special_tokens=False)
        reward = torch.tensor([[self.reward_token_id]], dtype=torch.long)
        input_ids = torch.cat([input_ids, reward], dim=1).to(self.device)
        outputs = self.forward(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        return outputs[0].cpu().item()
