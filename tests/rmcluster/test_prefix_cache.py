"""The prefix cache: a prompt computed in one engine call serves the same group's samples in later calls,
with the HF loop's scores; near-miss prefixes reuse only what matches; reads inside a cached prompt,
eviction and the varlen kernel are handled."""

import random

import pytest
import torch

from rmcluster.config import RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.packing import PackUnit
from rmcluster.prefix_cache import PrefixCache
from rmcluster.records import conversation_items
from tests.reference import ReferenceLoop

TOL = 1e-4


def _engine(path, cache_tokens: int) -> ScoringEngine:
    return ScoringEngine.from_config(RMConfig(
        model={"name": str(path), "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"},
        batching={"packing": "on", "prefix_cache_tokens": cache_tokens}))


@pytest.fixture(scope="module")
def groups():
    """GRPO-shaped: 4 prompts x 6 responses, as whole conversations (the way per-sample requests arrive)."""
    rng = random.Random(4)
    words = "apple river stone seven friend answer because small total step green".split()
    out = []
    for g in range(4):
        prompt = [{"role": "user", "content": f"question {g}: " + " ".join(rng.choice(words) for _ in range(40))}]
        out.append([prompt + [{"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))}]
                    for _ in range(6)])
    return out


@pytest.fixture(scope="module")
def reference(demo_dir):
    return ReferenceLoop(demo_dir)


def test_group_split_over_calls_reads_its_prompt_from_the_cache_with_reference_scores(demo_dir, groups, reference):
    engine = _engine(demo_dir, 50_000)
    convs = [c for g in groups for c in g]
    # Calls of 4 in arrival order (groups interleaved): every group's samples span several calls.
    order = [g * 6 + k for k in range(6) for g in range(4)]
    scores: dict[int, float] = {}
    for start in range(0, len(order), 4):
        chunk = order[start:start + 4]
        for i, r in zip(chunk, engine.score_items(conversation_items([convs[i] for i in chunk]))):
            scores[i] = r.score
    expected = reference.scores(convs)
    assert max(abs(scores[i] - e) for i, e in enumerate(expected)) < TOL
    stats = engine.scorer.prefix_cache_stats()
    # The first call of each group's samples computes its prompt; the 5 others read it.
    prompt_tokens = len(reference.ids(groups[0][0][:1])[0])
    assert stats["hits"] >= 4 * 5 - 4
    assert stats["reused_tokens"] >= (4 * 5 - 4) * (prompt_tokens - 5)


def test_off_by_default_and_when_capacity_is_zero(demo_dir, groups):
    engine = _engine(demo_dir, 0)
    for g in groups:
        engine.score_items(conversation_items(g[:1]))
        engine.score_items(conversation_items(g[1:]))
    assert engine.scorer.prefix_cache_stats()["hits"] == 0
    assert RMConfig().batching.prefix_cache_tokens == 0


def test_near_miss_and_full_prefix_items_reuse_only_what_matches(demo_dir):
    engine = _engine(demo_dir, 50_000)
    runner = engine.scorer.runner
    rng = random.Random(8)
    base = [rng.randrange(runner.vocab_size) for _ in range(60)]
    engine.score_encoded(engine.encode([]))  # configures the cache
    whole_runner_scores = {}

    def score(ids):
        from rmcluster.encoding import EncodedItem

        return engine.score_encoded([EncodedItem(list(ids))])[0].score

    first = score(base)  # cached whole
    near = base[:40] + [(base[40] + 1) % runner.vocab_size] + base[41:]  # one token differs at 40
    prefix_item = base[:30]  # a full prefix of the cached sequence
    longer = base + [5, 6, 7]
    got = {name: score(ids) for name, ids in (("near", near), ("prefix", prefix_item), ("longer", longer))}
    stats = engine.scorer.prefix_cache_stats()
    assert stats["hits"] == 3
    runner.prefix_cache.configure(0, 16)  # the same items computed whole
    for name, ids in (("near", near), ("prefix", prefix_item), ("longer", longer), ("first", base)):
        whole_runner_scores[name] = score(ids)
    got["first"] = first
    for name, value in got.items():
        assert abs(value - whole_runner_scores[name]) < TOL, name


def test_reads_inside_a_cached_prompt_keep_their_own_rows(demo_dir):
    engine = _engine(demo_dir, 50_000)
    runner = engine.scorer.runner
    runner.prefix_cache.configure(50_000, 16)
    rng = random.Random(9)
    prompt = [rng.randrange(runner.vocab_size) for _ in range(30)]
    tails = [[rng.randrange(runner.vocab_size) for _ in range(n)] for n in (4, 7, 2)]
    runner.packed([PackUnit(prompt, tails[:2], [0, 1])], [[33], [36]])  # the prompt is now cached
    hits = runner.prefix_cache.hits
    # A PRM-like read at position 10 (inside the prompt) and one at the end.
    inside = runner.packed([PackUnit(prompt, tails[2:], [0])], [[10, 31]])[0]
    assert runner.prefix_cache.hits == hits  # not read from the cache: position 10 has no row there
    with torch.inference_mode():
        whole = runner.backbone(torch.tensor([prompt + tails[2]])).last_hidden_state[0]
    assert (inside - whole[[10, 31]]).abs().max().item() < 1e-5


def test_least_recently_used_entries_go_first():
    cache = PrefixCache()
    cache.configure(50, 4)
    kv = [(torch.zeros(1, 1, 20, 2), torch.zeros(1, 1, 20, 2))]
    a, b, c = (tuple(range(k, k + 20)) for k in (0, 100, 200))
    cache.store(a, kv)
    cache.store(b, kv)
    cache.rewrite([PackUnit.single(list(a) + [1], 0)], [[20]])  # a is used: b is now the oldest
    cache.store(c, kv)  # 60 > 50 tokens: b goes
    assert cache.stats()["entries"] == 2 and cache.tokens == 40
    assert cache.rewrite([PackUnit.single(list(b) + [1], 0)], [[20]]).units[0].cached_slot == -1
    assert cache.rewrite([PackUnit.single(list(a) + [1], 0)], [[20]]).units[0].cached_slot == 0


def test_the_varlen_kernel_path_reads_cached_prompts_with_reference_scores(demo_dir, groups, reference, monkeypatch):
    """CUDA's whole-pack kernel, with flash-attn's semantics standing in for it on CPU: a group split over
    calls gathers its prompt's keys from the cache entry (the load-time probes ran on this path too)."""
    import rmcluster.segment_attention as segment_attention
    from tests.reference import reference_varlen

    monkeypatch.setattr(segment_attention, "varlen_kernel", lambda model, device: reference_varlen)
    engine = _engine(demo_dir, 50_000)
    runner = engine.scorer.runner
    assert runner.varlen_fn is reference_varlen and runner.supports_packing and runner.supports_prefix_cache
    firsts, rests = [g[0] for g in groups], [c for g in groups for c in g[1:]]
    first = engine.score_items(conversation_items(firsts))  # each group's prompt now cached
    rest = engine.score_items(conversation_items(rests))
    expected = reference.scores(firsts + rests)
    assert max(abs(r.score - e) for r, e in zip(first + rest, expected)) < TOL
    assert engine.scorer.prefix_cache_stats()["hits"] >= 4  # the second call read every group's prompt
