"""Trainer-shaped run for bench/serve.py (`--trainer`): veRL GRPO reward steps, two ways, one app, one run.

- per-sample: what veRL's reward loop sends by default, one `POST /classify` per sample (the RM's template
  applied to raw_prompt + decoded response, BOS stripped), a step's samples all at once;
- adapter: veRL's own RewardLoopManager.compute_rm_score with rmcluster's reward manager
  (rmcluster/integrations/verl_reward_manager.py), which sends a step's GRPO groups as prompt + responses
  records over a Serve handle.

Each step: 12 groups of 8 samples (500-token prompts, 200-token responses; new prompts every step), after one
warm-up step. Target (issue 16): adapter tokens/s >= 2x per-sample.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
import torch

from bench.engine import make_mix
from bench.peers.compare import GROUP, GROUPS_PER_STEP, grpo_steps

PROMPT_LEN, RESPONSE_LEN = 1024, 512  # padded widths of the rollout tensors


def rollouts(tokenizer, convs):
    """A veRL rollout batch (left-padded prompts, right-padded responses ending in EOS) for a step's samples."""
    from verl import DataProto

    n, pad = len(convs), tokenizer.pad_token_id or 0
    prompts, responses = torch.full((n, PROMPT_LEN), pad), torch.full((n, RESPONSE_LEN), pad)
    mask = torch.zeros((n, PROMPT_LEN + RESPONSE_LEN), dtype=torch.long)
    for i, conv in enumerate(convs):
        p = tokenizer.apply_chat_template(conv[:1], tokenize=True, add_generation_prompt=True)["input_ids"]
        r = tokenizer(conv[1]["content"], add_special_tokens=False)["input_ids"][: RESPONSE_LEN - 1]
        r = r + [tokenizer.eos_token_id]
        prompts[i, PROMPT_LEN - len(p):], responses[i, : len(r)] = torch.tensor(p), torch.tensor(r)
        mask[i, PROMPT_LEN - len(p): PROMPT_LEN + len(r)] = 1
    raw = np.empty(n, dtype=object)
    raw[:] = [conv[:1] for conv in convs]
    return DataProto.from_dict(tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                                        "input_ids": torch.cat([prompts, responses], 1)},
                               non_tensors={"raw_prompt": raw})


def verl_texts(tokenizer, data) -> list[str]:
    """What veRL's reward loop posts to /classify for each sample (RewardLoopWorker._preprocess_reward_inputs)."""
    out = []
    for i in range(len(data)):
        valid = int(data.batch["attention_mask"][i, PROMPT_LEN:].sum())
        text = tokenizer.decode(data.batch["responses"][i, :valid]).replace(tokenizer.eos_token, "")
        chat = list(data.non_tensor_batch["raw_prompt"][i]) + [{"role": "assistant", "content": text}]
        out.append(tokenizer.apply_chat_template(chat, tokenize=False).removeprefix(tokenizer.bos_token or ""))
    return out


def verl_config(model_dir: str, app: str):
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "actor_rollout_ref": {"model": {"path": model_dir, "tokenizer_path": None}},
        "reward": {"num_workers": 1, "reward_model": {"enable": False, "enable_resource_pool": False},
                   "reward_manager": {"source": "importlib", "name": "RmclusterRewardManager",
                                      "module": {"path": "pkg://rmcluster.integrations.verl_reward_manager"}},
                   "custom_reward_function": {"path": None, "name": None}, "sandbox_fusion": None,
                   "reward_kwargs": {"rmcluster": {"app_name": app}}}})


def run(model_dir: str, app: str, url: str, steps: int) -> str:
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    per_step = GROUP * GROUPS_PER_STEP
    convs = make_mix("best-of-8", per_step * (steps + 1), seed=21)
    batches = [rollouts(tokenizer, convs[k : k + per_step]) for k in range(0, len(convs), per_step)]
    texts = [verl_texts(tokenizer, b) for b in batches]
    tokens = statistics.mean(sum(len(tokenizer(t)["input_ids"]) for t in step) for step in texts[1:])

    per_sample = asyncio.run(grpo_steps(url, "rm", texts))  # step 0 is its warm-up
    manager = RewardLoopManager(verl_config(model_dir, app))
    manager.compute_rm_score(batches[0])  # warm-up
    from ray import serve

    model = serve.get_deployment_handle("RewardModelServer", app)
    adapter_seconds, rm_scores, service_seconds, forward_seconds = [], [], [], []
    for data in batches[1:]:
        before = model.stats.remote().result()["forward_seconds"]
        start = time.perf_counter()
        out = manager.compute_rm_score(data)
        adapter_seconds.append(time.perf_counter() - start)
        forward_seconds.append(model.stats.remote().result()["forward_seconds"] - before)
        service_seconds.append(float(out.non_tensor_batch["rmcluster_score_latency_s"][0]))
        rm_scores.append(out.batch["rm_scores"].sum(1).tolist())  # one nonzero per row: the score

    # The adapter's scores against one /classify per sample, on the first timed step.
    import httpx

    classify = [httpx.post(f"{url}/classify", json={"model": "rm", "input": t}, timeout=600).json()["data"][-1]["probs"][-1]
                for t in texts[1]]
    diff = max(abs(a - b) for a, b in zip(rm_scores[0], classify))
    rows = {"per-sample /classify (veRL default)": statistics.median(per_sample["step_seconds"]),
            "veRL reward manager (rmcluster adapter)": statistics.median(adapter_seconds)}
    base = tokens / rows["per-sample /classify (veRL default)"]
    lines = [f"\nveRL GRPO reward steps: {per_step} samples ({GROUPS_PER_STEP} groups of {GROUP}), "
             f"{tokens:.0f} tokens/step, median of {steps} steps after a warm-up",
             f"{'path':<42} {'s/step':>7} {'tok/s':>8} {'x per-sample':>13}"]
    for name, seconds in rows.items():
        lines.append(f"{name:<42} {seconds:>7.2f} {tokens / seconds:>8.0f} {tokens / seconds / base:>13.2f}")
    ratio = rows["per-sample /classify (veRL default)"] / rows["veRL reward manager (rmcluster adapter)"]
    lines.append(f"target adapter >= 2x per-sample: {ratio:.2f}x; max |adapter - /classify| score {diff:.1e}; "
                 f"per-sample p50 {per_sample['p50_ms']:.0f} ms, p99 {per_sample['p99_ms']:.0f} ms")
    lines.append(f"adapter step split (medians): service call {statistics.median(service_seconds):.2f} s "
                 f"(of which model forwards {statistics.median(forward_seconds):.2f} s), the rest is veRL's loop "
                 "(DataProto to its worker, decoding, batching window)")
    return "\n".join(lines)
