"""Padding-free packing: the layout, the pack planner, the load-time probe, other architectures and
the flash-attn varlen plumbing, all checked against the per-conversation reference loop."""

import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import rmcluster.segment_attention as segment_attention
from rmcluster.batching import plan_packs
from rmcluster.config import BatchingConfig, RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.packing import PackLayout, PackUnit
from rmcluster.records import conversation_items, items_from_raw
from tests.conversations import varied_conversations
from tests.reference import ReferenceLoop, reference_varlen

TOL = 1e-4



def _engine(path, **batching) -> ScoringEngine:
    cfg = RMConfig(model={"name": str(path), "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"},
                   batching={"packing": "on", **batching})
    return ScoringEngine.from_config(cfg)


@pytest.fixture(scope="module")
def conversations():
    return varied_conversations(120, seed=21)


@pytest.fixture(scope="module")
def reference(demo_dir, conversations):
    ref = ReferenceLoop(demo_dir)
    return ref, ref.scores(conversations)


def test_layout_restarts_positions_and_scores_each_last_token():
    units = [PackUnit.single([5, 6, 7], 0), PackUnit([1, 2], [[3], [4, 4]], [1, 2]), PackUnit.single([9], 3)]
    layout = PackLayout(units)
    assert layout.input_ids.tolist() == [[5, 6, 7, 1, 2, 3, 4, 4, 9]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 0, 1, 2, 2, 3, 0]]
    assert layout.last_positions.tolist() == [2, 5, 7, 8]
    kv_index, cu_q, cu_k, max_q, max_k = layout.varlen_args(torch.device("cpu"))
    # Queries: the rows in order. Keys: each segment's prompt rows (3, 4) and then its own rows.
    assert cu_q.tolist() == [0, 3, 5, 6, 8, 9] and cu_k.tolist() == [0, 3, 5, 8, 12, 13]
    assert kv_index.tolist() == [0, 1, 2, 3, 4, 3, 4, 5, 3, 4, 6, 7, 8]
    assert (max_q, max_k) == (3, 4)
    # Units whose prompts are prefix-cache entries (slots 0 and 1): their keys follow the pack's 4 rows.
    cached = PackLayout([PackUnit([1, 2, 3], [[7], [8, 8]], [0, 1], cached_slot=0), PackUnit.single([9, 9], 2),
                         PackUnit([4, 5], [[6]], [3], cached_slot=1)])
    assert cached.input_ids.tolist() == [[7, 8, 8, 9, 9, 6]] and cached.cached_rows == [3, 2]
    kv_index, cu_q, cu_k, _, max_k = cached.varlen_args(torch.device("cpu"))
    assert cu_q.tolist() == [0, 1, 3, 5, 6] and cu_k.tolist() == [0, 4, 9, 11, 14] and max_k == 5
    assert kv_index.tolist() == [6, 7, 8, 0, 6, 7, 8, 1, 2, 3, 4, 9, 10, 5]
    assert layout.causal_mask(2, 4, None, torch.device("cpu")).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert layout.causal_mask(2, 4, 2, torch.device("cpu")).tolist() == [[0, 1, 1, 0], [0, 0, 1, 1]]


@given(
    costs=st.lists(st.integers(1, 3000), max_size=150),
    budget=st.integers(1, 9000),
    cap=st.integers(1, 40),
    data=st.data(),
)
def test_pack_plan_covers_every_unit_once_within_limits(costs, budget, cap, data):
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=len(costs), max_size=len(costs)))
    packs = plan_packs(costs, sizes, budget, cap)
    assert sorted(i for p in packs for i in p) == list(range(len(costs)))
    for p in packs:
        assert len(p) == 1 or (sum(costs[i] for i in p) <= budget and sum(sizes[i] for i in p) <= cap)
    firsts = [costs[p[0]] for p in packs]
    assert firsts == sorted(firsts, reverse=True)  # the largest unit opens the first pack


