"""The NeMo-RL environment as NeMo-RL runs one: a Ray actor made by `.options(runtime_env=...).remote(config)`
(its create_env), then `step(message_logs, metadata)` and `global_post_process_and_metrics(batch)`.

NeMo-RL cannot be installed here (not on the package index; GPU dependencies), so this checks the
environment against its documented interface (nemo_rl/environments/interfaces.py), not its code.
"""

import os

import pytest
import torch

# EnvironmentReturn's fields, in order, as nemo_rl/environments/interfaces.py declares them.
NEMO_RL_FIELDS = ("observations", "metadata", "next_stop_strings", "rewards", "terminateds", "answers")

PROMPT = [{"role": "user", "content": "Give me a word that rhymes with cat."}]
LOGS = [PROMPT + [{"role": "assistant", "content": w, "token_ids": torch.tensor([1, 2])}]
        for w in ("hat", "mat, I suppose", "bat")] + [
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello?"},
     {"role": "assistant", "content": "Hello! How can I help?"}]]


def test_environment_actor_steps_like_nemo_rl(trainer_app, reference, ray_cluster):
    import ray

    from rmcluster.integrations.nemo_rl_environment import RmclusterEnvironment

    app, _ = trainer_app
    env = RmclusterEnvironment.options(runtime_env={"env_vars": dict(os.environ)}).remote({"app_name": app})
    out = ray.get(env.step.remote(LOGS, [None] * len(LOGS)), timeout=120)

    assert type(out)._fields == NEMO_RL_FIELDS
    expected = reference.scores([[{"role": m["role"], "content": m["content"]} for m in log] for log in LOGS])
    assert out.rewards.dtype == torch.float32 and out.rewards.shape == (len(LOGS),)
    assert out.rewards.tolist() == pytest.approx(expected, abs=1e-4)
    assert out.terminateds.dtype == torch.bool and out.terminateds.all()
    assert out.answers == [log[-1]["content"] for log in LOGS]
    assert [o["role"] for o in out.observations] == ["environment"] * len(LOGS)
    assert out.next_stop_strings == [None] * len(LOGS)

    batch, metrics = ray.get(env.global_post_process_and_metrics.remote({"rewards": out.rewards}))
    assert torch.equal(batch["rewards"], out.rewards)
    assert metrics["rmcluster_env/scored_items"] == len(LOGS) and metrics["rmcluster_env/score_latency_s"] > 0
    ray.get(env.shutdown.remote())
    ray.kill(env)
