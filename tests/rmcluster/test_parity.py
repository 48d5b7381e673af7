"""Engine scores equal the plain per-conversation HF loop (float32, 1e-4), whatever the batching."""

import random

import pytest
import torch

from rmcluster.config import RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.records import ScoreItem, conversation_items
from tests.conversations import varied_conversations
from tests.reference import ReferenceLoop

TOL = 1e-4
N = 300


def _engine(path, max_batch_tokens=None, max_batch_size=64, packing="auto", **tokenization) -> ScoringEngine:
    cfg = RMConfig(
        model={"name": str(path), "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"},
        tokenization=tokenization,
        batching={"max_batch_tokens": max_batch_tokens, "max_batch_size": max_batch_size, "packing": packing},
    )
    return ScoringEngine.from_config(cfg)



@pytest.fixture(scope="module")
def conversations():
    return varied_conversations(N, seed=7)


@pytest.fixture(scope="module")
def reference(demo_dir, conversations):
    ref = ReferenceLoop(demo_dir)
    return ref, ref.scores(conversations)


def test_lengths_span_the_range(reference, conversations):
    ref, _ = reference
    lengths = [ref.ids(c).shape[-1] for c in conversations]
    assert min(lengths) < 20 and max(lengths) > 900


@pytest.mark.parametrize("packing", ["off", "on"], ids=["padded", "packed"])
@pytest.mark.parametrize(
    "budget,size",
    [(None, 64), (16384, 64), (3000, 7), (1, 1)],
    ids=["cpu-default", "big-batches", "odd-batches", "one-at-a-time"],
)
def test_engine_matches_reference_in_random_order(demo_dir, conversations, reference, budget, size, packing):
    _, expected = reference
    order = list(range(N))
    random.Random(budget or 0).shuffle(order)
    engine = _engine(demo_dir, budget, size, packing)
    assert engine.packing == (packing == "on")
    results = engine.score_items(conversation_items([conversations[i] for i in order]))
    got = [r.score for r in results]
    assert all(r.error is None for r in results)
    diffs = [abs(got[k] - expected[i]) for k, i in enumerate(order)]
    assert max(diffs) < TOL, f"max diff {max(diffs):.2e}"
    assert [r.logits for r in results] == [[s] for s in got]


def test_padding_really_happens_in_big_batches(demo_dir, conversations):
    stats = []
    _engine(demo_dir, 16384, 64, packing="off").score_items(conversation_items(conversations), on_batch=stats.append)
    assert max(s.items for s in stats) > 8
    assert sum(s.padded_tokens for s in stats) > sum(s.real_tokens for s in stats)


def test_tolerance_detects_wrong_pooling(demo_dir, conversations, reference):
    """Negative control: pooling one token early must be far outside the tolerance."""
    ref, expected = reference
    model = ref.model
    wrong = []
    with torch.no_grad():
        for conv in conversations[:20]:
            hidden = model.model(ref.ids(conv)).last_hidden_state
            wrong.append(model.score(hidden[0, -2]).item())
    assert min(abs(w - e) for w, e in zip(wrong, expected[:20])) > 100 * TOL


def test_pad_token_model_matches_reference(pad_demo_dir, conversations):
    ref = ReferenceLoop(pad_demo_dir)
    assert ref.tokenizer.pad_token_id is not None
    convs = conversations[:120]
    expected = ref.scores(convs)
    got = [r.score for r in _engine(pad_demo_dir, 16384).score_items(conversation_items(convs))]
    assert max(abs(g - e) for g, e in zip(got, expected)) < TOL


def test_masked_path_matches_reference(demo_dir, conversations, reference):
    """The attention-mask path used for non-causal models gives the same scores."""
    _, expected = reference
    engine = _engine(demo_dir, 16384, packing="off")
    assert engine.scorer.runner.causal
    engine.scorer.runner.causal = False
    got = [r.score for r in engine.score_items(conversation_items(conversations[:100]))]
    assert max(abs(g - e) for g, e in zip(got, expected[:100])) < TOL


def test_truncate_left_matches_reference_on_truncated_ids(demo_dir, conversations):
    """Truncated items score as the reference model scores [BOS] + the newest tokens."""
    max_length = 200
    ref = ReferenceLoop(demo_dir)
    engine = _engine(demo_dir, max_length=max_length, on_overflow="truncate_left")
    bos = ref.tokenizer.bos_token_id
    long_convs = [c for c in conversations if ref.ids(c).shape[-1] > max_length]
    # The final message must fit for truncation to apply; keep those whose last message is short.
    checked = 0
    results = engine.score_items(conversation_items(long_convs))
    for conv, res in zip(long_convs, results):
        full = ref.ids(conv)[0].tolist()
        head = ref.ids(conv[:-1] + [{"role": conv[-1]["role"], "content": ""}])[0].tolist()
        final_len = len(full) - (len(head) - 1)  # tokens from the final message's content on
        if final_len + 1 > max_length:
            assert res.error and "final message" in res.error
            continue
        expected_ids = [bos] + full[len(full) - (max_length - 1):]
        assert res.error is None and res.truncated and res.num_tokens == max_length
        assert abs(res.score - ref.score_ids(expected_ids)) < TOL
        checked += 1
    assert checked >= 20


def test_text_records_match_chat_records_without_double_bos(demo_dir, conversations, reference):
    """Already-templated text scores exactly like the conversation it came from."""
    ref, expected = reference
    texts = [ref.tokenizer.apply_chat_template(c, tokenize=False) for c in conversations[:50]]
    # The pitfall is real for this tokenizer: a plain call adds a second BOS.
    bos = ref.tokenizer.bos_token_id
    assert ref.tokenizer(texts[0])["input_ids"][:2] == [bos, bos]
    engine = _engine(demo_dir)
    results = engine.score_items([ScoreItem(str(i), 0, text=t) for i, t in enumerate(texts)])
    assert max(abs(r.score - e) for r, e in zip(results, expected[:50])) < TOL
    encoded = engine.encode([ScoreItem("x", 0, text=texts[0])])[0]
    assert encoded.input_ids[:2] != [bos, bos] and encoded.input_ids[0] == bos
