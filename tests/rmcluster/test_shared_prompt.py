"""Shared-prompt reuse: best-of-N and pair records run their prompt once and still score exactly as
the per-conversation reference loop; the prefix check falls back where the template breaks it."""

import pickle
import random
import shutil

import pytest

from rmcluster.config import RMConfig
from rmcluster.encoding import EncodeFailure
from rmcluster.engine import ScoringEngine
from rmcluster.records import items_from_raw
from rmcluster.scorers import build_encoder
from rmcluster.scorers.sequence_classifier import SequenceClassifierScorer
from rmcluster.shared_prompt import build_units
from tests.conversations import sentence, varied_conversations
from tests.reference import ReferenceLoop

TOL = 1e-4


def _engine(path, **batching) -> ScoringEngine:
    return ScoringEngine.from_config(_config(path, **batching))


def _config(path, tokenization=None, **batching) -> RMConfig:
    return RMConfig(model={"name": str(path), "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"},
                    tokenization=tokenization or {}, batching={"shared_prompt": "on", **batching})


def _records(seed=9, n=60):
    """Best-of-N records (2-6 responses) and preference pairs over varied prompts, some multi-turn."""
    rng = random.Random(seed)
    out = []
    for i, conv in enumerate(varied_conversations(n, seed=seed)):
        prompt = conv[:-1] if len(conv) > 1 else conv
        answers = [sentence(rng, rng.choice([0, 3, 40, 250])) for _ in range(rng.randint(2, 6))]
        if i % 3 == 0:
            out.append({"id": f"p{i}", "prompt": prompt, "chosen": answers[0], "rejected": answers[1]})
        else:
            out.append({"id": f"b{i}", "prompt": prompt, "responses": answers})
    return out


@pytest.fixture(scope="module")
def items():
    return [it for r in _records() for it in items_from_raw(r)]


@pytest.fixture(scope="module")
def reference(demo_dir, items):
    ref = ReferenceLoop(demo_dir)
    return ref, ref.scores([it.messages for it in items])


def _expected_reuse(ref, items, min_shared=16):
    """Per distinct prompt of at least `min_shared` tokens: (items - 1) x its token length, the prompt
    templated with the assistant header, which the demo template keeps as an exact prefix of every full
    conversation. Grouping by token prefix finds at least that (more where records share more)."""
    by_prompt = {}
    distinct = {ref.ids(it.messages)[0].numpy().tobytes(): it for it in items}  # identical items run once
    for it in distinct.values():
        prompt = it.messages[: it.num_prompt_messages]
        ids = ref.tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
        full = ref.ids(it.messages)[0].tolist()
        assert full[: len(ids)] == ids
        by_prompt.setdefault(tuple(ids), []).append(it)
    return sum((len(v) - 1) * len(k) for k, v in by_prompt.items() if len(k) >= min_shared)


@pytest.mark.parametrize("packing,budget,size", [("on", 16384, 64), ("on", 900, 3), ("off", 16384, 64)],
                         ids=["packed", "packed-small-budget", "padded-rest"])
def test_shared_prompt_matches_reference_in_random_order(demo_dir, items, reference, packing, budget, size):
    ref, expected = reference
    order = list(range(len(items)))
    random.Random(size).shuffle(order)
    engine = _engine(demo_dir, packing=packing, max_batch_tokens=budget, max_batch_size=size)
    assert engine.shared_prompt and engine.packing == (packing == "on")
    stats = []
    results = engine.score_items([items[i] for i in order], on_batch=stats.append)
    assert all(r.error is None for r in results)
    diffs = [abs(results[k].score - expected[i]) for k, i in enumerate(order)]
    assert max(diffs) < TOL, f"max diff {max(diffs):.2e}"
    reused = sum(s.reused_tokens for s in stats)
    # Every distinct sequence is computed once: identical items share one result.
    distinct = {tuple(e.input_ids) for e in engine.encode([items[i] for i in order])}
    assert sum(s.real_tokens for s in stats) == sum(map(len, distinct))
    if budget > 10000:  # every group fits one unit: each prompt is computed once at most
        assert reused >= _expected_reuse(ref, items)
    else:  # groups cut to fit: less reuse, but still some
        assert 0 < reused < _expected_reuse(ref, items)


def test_only_kinds_that_need_the_response_boundary_template_the_prompt_alone(demo_dir, items):
    """Sharing reads token ids, so a sequence classifier never templates a prompt on its own; DPO, which
    scores the tokens after the prompt, gets the verified prompt length."""
    from rmcluster.demo_kinds import demo_checkpoint_path

    assert all(e.prompt_tokens == 0 for e in build_encoder(_config(demo_dir)).encode_record(items[:30]))
    dpo = build_encoder(RMConfig(model={"kind": "dpo", "name": str(demo_checkpoint_path("causal_lm"))}))
    for it in items[:30]:
        e = dpo.encode(it)
        prompt = dpo.tokenizer.apply_chat_template(it.messages[: it.num_prompt_messages], tokenize=True,
                                                   add_generation_prompt=True)["input_ids"]
        assert e.prompt_tokens == len(prompt) and e.input_ids[: e.prompt_tokens] == prompt
        assert pickle.loads(pickle.dumps(e)) == e  # it travels between processes as is


def test_shared_prompt_off_encodes_and_runs_without_reuse(demo_dir, items, reference):
    _, expected = reference
    engine = _engine(demo_dir, shared_prompt="off")
    assert not engine.shared_prompt
    assert all(e.prompt_tokens == 0 for e in engine.encode(items[:20]))
    stats = []
    results = engine.score_items(items, on_batch=stats.append)
    assert sum(s.reused_tokens for s in stats) == 0
    assert max(abs(r.score - e) for r, e in zip(results, expected)) < TOL


