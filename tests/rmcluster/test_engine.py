"""Engine behaviour: input order, per-item errors, fault isolation in forward."""

import pytest

from rmcluster.config import BatchingConfig, RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.records import ScoreItem, conversation_items
from rmcluster.scorers.sequence_classifier import SequenceClassifierScorer
from rmcluster.templating import ChatEncoder
from tests.conversations import varied_conversations
from tests.reference import ReferenceLoop


@pytest.fixture(scope="module")
def engine(demo_dir):
    return ScoringEngine.from_config(RMConfig(model={"name": str(demo_dir)}, tokenization={"max_length": 300}))


def test_demo_name_resolves_and_runs_float32_on_cpu():
    engine = ScoringEngine.from_config(RMConfig(model="demo"))
    assert engine.scorer.model.dtype.is_floating_point and str(engine.scorer.model.dtype) == "torch.float32"
    assert engine.scorer.device_type == "cpu" and engine.model_name == "demo"
    assert engine.scorer.model.config._attn_implementation == "sdpa"


def test_over_length_item_fails_alone_with_clear_message(engine, demo_dir):
    convs = varied_conversations(40, seed=3)
    ref = ReferenceLoop(demo_dir)
    results = engine.score_items(conversation_items(convs))
    for conv, res in zip(convs, results):
        n = ref.ids(conv).shape[-1]
        if n > 300:
            assert res.score is None and "over max_length 300" in res.error and "on_overflow" in res.error
        else:
            assert res.error is None and abs(res.score - ref.score(conv)) < 1e-4 and res.num_tokens == n
    assert any(r.error for r in results) and any(r.error is None for r in results)


class _PoisonScorer(SequenceClassifierScorer):
    """Fault injection: any batch holding the poison token raises, like a kernel failure would."""

    poison: int

    def forward(self, batch):
        if any(self.poison in e.input_ids for e in batch):
            raise RuntimeError("injected failure")
        return super().forward(batch)

    def forward_packed(self, units, items):
        if any(self.poison in list(u.prompt) + list(t) for u in units for t in u.tails):
            raise RuntimeError("injected failure")
        return super().forward_packed(units, items)


@pytest.mark.parametrize("packing", ["on", "off"])
def test_failing_item_in_forward_does_not_fail_its_batch(engine, demo_dir, packing):
    scorer = engine.scorer
    poisoned = _PoisonScorer(scorer.model, scorer.encoder, "demo")
    batching = BatchingConfig(packing=packing)
    convs = [[{"role": "user", "content": f"count {i} apples"}] for i in range(33)]
    good = ScoringEngine(scorer, batching).score_items(conversation_items(convs))
    encoded = poisoned.encoder.encode(ScoreItem.conversation("0", convs[5]))
    poisoned.poison = encoded.input_ids[-3]  # a token that only item 5 has
    assert sum(poisoned.poison in poisoned.encoder.encode(item).input_ids for item in conversation_items(convs)) == 1
    stats = []
    results = ScoringEngine(poisoned, batching).score_items(conversation_items(convs), stats.append)
    assert max(s.items for s in stats) > 8  # the poisoned item really shared a batch before being isolated
    assert results[5].score is None and "injected failure" in results[5].error
    for i, (r, g) in enumerate(zip(results, good)):
        if i != 5:
            assert r.error is None and r.score == pytest.approx(g.score, abs=1e-5)


def test_results_come_back_in_input_order(engine):
    convs = varied_conversations(30, seed=11, max_words=200)
    forward = [r.score for r in engine.score_items(conversation_items(convs))]
    backward = [r.score for r in engine.score_items(conversation_items(convs[::-1]))]
    assert forward == pytest.approx(backward[::-1], abs=1e-5)


def test_non_sequence_classifier_is_refused_clearly(demo_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(demo_dir)
    with pytest.raises(ValueError, match="no per-token `score` head"):
        SequenceClassifierScorer(lm, ChatEncoder(AutoTokenizer.from_pretrained(demo_dir), 300), "lm")


def test_weight_free_encoder_encodes_like_the_scorer(engine):
    from rmcluster.scorers import build_encoder

    encoder = build_encoder(RMConfig(model={"name": engine.scorer.encoder.tokenizer.name_or_path},
                                     tokenization={"max_length": 300}))
    for i, conv in enumerate(varied_conversations(20, seed=5)):
        item = ScoreItem.conversation(str(i), conv)
        try:
            expected = engine.scorer.encoder.encode(item)
        except ValueError as err:
            with pytest.raises(type(err)):
                encoder.encode(item)
            continue
        assert encoder.encode(item) == expected


def test_identical_items_run_once_and_tie_exactly(engine, demo_dir):
    from rmcluster.pipeline import score_records

    reference = ReferenceLoop(demo_dir)
    prompt = "Pick the better answer to this question about rivers and the sea, please."
    same = "Rivers run to the sea, mostly downhill."
    records = [{"id": "tie", "prompt": prompt, "chosen": same, "rejected": same},
               {"id": "other", "prompt": prompt, "responses": ["A different answer entirely.", same]}]
    batches = []
    rows = score_records(engine, records, on_batch=lambda stats: batches.append(stats))
    scores = {(r["id"], r["index"]): r["score"] for r in rows}
    assert scores[("tie", 0)] == scores[("tie", 1)] == scores[("other", 1)]  # bit for bit: one computation
    conv = [{"role": "user", "content": prompt}, {"role": "assistant", "content": same}]
    assert scores[("tie", 0)] == pytest.approx(reference.score(conv), abs=1e-4)
    assert sum(b.items for b in batches) == 2  # four items, two distinct sequences