@pytest.mark.parametrize("budget,size", [(None, 64), (700, 5)], ids=["default", "small-packs"])
def test_packed_budget_counts_real_tokens_and_matches_reference(demo_dir, conversations, reference, budget, size):
    _, expected = reference
    order = list(range(len(conversations)))
    random.Random(3).shuffle(order)
    engine = _engine(demo_dir, max_batch_tokens=budget, max_batch_size=size, shared_prompt="off")
    stats = []
    results = engine.score_items(conversation_items([conversations[i] for i in order]), on_batch=stats.append)
    assert max(abs(results[k].score - expected[i]) for k, i in enumerate(order)) < TOL
    assert sum(s.items for s in stats) == len(order) and max(s.items for s in stats) > 1
    for s in stats:  # no padding: a pack occupies exactly its real tokens, within budget unless alone
        assert s.padded_tokens == s.real_tokens and s.reused_tokens == 0
        assert s.items == 1 or (s.real_tokens <= engine.max_batch_tokens and s.items <= size)


def test_auto_packs_on_cpu_and_matches_reference(demo_dir, conversations, reference):
    """`packing: auto` packs on CPU too (measured faster there: bench/RESULTS.md), with the reference's scores."""
    _, expected = reference
    engine = _engine(demo_dir, packing="auto", shared_prompt="off")
    assert engine.packing and engine.scorer.runner.last_layer is not None
    stats = []
    results = engine.score_items(conversation_items(conversations), on_batch=stats.append)
    assert max(abs(r.score - e) for r, e in zip(results, expected)) < TOL
    assert all(s.padded_tokens == s.real_tokens for s in stats)


def test_tolerance_detects_sequences_attending_to_each_other(demo_dir, conversations, reference):
    """Negative control: the same packed row under plain causal attention (one sequence across the
    whole row, as transformers treats it when a cache hides the packing) is far off."""
    ref, expected = reference
    scorer = _engine(demo_dir).scorer
    units = [PackUnit.single(ref.ids(c)[0].tolist(), i) for i, c in enumerate(conversations[:6])]
    layout = PackLayout(units)
    with torch.no_grad():
        hidden = scorer.runner.backbone(input_ids=layout.input_ids, position_ids=layout.position_ids,
                                 use_cache=True).last_hidden_state[0]
        wrong = scorer.head(hidden[layout.last_positions])[:, 0].tolist()
    assert max(abs(w - e) for w, e in zip(wrong[1:], expected[1:6])) > 100 * TOL


def test_probe_refuses_packing_when_sequences_leak_and_engine_falls_back(demo_dir, conversations, reference,
                                                                      monkeypatch):
    """Fault injection: a segment kernel that attends across the whole row must fail the load-time
    probe; the engine then runs padded batches and still matches."""
    _, expected = reference

    def leaky(layout, q, k, v, scaling, window):
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling,
                                                              enable_gqa=q.shape[1] != k.shape[1])
        return o.transpose(1, 2)

    monkeypatch.setattr(segment_attention, "_per_segment", leaky)
    engine = _engine(demo_dir)
    assert not engine.scorer.supports_packing and not engine.packing and not engine.shared_prompt
    stats = []
    results = engine.score_items(conversation_items(conversations[:40]), on_batch=stats.append)
    assert max(abs(r.score - e) for r, e in zip(results, expected[:40])) < TOL
    assert sum(s.padded_tokens for s in stats) >= sum(s.real_tokens for s in stats)


def test_model_config_is_untouched_outside_a_packed_forward(demo_dir):
    engine = _engine(demo_dir)
    assert engine.scorer.model.config._attn_implementation == "sdpa"
    engine.score_conversations([[{"role": "user", "content": "two plus two"}]])
    assert engine.scorer.model.config._attn_implementation == "sdpa"


@pytest.fixture(scope="module")
def sliding_window_dir(tmp_path_factory, demo_dir):
    """A second architecture: tiny random Mistral reward model (sliding-window attention of 24 tokens,
    so the window really cuts in) with the demo tokenizer."""
    from transformers import AutoTokenizer, MistralConfig, MistralForSequenceClassification

    tok = AutoTokenizer.from_pretrained(demo_dir)
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=24,
                       num_labels=1, tie_word_embeddings=False,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.1)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("mistral-rm")
    MistralForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_sliding_window_model_packs_with_parity(sliding_window_dir, conversations):
    ref = ReferenceLoop(sliding_window_dir)
    convs = conversations[:60]
    expected = ref.scores(convs)
    engine = _engine(sliding_window_dir)
    assert engine.packing and engine.scorer.model.config.sliding_window == 24
    assert max(ref.ids(c).shape[-1] for c in convs) > 24 * 4
    got = [r.score for r in engine.score_items(conversation_items(convs))]
    assert max(abs(g - e) for g, e in zip(got, expected)) < TOL


