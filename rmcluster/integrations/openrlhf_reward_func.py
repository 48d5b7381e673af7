"""OpenRLHF `--reward.remote_url <this file>`: `reward_func(queries, prompts, labels)` calling the Serve app.

For trainers on the Ray cluster where `serve run` runs (a handle, no HTTP hop). Where the service is, from
the environment of OpenRLHF's actors: RMCLUSTER_APP (default "reward") or RMCLUSTER_URL, or RMCLUSTER_SERVICE
(JSON of `rmcluster.integrations.service.ServiceSettings`). Path: `python -c "import
rmcluster.integrations.openrlhf_reward_func as m; print(m.__file__)"`.

Each query is the policy's decoded sequence, chat template and BOS included, so it is scored as text with no
special tokens added, as `/get_reward` does. OpenRLHF calls this from worker threads, one query at a time;
the Serve replica batches concurrent calls (and their shared prompts) itself.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

# Absolute imports: OpenRLHF loads this file by path, outside its package.
from rmcluster.integrations.service import RewardService, ServiceSettings

_lock = threading.Lock()
_service: Optional[RewardService] = None


def _get_service() -> RewardService:
    global _service
    with _lock:
        if _service is None:
            _service = RewardService(ServiceSettings.from_env())
        return _service


def reward_func(queries: list[str], prompts: list[str], labels: list[Any]) -> dict[str, Any]:
    """{"rewards", "scores", "extra_logs"} as OpenRLHF reads them: tensors with one value per query."""
    import torch

    service = _get_service()
    scores = torch.tensor(service.score_texts_sync(queries), dtype=torch.float32)
    logs = {k: torch.full((len(scores),), v) for k, v in service.metrics(prefix="rmcluster_").items()}
    return {"rewards": scores, "scores": scores, "extra_logs": logs}
