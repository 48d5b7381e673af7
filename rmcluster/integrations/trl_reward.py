"""An async reward function for TRL's GRPOTrainer and RLOOTrainer, backed by the rmcluster Serve app.

    from rmcluster.integrations.trl_reward import RmclusterReward
    trainer = GRPOTrainer(model=..., reward_funcs=[RmclusterReward(app_name="reward")], ...)  # or url="http://rm:8000"

Scores are what TRL's own reward-model path (`reward_funcs=[model]`) computes:
- standard format (prompts and completions are strings): `prompt + completion` as already-templated text,
  tokenized with no special tokens added (`RewardService.score_texts`);
- conversational format (lists of messages): `prompt + completion` templated with the RM's own chat template.
  Completions with the same prompt go as one {"prompt", "responses"} group, so a GRPO group's prompt runs once.
An item the service rejects (over max_length under on_overflow=error, or malformed) gets None, which TRL
allows; the rest are scored again without it. An empty completion is scored, as TRL's own path scores it: None
would give it advantage 0 (TRL's unscorable rows), sparing it the RM's verdict on saying nothing. GRPOConfig's
`chat_template_kwargs` do not reach the service, which templates with the RM's defaults.
This module imports no TRL: TRL needs only an async callable with a `__name__`.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional, Sequence, Union

from rmcluster.integrations.service import RewardService, ServiceSettings
from rmcluster.protocol import InvalidInputError, ItemRejectedError

Prompt = Union[str, list[dict[str, Any]]]


class RmclusterReward:
    """`reward_funcs=[RmclusterReward(app_name=..., **ServiceSettings fields)]`; TRL logs it under `name`.

    `max_rejected`: rejected items one call may set to None (each costs a retry); more mean a misconfigured
    service (e.g. max_length too short for the policy), so the error is raised instead.
    """

    def __init__(self, *, name: str = "rmcluster", max_rejected: int = 8, **settings: Any):
        self.__name__ = name  # what TRL's get_callable_name shows in its logs: rewards/<name>/mean
        self.max_rejected = max_rejected
        self.settings = ServiceSettings.model_validate(settings)
        self.service = RewardService(self.settings)

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (TRL's async GRPO hands reward functions to a spawned process): the service is remade there.
        return _remake, (self.__name__, self.max_rejected, self.settings.model_dump(exclude_unset=True))

    async def __call__(self, prompts: Sequence[Prompt], completions: Sequence[Prompt],
                       completion_ids: Optional[Sequence[Sequence[int]]] = None, **kwargs: Any) -> list[Optional[float]]:
        """One reward per completion, in order; None for the items the service rejects."""
        start, retries_before = time.perf_counter(), self.service.retries
        scores: list[Optional[float]] = [None] * len(completions)
        live = list(range(len(completions)))
        for attempt in range(self.max_rejected + 1):
            records, positions = _request(prompts, completions, live)
            try:
                nested = await self._score(records)
                break
            except (ItemRejectedError, InvalidInputError) as err:
                rejected = _rejected(err, positions)
                if not rejected or attempt == self.max_rejected:
                    raise
                live = [i for i in live if i not in rejected]
        for at, values in zip(positions, nested):
            for i, value in zip(at, values):
                scores[i] = value
        log_metric: Optional[Callable[[str, float], None]] = kwargs.get("log_metric")
        if log_metric is not None:  # TRL averages these per logging step, beside rewards/<name>/mean
            log_metric(f"{self.__name__}/score_latency_s", time.perf_counter() - start)
            log_metric(f"{self.__name__}/retries", float(attempt + self.service.retries - retries_before))
            log_metric(f"{self.__name__}/rejected", float(len(completions) - len(live)))
        return scores

    async def _score(self, records: list[Any]) -> list[list[float]]:
        if records and isinstance(records[0], dict):
            return await self.service.score_groups(records)
        return [[s] for s in await self.service.score_texts(records)]

    def close(self) -> None:
        self.service.close()


def _remake(name: str, max_rejected: int, settings: dict[str, Any]) -> RmclusterReward:
    return RmclusterReward(name=name, max_rejected=max_rejected, **settings)


def _is_conversational(prompt: Prompt) -> bool:
    # TRL's own test (trl.data_utils.is_conversational): a list whose first element is a message dict.
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict) and "role" in prompt[0]


def _request(prompts: Sequence[Prompt], completions: Sequence[Prompt], live: list[int]) -> tuple[list[Any], list[list[int]]]:
    """The live items as the service's records, and which completions each record's scores belong to."""
    if not live or not _is_conversational(prompts[live[0]]):
        return [str(prompts[i]) + str(completions[i]) for i in live], [[i] for i in live]
    groups: dict[str, list[int]] = {}
    for i in live:  # default=str: keys only; content the service cannot take is its to reject
        groups.setdefault(json.dumps(prompts[i], sort_keys=True, default=str), []).append(i)
    records = [{"prompt": prompts[at[0]], "responses": [completions[i] for i in at]} for at in groups.values()]
    return records, list(groups.values())


def _rejected(err: Union[ItemRejectedError, InvalidInputError], positions: list[list[int]]) -> set[int]:
    """The completions to leave out: the rejected item (400), or every item of the malformed record (422)."""
    if err.item is None:
        return set()
    if isinstance(err, InvalidInputError):
        return set(positions[err.item]) if err.item < len(positions) else set()
    items = [i for at in positions for i in at]
    return {items[err.item]} if err.item < len(items) else set()
