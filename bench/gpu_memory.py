"""Step 5 of bench/gpu_check.sh: peak GPU memory per token budget, and recovery from out-of-memory.

The 8B shape in bf16 (random weights), packed batches of 8k, 32k and 64k tokens: peak allocated bytes
per budget. Then the memory fraction is capped so a 64k budget cannot fit, and the engine must split
the failing batch and still score every item, with the failed attempt's memory released first.
"""

from __future__ import annotations

import sys


def main() -> None:
    import torch

    if "--dry-run" in sys.argv:
        print("dry run: stopping before the first CUDA call")
        return
    sys.path.insert(0, ".")
    from bench.engine import build_model, make_mix
    from rmcluster.config import BatchingConfig
    from rmcluster.demo_model import DemoModelSpec, demo_model_path
    from rmcluster.engine import ScoringEngine
    from rmcluster.records import conversation_items
    from rmcluster.scorers.sequence_classifier import SequenceClassifierScorer
    from rmcluster.templating import ChatEncoder
    from transformers import AutoTokenizer

    device = torch.device("cuda")
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path(DemoModelSpec()))
    model = build_model("llama-3.1-8b", device, torch.bfloat16, "sdpa")
    scorer = SequenceClassifierScorer(model, ChatEncoder(tokenizer, 8192), "random-8b")
    convs = make_mix("realistic", 256)
    items = conversation_items(convs)
    for budget in (8192, 32768, 65536):
        engine = ScoringEngine(scorer, BatchingConfig(max_batch_tokens=budget, packing="on", max_batch_size=512))
        torch.cuda.reset_peak_memory_stats()
        results = engine.score_items(items)
        print(f"budget {budget}: peak allocated {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, "
              f"errors {sum(r.error is not None for r in results)}")
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    weights = torch.cuda.memory_allocated()
    torch.cuda.set_per_process_memory_fraction((weights + 6 * 2**30) / total)  # room for a ~16k-token pack
    engine = ScoringEngine(scorer, BatchingConfig(max_batch_tokens=65536, packing="on", max_batch_size=512))
    stats = []
    results = engine.score_items(items, on_batch=stats.append)
    print(f"capped at weights + 6 GiB, budget 65536: {len(stats)} forward passes, largest "
          f"{max(s.padded_tokens for s in stats)} tokens, errors {sum(r.error is not None for r in results)}")


if __name__ == "__main__":
    main()
