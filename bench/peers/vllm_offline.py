"""vLLM's offline pooling runner on token ids: run in vLLM's own venv (`make bench-peers` makes it).

    .venv-vllm/bin/python bench/peers/vllm_offline.py MODEL_DIR corpora.json out.json ROUNDS

Per prefix-cache setting, one `LLM` warmed up on a few unrelated sequences, then each corpus ROUNDS
times from a cold cache (`reset_prefix_cache` before every pass), keeping the fastest pass:
`LLM.classify` on `TokensPrompt`s with the pooler's activation off, so the scores are raw logits
like the HF loop's. Writes seconds and scores per (corpus, cache setting).
"""

from __future__ import annotations

import json
import sys
import time

# On CPU this is the share of host memory vLLM reserves for its KV cache: 3 GiB of this box's 10 GiB
# NUMA node is plenty for these corpora (its default, 0.92, fails when anything else runs).
GPU_MEMORY_UTILIZATION = 0.3


def main() -> None:
    model_dir, corpora_path, out_path, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    from vllm import LLM, TokensPrompt
    from vllm.config import PoolerConfig

    corpora = json.loads(open(corpora_path).read())
    warmup = corpora.pop("_warmup")
    out: dict = {}
    for cache in (False, True):
        llm = LLM(model=model_dir, runner="pooling", dtype="float32", enforce_eager=True,
                  enable_prefix_caching=cache, pooler_config=PoolerConfig(use_activation=False),
                  gpu_memory_utilization=GPU_MEMORY_UTILIZATION)
        llm.classify([TokensPrompt(prompt_token_ids=ids) for ids in warmup], use_tqdm=False)
        for name, seqs in corpora.items():
            prompts = [TokensPrompt(prompt_token_ids=ids) for ids in seqs]
            seconds = float("inf")
            for _ in range(rounds):
                llm.reset_prefix_cache()
                start = time.perf_counter()
                results = llm.classify(prompts, use_tqdm=False)
                seconds = min(seconds, time.perf_counter() - start)
            out[f"{name}|{'cache' if cache else 'nocache'}"] = {
                "seconds": seconds, "scores": [float(r.outputs.probs[0]) for r in results]}
            print(f"vllm {name} cache={cache}: {seconds:.2f}s", flush=True)
        del llm
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this module
    main()
