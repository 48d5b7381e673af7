"""A veRL reward manager backed by the rmcluster Serve app (veRL's reward loop, `source: importlib`).

    reward:
      reward_manager:
        source: importlib
        name: RmclusterRewardManager
        module: {path: "pkg://rmcluster.integrations.verl_reward_manager"}
      reward_kwargs:
        rmcluster: {app_name: reward}        # or {url: http://rm:8000}; any ServiceSettings field

As veRL's own reward-model path does, each sample is re-templated with the RM's chat template from
`raw_prompt` plus the decoded response (EOS removed). Unlike it, the samples of a step go together: a GRPO
group (samples with the same prompt) is one `prompt` + `responses` record, so its prompt is computed once. veRL places
the score at the last valid response token (`assemble_rm_scores`, inherited).
"""

from __future__ import annotations

from typing import Any, Optional

from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

# Absolute imports: veRL may load this file by path, outside its package.
from rmcluster.integrations.service import RewardService
from rmcluster.integrations.step_batcher import StepBatcher

Sample = tuple[list[dict[str, Any]], str]  # prompt messages, response text


class RmclusterRewardManager(RewardManagerBase):
    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, **_: Any):
        # veRL also passes reward_router_address / reward_model_tokenizer for its own RM servers: unused here.
        super().__init__(config, tokenizer, compute_score)
        reward_kwargs = dict(config.reward.get("reward_kwargs") or {})
        settings = dict(reward_kwargs.get("rmcluster") or {})
        window_s = float(settings.pop("batch_window_s", 0.02))
        self.service = RewardService(settings)
        self._batcher: Optional[StepBatcher[Sample, tuple[float, int]]] = None
        self._window_s = window_s

    async def run_single(self, data: Any) -> dict[str, Any]:
        item = data[-1]  # veRL scores the last sequence of a multi-sequence output
        response_ids = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-response_ids.shape[-1]:].sum())
        text = await self.loop.run_in_executor(None, lambda: self.tokenizer.decode(response_ids[:valid]))
        if self.tokenizer.eos_token:
            text = text.replace(self.tokenizer.eos_token, "")
        prompt = [dict(m) for m in item.non_tensor_batch["raw_prompt"]]
        if self._batcher is None:  # made on the event loop veRL runs us on
            self._batcher = StepBatcher(self._score_step, window_s=self._window_s)
        score, batch_items = await self._batcher.submit((prompt, text))
        info = self.service.metrics(prefix="rmcluster_")
        info["rmcluster_batch_items"] = float(batch_items)  # samples scored in this sample's call
        return {"reward_score": score, "reward_extra_info": info}

    async def _score_step(self, samples: list[Sample]) -> list[tuple[float, int]]:
        # One record per distinct prompt (a GRPO group, whatever its uid), responses in arrival order.
        pairs = [(prompt, [{"role": "assistant", "content": text}]) for prompt, text in samples]
        return [(score, len(samples)) for score in await self.service.score_by_prompt(pairs)]
