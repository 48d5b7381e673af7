"""The veRL reward manager, driven by veRL's own reward loop (RewardLoopManager -> RewardLoopWorker actors ->
run_single per sample -> assemble_rm_scores), against the plain HF loop.

What runs is veRL 0.9's whole reward path as its trainer calls it (`compute_rm_score` on a DataProto of
rollouts); rollout generation and the policy update are not part of it (they need vLLM/FSDP on GPUs).
"""

import pytest
import torch

verl = pytest.importorskip("verl")

from omegaconf import OmegaConf  # noqa: E402  (veRL's dependency)

PROMPTS = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime number above ten."}],
    [{"role": "user", "content": "Write one line about the sea, please, with a colour in it."}],
]
RESPONSES = [[f"Answer {g}.{k}: " + "seven eleven thirteen " * (k % 3 + 1) for k in range(8)] for g in range(2)]


def _config(policy_path, app):
    return OmegaConf.create({
        "actor_rollout_ref": {"model": {"path": str(policy_path), "tokenizer_path": None}},
        "reward": {
            "num_workers": 1,
            "reward_manager": {"source": "importlib", "name": "RmclusterRewardManager",
                               "module": {"path": "pkg://rmcluster.integrations.verl_reward_manager"}},
            "reward_model": {"enable": False, "enable_resource_pool": False},
            "custom_reward_function": {"path": None, "name": None},
            "sandbox_fusion": None,
            "reward_kwargs": {"rmcluster": {"app_name": app, "batch_window_s": 0.05}},
        },
    })


def _rollouts(tokenizer, prompt_len=64, response_len=48):
    """A DataProto shaped as veRL's rollout: left-padded prompts, right-padded responses ending in EOS."""
    from verl import DataProto

    rows = [(g, p, r) for g, p in enumerate(PROMPTS) for r in RESPONSES[g]]
    prompts = torch.full((len(rows), prompt_len), tokenizer.pad_token_id or 0)
    responses = torch.full((len(rows), response_len), tokenizer.pad_token_id or 0)
    mask = torch.zeros((len(rows), prompt_len + response_len), dtype=torch.long)
    for i, (_, prompt, response) in enumerate(rows):
        p = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        prompts[i, prompt_len - len(p):] = torch.tensor(p)
        responses[i, : len(r)] = torch.tensor(r)
        mask[i, prompt_len - len(p): prompt_len + len(r)] = 1
    import numpy as np

    raw = np.empty(len(rows), dtype=object)
    raw[:] = [prompt for _, prompt, _ in rows]
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, responses], dim=1)},
        non_tensors={"raw_prompt": raw, "uid": np.array([f"g{g}" for g, _, _ in rows], dtype=object)},
    )


def test_verl_reward_loop_matches_reference(trainer_app, demo_dir, reference):
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager

    app, _ = trainer_app
    data = _rollouts(reference.tokenizer)
    out = RewardLoopManager(_config(demo_dir, app)).compute_rm_score(data)
    rm_scores = out.batch["rm_scores"]
    assert rm_scores.shape == data.batch["responses"].shape

    # The reference: veRL's own re-templating (raw_prompt + decoded response without EOS) scored by the HF loop.
    tok = reference.tokenizer
    response_len = data.batch["responses"].shape[1]
    for i in range(len(data)):
        valid = int(data.batch["attention_mask"][i, -response_len:].sum())
        text = tok.decode(data.batch["responses"][i, :valid]).replace(tok.eos_token, "")
        conv = list(data.non_tensor_batch["raw_prompt"][i]) + [{"role": "assistant", "content": text}]
        expected = torch.zeros(response_len)
        expected[valid - 1] = reference.score(conv)  # veRL's layout: the score at the last response token
        assert torch.allclose(rm_scores[i], expected, atol=1e-4), (i, rm_scores[i][valid - 1], expected[valid - 1])

    # The 16 samples arrived as 16 run_single calls and went to the service as one call of two groups.
    assert set(out.non_tensor_batch["rmcluster_batch_items"].tolist()) == {16.0}
    assert "rmcluster_score_latency_s" in out.meta_info["reward_extra_keys"]