@pytest.fixture(scope="module")
def last_message_marker_dir(tmp_path_factory, demo_dir):
    """The demo model with a template that marks the final message, as some templates do (e.g. for
    reasoning traces): the prompt templated alone then differs from the same turns inside the full
    conversation, so its tokens are not a prefix and nothing may be shared."""
    out = tmp_path_factory.mktemp("marker-template")
    shutil.copytree(demo_dir, out, dirs_exist_ok=True)
    template = out / "chat_template.jinja"  # where transformers 5.x saves it
    marked = template.read_text().replace(
        "{{ message['content'] | trim }}", "{% if loop.last %}final: {% endif %}{{ message['content'] | trim }}")
    assert "loop.last" in marked
    template.write_text(marked)
    return out


def test_a_template_that_marks_the_last_message_shares_only_identical_tokens(last_message_marker_dir, items):
    """The prompt templated alone is no prefix here, but a record's responses still start with the same
    tokens (the prompt, the header, the marker): those are shared, and scores stay exact."""
    ref = ReferenceLoop(last_message_marker_dir)
    assert "final: " in ref.tokenizer.apply_chat_template(items[0].messages, tokenize=False)
    engine = _engine(last_message_marker_dir)
    subset = items[:40]
    stats = []
    results = engine.score_items(subset, on_batch=stats.append)
    assert sum(s.reused_tokens for s in stats) > 0
    expected = ref.scores([it.messages for it in subset])
    assert max(abs(r.score - e) for r, e in zip(results, expected)) < TOL


def test_truncated_items_do_not_share_and_still_match(demo_dir, items):
    max_length = 120
    ref = ReferenceLoop(demo_dir)
    engine = _engine(demo_dir, tokenization={"max_length": max_length, "on_overflow": "truncate_left"})
    encoded = engine.encode(items)
    results = engine.score_encoded(encoded)
    checked = 0
    for it, e, r in zip(items, encoded, results):
        if isinstance(e, EncodeFailure) or not e.truncated:
            continue
        assert e.prompt_tokens == 0
        full = ref.ids(it.messages)[0].tolist()
        assert abs(r.score - ref.score_ids(full[:1] + full[len(full) - (max_length - 1):])) < TOL
        checked += 1
    assert checked >= 10


def test_identical_prompts_share_across_records(demo_dir):
    """Grouping is by token content: two records asking the same question share one prompt pass."""
    ref = ReferenceLoop(demo_dir)
    prompt = "Jane has 12 apples and gives 4 to Mark. How many are left?"
    records = [{"id": "a", "prompt": prompt, "chosen": "Eight.", "rejected": "Nine."},
               {"id": "b", "prompt": prompt, "responses": ["8", "It is eight apples."]}]
    items = [it for r in records for it in items_from_raw(r)]
    stats = []
    results = _engine(demo_dir).score_items(items, on_batch=stats.append)
    prompt_len = len(ref.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                       add_generation_prompt=True)["input_ids"])
    assert sum(s.reused_tokens for s in stats) == 3 * prompt_len
    assert max(abs(r.score - ref.score(it.messages)) for r, it in zip(results, items)) < TOL


def test_groups_are_cut_to_fit_the_group_limit_and_item_cap(demo_dir, items):
    encoded = _engine(demo_dir).encode(items)
    for limit, cap in [(300, 64), (2000, 2), (1, 1)]:
        units = build_units(encoded, range(len(encoded)), True, limit, cap, 16)
        assert sorted(m for u in units for m in u.members) == list(range(len(encoded)))
        for u in units:
            assert len(u.members) <= cap
            assert len(u.members) == 1 or u.num_tokens <= limit
            for m, tail in zip(u.members, u.tails):  # prompt + tail is the item's whole sequence
                assert list(u.prompt) + list(tail) == encoded[m].input_ids


def test_a_group_stays_whole_up_to_max_length_even_over_the_budget(demo_dir, items):
    """Cutting a group recomputes its prompt, so the engine keeps it whole up to the largest forward it
    already runs for one long item (max_length)."""
    engine = _engine(demo_dir, max_batch_tokens=600, tokenization={"max_length": 3000})
    encoded = engine.encode(items)
    units = engine.pack_units(encoded)
    shared = [u for u in units if u.prompt]
    assert any(u.num_tokens > 600 for u in shared) and all(u.num_tokens <= 3000 for u in shared)


class _PoisonScorer(SequenceClassifierScorer):
    """Fault injection: a packed forward holding the poison token raises, like a kernel failure would."""

    poison: int

    def forward_packed(self, units, items):
        if any(self.poison in t for u in units for t in u.tails):
            raise RuntimeError("injected failure")
        return super().forward_packed(units, items)


def test_failing_response_fails_alone_within_its_shared_group(demo_dir):
    base = _engine(demo_dir)
    poisoned = _PoisonScorer(base.scorer.model, base.scorer.encoder, "demo")
    record = {"prompt": "Count the apples.", "responses": ["one", "two", "three zebra", "four", "five"]}
    items = items_from_raw(record)
    zebra = poisoned.encoder.encode(items[2]).input_ids
    poisoned.poison = next(t for t in zebra if all(t not in poisoned.encoder.encode(it).input_ids
                                                   for k, it in enumerate(items) if k != 2))
    results = ScoringEngine(poisoned, base.batching).score_items(items)
    good = base.score_items(items)
    assert results[2].score is None and "injected failure" in results[2].error
    for k in (0, 1, 3, 4):
        assert results[k].error is None and abs(results[k].score - good[k].score) < TOL
