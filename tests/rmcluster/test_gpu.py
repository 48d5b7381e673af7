"""GPU parity: bf16 engine vs the bf16 reference loop, per attention implementation (skipped without CUDA).

In bf16 a score moves slightly with batch shape (different kernels and reduction orders), so the
tolerance is relative to the score spread rather than the float32 1e-4.
"""

import pytest
import torch

from rmcluster.config import RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.model_loading import flash_attn_available
from rmcluster.records import conversation_items
from tests.conversations import varied_conversations
from tests.reference import ReferenceLoop

pytestmark = pytest.mark.gpu

ATTN = ["sdpa"] + (["flash_attention_2"] if flash_attn_available() else [])



@pytest.mark.parametrize("attn", ATTN)
def test_bf16_engine_tracks_bf16_reference(demo_dir, attn):
    convs = varied_conversations(200, seed=21)
    ref = ReferenceLoop(demo_dir, dtype=torch.bfloat16, attn_implementation=attn)
    ref.model.to("cuda")
    with torch.no_grad():
        expected = [ref.model(ref.ids(c).cuda()).logits[0][0].float().item() for c in convs]
    engine = ScoringEngine.from_config(RMConfig(model={"name": str(demo_dir), "attn_implementation": attn}))
    assert engine.scorer.model.dtype == torch.bfloat16 and engine.scorer.device_type == "cuda"
    # Llama-shaped: the bf16 probes must not switch packing off, and packs run one varlen kernel per layer.
    assert engine.scorer.supports_packing and engine.packing, "packing is off for a Llama-shaped model"
    assert engine.scorer.runner.varlen_fn is not None or torch.cuda.get_device_capability() < (8, 0)
    got = [r.score for r in engine.score_items(conversation_items(convs))]
    spread = torch.tensor(expected).std().item()
    drift = max(abs(g - e) for g, e in zip(got, expected))
    assert drift < 0.02 * spread + 0.05, f"bf16 drift {drift:.4f} vs score std {spread:.3f}"


def test_auto_resolves_bf16_and_best_attention_on_cuda():
    from rmcluster.config import SequenceClassifierModel
    from rmcluster.model_loading import resolve

    resolved = resolve(SequenceClassifierModel(name="demo"))
    assert resolved.device.type == "cuda" and resolved.dtype == torch.bfloat16
    assert resolved.attn_implementation == ("flash_attention_2" if flash_attn_available() else "sdpa")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_device_map_auto_spreads_layers_and_matches_single_gpu(demo_dir):
    convs = varied_conversations(40, seed=4)
    single = ScoringEngine.from_config(RMConfig(model={"name": str(demo_dir), "dtype": "float32"}))
    spread = ScoringEngine.from_config(
        RMConfig(model={"name": str(demo_dir), "dtype": "float32", "device_map": "auto"})
    )
    # accelerate's "auto" balances layers over the visible GPUs, even for a small model.
    devices = {p.device for p in spread.scorer.model.parameters()}
    assert len(devices) >= 2, devices
    a = [r.score for r in single.score_items(conversation_items(convs))]
    b = [r.score for r in spread.score_items(conversation_items(convs))]
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-3


@pytest.mark.parametrize("attn", ATTN)
def test_bf16_prefix_cache_tracks_bf16_reference(demo_dir, attn):
    """GRPO groups split over two calls: the second reads each group's prompt from the prefix cache (with a
    varlen kernel, its gathered keys come from the cache entry), and scores track the bf16 reference."""
    import random

    from tests.conversations import sentence

    rng = random.Random(7)
    prompts = [{"role": "user", "content": f"question {g}: " + sentence(rng, 120)} for g in range(8)]
    groups = [[[p, {"role": "assistant", "content": sentence(rng, rng.randint(1, 40))}] for _ in range(4)]
              for p in prompts]
    engine = ScoringEngine.from_config(RMConfig(model={"name": str(demo_dir), "attn_implementation": attn},
                                                batching={"prefix_cache_tokens": 50_000}))
    assert engine.scorer.runner.supports_prefix_cache, "the prefix cache failed its load-time probe"
    first = engine.score_items(conversation_items([g[0] for g in groups]))
    rest = engine.score_items(conversation_items([c for g in groups for c in g[1:]]))
    assert engine.scorer.prefix_cache_stats()["hits"] >= len(groups)
    convs = [g[0] for g in groups] + [c for g in groups for c in g[1:]]
    ref = ReferenceLoop(demo_dir, dtype=torch.bfloat16, attn_implementation=attn)
    ref.model.to("cuda")
    with torch.no_grad():
        expected = [ref.model(ref.ids(c).cuda()).logits[0][0].float().item() for c in convs]
    got = [r.score for r in first + rest]
    spread = torch.tensor(expected).std().item()
    drift = max(abs(g - e) for g, e in zip(got, expected))
    assert drift < 0.02 * spread + 0.05, f"bf16 drift {drift:.4f} vs score std {spread:.3f}"
