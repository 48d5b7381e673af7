"""A NeMo-RL environment backed by the rmcluster Serve app (NeMo-RL's reward-model environments are Ray actors).

    from nemo_rl.environments.utils import register_env
    register_env("rmcluster", "rmcluster.integrations.nemo_rl_environment.RmclusterEnvironment")
    # config: env: {rmcluster: {app_name: reward}}   (any ServiceSettings field); data with task_name "rmcluster"

`step(message_logs, metadata)` scores each log as a conversation (the last message is the response; logs with
the same earlier messages go as one group, so a shared prompt is computed once) and ends every episode, as
NeMo-RL's own RewardModelEnvironment does. NeMo-RL is not on the package index (it installs from its
repository with GPU dependencies), so without it this module stands alone with the same interface:
`EnvironmentReturn(observations, metadata, next_stop_strings, rewards, terminateds, answers)`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import ray

from rmcluster.integrations.service import RewardService

try:  # the real base class and return type where NeMo-RL is installed
    from nemo_rl.environments.interfaces import EnvironmentInterface, EnvironmentReturn
except ImportError:  # the same fields, read from nemo_rl/environments/interfaces.py
    EnvironmentInterface = object

    class EnvironmentReturn(NamedTuple):  # type: ignore[no-redef]
        observations: list[dict[str, str]]
        metadata: list[Any]
        next_stop_strings: list[Optional[list[str]]]
        rewards: Any  # torch.Tensor[B]
        terminateds: Any  # torch.Tensor[B], bool
        answers: Optional[list[Optional[str]]]


def _message(m: dict[str, Any]) -> dict[str, Any]:
    return {"role": m["role"], "content": m["content"]}  # NeMo-RL's logs also carry token_ids tensors


class _Environment(EnvironmentInterface):  # type: ignore[misc]  # NeMo-RL is untyped
    def __init__(self, config: Optional[dict[str, Any]] = None):
        self.service = RewardService(dict(config or {}))

    def step(self, message_log_batch: list[list[dict[str, Any]]], metadata: list[Any]) -> Any:
        import torch

        logs = [[_message(m) for m in log] for log in message_log_batch]
        scores = self.service.score_by_prompt_sync([(log[:-1], [log[-1]]) for log in logs])
        n = len(logs)
        return EnvironmentReturn(
            observations=[{"role": "environment", "content": f"Environment: {s}"} for s in scores],
            metadata=[None] * n, next_stop_strings=[None] * n,
            rewards=torch.tensor(scores, dtype=torch.float32), terminateds=torch.ones(n, dtype=torch.bool),
            answers=[str(log[-1]["content"]) for log in logs])

    def global_post_process_and_metrics(self, batch: Any) -> tuple[Any, dict[str, float]]:
        return batch, self.service.metrics(prefix="rmcluster_env/")

    def shutdown(self) -> None:
        self.service.close()


# NeMo-RL's create_env calls `.options(runtime_env=...).remote(config)` on the registered class.
RmclusterEnvironment = ray.remote(num_cpus=0)(_Environment)
