"""Automatic prefix sharing from token ids alone, and token-id inputs.

Texts and token ids carry no prompt boundary, so sharing must find common prefixes in the ids
themselves. Scores are checked against the reference loop on the same ids; the grouping is checked
by hand on sequences with near-miss prefixes and full prefixes of others.
"""

import random

import pytest
from hypothesis import given, strategies as st

from rmcluster.config import RMConfig
from rmcluster.encoding import common_prefix_len
from rmcluster.engine import ScoringEngine
from rmcluster.pipeline import score_records
from rmcluster.records import RecordError, items_from_raw
from rmcluster.shared_prompt import computed_tokens, prefix_groups
from tests.conversations import sentence
from tests.reference import ReferenceLoop

TOL = 1e-4


@given(st.lists(st.integers(0, 3), max_size=80), st.lists(st.integers(0, 3), max_size=80), st.integers(0, 80))
def test_common_prefix_len_equals_a_token_by_token_count(tail_a, tail_b, shared):
    a, b = tail_a[:shared] + tail_a, tail_a[:shared] + tail_b  # a shared head, then anything
    expected = 0
    while expected < min(len(a), len(b)) and a[expected] == b[expected]:
        expected += 1
    assert common_prefix_len(a, b) == common_prefix_len(b, a) == expected


def test_prefix_groups_by_hand():
    base = list(range(1, 31))  # 30 tokens
    seqs = [
        base + [100, 101],  # 0 A
        base + [102],  # 1 B
        base,  # 2 C: a full prefix of A and B
        base[:29] + [999, 5, 5],  # 3 D: a near miss, differs in the last token of base
        [700, 8, 9],  # 4 E: nothing in common
        base[:16] + [500] * 3,  # 5 F: only 16 tokens in common with the rest
        base[:16] + [600] * 3,  # 6 G
    ]
    # Sorted: C A B D F G E. C keeps its last token, so A, B, C, D share 29; adding F (16 in common) would
    # save 4 x 16 < 3 x 29 tokens, so F and G form their own group; E shares nothing.
    assert prefix_groups(seqs, 16) == [([2, 0, 1, 3], 29), ([5, 6], 16), ([4], 0)]
    assert prefix_groups(seqs, 17) == [([2, 0, 1, 3], 29), ([5], 0), ([6], 0), ([4], 0)]
    assert prefix_groups(seqs, 30) == [([2], 0), ([0, 1], 30), ([3], 0), ([5], 0), ([6], 0), ([4], 0)]
    assert prefix_groups([[1, 2, 3]] * 3, 1) == [([0, 1, 2], 2)]  # identical items: all but the last token
    assert prefix_groups([], 16) == []
    # What a Serve batch queue counts: 166 tokens, of which 3 x 29 + 1 x 16 are not recomputed.
    assert sum(map(len, seqs)) == 166
    assert computed_tokens(seqs, 16) == 166 - 3 * 29 - 16 and computed_tokens(seqs, None) == 166


def _engine(path, **batching) -> ScoringEngine:
    return ScoringEngine.from_config(RMConfig(
        model={"name": str(path), "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"},
        batching={"shared_prompt": "on", **batching}))


@pytest.fixture(scope="module")
def grpo_texts(demo_dir):
    """GRPO-shaped traffic as a trainer sends it: templated texts, 8 per prompt, in no order, with
    near-miss prompts (one word changed) and items that are exact prefixes of others."""
    ref = ReferenceLoop(demo_dir)
    rng = random.Random(5)
    system = sentence(rng, 40)
    texts = []
    for g in range(6):
        question = sentence(rng, rng.choice([10, 60, 200]))
        prompts = [question, question.replace(" ", " x ", 1)] if g % 2 else [question]  # near miss
        for prompt in prompts:
            for _ in range(8 // len(prompts)):
                conv = [{"role": "system", "content": system}, {"role": "user", "content": prompt},
                        {"role": "assistant", "content": sentence(rng, rng.choice([0, 5, 30, 120]))}]
                texts.append(ref.tokenizer.apply_chat_template(conv, tokenize=False))
    ids = [ref.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    ids += [ids[0][: len(ids[0]) // 2], ids[3] + ids[3][5:12]]  # a full prefix of another, and an extension
    rng.shuffle(ids)
    return ref, ids, [ref.score_ids(i) for i in ids]


@pytest.mark.parametrize("packing,budget", [("on", 16384), ("on", 700), ("off", 16384)],
                         ids=["packed", "packed-small-budget", "padded-rest"])
def test_token_ids_share_prefixes_and_match_reference(demo_dir, grpo_texts, packing, budget):
    ref, ids, expected = grpo_texts
    engine = _engine(demo_dir, packing=packing, max_batch_tokens=budget)
    stats = []
    rows = score_records(engine, [{"id": f"r{k}", "input_ids": i} for k, i in enumerate(ids)], on_batch=stats.append)
    assert [r["num_tokens"] for r in rows] == [len(i) for i in ids]
    diffs = [abs(r["score"] - e) for r, e in zip(rows, expected)]
    assert max(diffs) < TOL, f"max diff {max(diffs):.2e}"
    reused = sum(s.reused_tokens for s in stats)
    # At least each prompt (system + question, templated) is computed once per 8 responses.
    prompt_len = min(len(i) for i in ids) // 2
    assert reused > 6 * 7 * prompt_len if budget > 10000 else reused > 0


def test_text_records_share_as_token_ids_do(demo_dir, grpo_texts):
    ref, ids, expected = grpo_texts
    texts = [ref.tokenizer.decode(i) for i in ids[:24]]
    assert [ref.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] == ids[:24]
    stats = []
    rows = score_records(_engine(demo_dir), [{"text": t} for t in texts], on_batch=stats.append)
    assert max(abs(r["score"] - e) for r, e in zip(rows, expected)) < TOL
    assert sum(s.reused_tokens for s in stats) > 0


def test_sharing_off_or_below_the_minimum_reuses_nothing(demo_dir, grpo_texts):
    _, ids, expected = grpo_texts
    for batching in ({"shared_prompt": "off"}, {"min_shared_tokens": 100_000}):
        stats = []
        rows = score_records(_engine(demo_dir, **batching), [{"input_ids": i} for i in ids], on_batch=stats.append)
        assert sum(s.reused_tokens for s in stats) == 0
        assert max(abs(r["score"] - e) for r, e in zip(rows, expected)) < TOL


def test_token_id_records_validate_and_bad_ids_fail_alone(demo_dir):
    engine = _engine(demo_dir)
    vocab = engine.scorer.encoder.vocab_size
    assert vocab is not None
    with pytest.raises(RecordError, match="input_ids"):
        items_from_raw({"id": "neg", "input_ids": [1, -2]})
    with pytest.raises(RecordError, match="input_ids"):
        items_from_raw({"id": "empty", "input_ids": []})
    rows = score_records(engine, [{"id": "ok", "input_ids": [1, 2, 3]}, {"id": "big", "input_ids": [1, vocab]},
                                  {"id": "str", "input_ids": ["a"]}])
    assert rows[0]["error"] is None and rows[0]["num_tokens"] == 3
    assert rows[1]["score"] is None and "outside the model's vocabulary" in rows[1]["error"]
    assert rows[2]["score"] is None and "input_ids" in rows[2]["error"]