@pytest.mark.parametrize("model", ["demo", "sliding-window"])
def test_varlen_plumbing_matches_reference_on_cpu(demo_dir, sliding_window_dir, conversations, model):
    """The flash-attn path (gathered keys, cu_seqlens, bottom-right causal, window) with flash-attn's
    documented semantics standing in for the CUDA kernel, shared prompts included."""
    path = demo_dir if model == "demo" else sliding_window_dir
    ref = ReferenceLoop(path)
    engine = _engine(path, shared_prompt="on")
    engine.scorer.runner.varlen_fn = reference_varlen
    records = [{"prompt": c[:-1], "responses": [c[-1]["content"], "yes", "seven apples and a friend"]}
               for c in conversations[:30] if len(c) > 1]
    items = [it for r in records for it in items_from_raw(r)] + conversation_items(conversations[30:60])
    stats = []
    results = engine.score_items(items, on_batch=stats.append)
    expected = ref.scores([it.messages for it in items])
    assert max(abs(r.score - e) for r, e in zip(results, expected)) < TOL
    assert sum(s.reused_tokens for s in stats) > 0


def test_compiled_packed_forward_matches_reference(demo_dir, conversations, reference):
    """`model.compile`: one dynamic-shape graph for every pack length, segment attention left eager."""
    _, expected = reference
    cfg = RMConfig(model={"name": str(demo_dir), "device": "cpu", "dtype": "float32", "compile": True},
                   batching={"packing": "on", "max_batch_tokens": 900})
    engine = ScoringEngine.from_config(cfg)
    assert engine.packing and engine.scorer.runner.packed_backbone is not engine.scorer.runner.backbone
    stats = []
    results = engine.score_items(conversation_items(conversations), on_batch=stats.append)
    assert len({s.padded_tokens for s in stats}) > 5  # many pack lengths through one compiled model
    assert max(abs(r.score - e) for r, e in zip(results, expected)) < TOL


def test_packing_on_an_unsupported_scorer_runs_padded(demo_dir):
    engine = _engine(demo_dir)
    engine.scorer.supports_packing = False
    assert not engine.packing and engine.max_batch_tokens == BatchingConfig().token_budget("cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,attn,tol", [("float32", "sdpa", 1e-4), ("bfloat16", "flash_attention_2", None)],
                         ids=["fp32-sdpa-per-segment", "bf16-flash-varlen"])
def test_gpu_packed_and_shared_match_reference(demo_dir, dtype, attn, tol):
    """On CUDA: packed + shared-prompt scoring against the reference loop run the same way (bf16:
    within the drift that batch composition alone causes, 2% of the score range)."""
    from rmcluster.model_loading import flash_attn_available

    if attn == "flash_attention_2" and not flash_attn_available():
        pytest.skip("flash-attn not installed")
    torch_dtype = getattr(torch, dtype)
    ref = ReferenceLoop(demo_dir, dtype=torch_dtype, attn_implementation=attn)
    ref.model.to("cuda")
    cfg = RMConfig(model={"name": str(demo_dir), "device": "cuda", "dtype": dtype, "attn_implementation": attn},
                   batching={"packing": "on", "shared_prompt": "on"})
    engine = ScoringEngine.from_config(cfg)
    assert engine.packing and engine.shared_prompt
    assert (engine.scorer.runner.varlen_fn is not None) == (attn == "flash_attention_2")
    convs = varied_conversations(120, seed=5)
    records = [{"prompt": c[:-1], "responses": [c[-1]["content"], "seven", "the answer is twelve"]}
               for c in convs if len(c) > 1][:40]
    items = [it for r in records for it in items_from_raw(r)] + conversation_items(convs[:60])
    with torch.no_grad():
        expected = [ref.model(ref.ids(it.messages).cuda()).logits[0][0].float().item() for it in items]
    got = [r.score for r in engine.score_items(items)]
    drift = max(abs(g - e) for g, e in zip(got, expected))
    spread = max(expected) - min(expected)
    assert drift < (tol if tol is not None else 0.02 * spread), f"max drift {drift:.3g} (score range {spread:.3g})"
