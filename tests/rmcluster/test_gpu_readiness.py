"""What would break on the first GPU run, tested on CPU: attention fallback, OOM recovery, poisoned CUDA
contexts, out-of-range token ids, the varlen kernel's arguments, and the fp32 score head."""

import gc
import json
import logging
import shutil
import weakref

import pytest
import torch

from rmcluster import model_loading, segment_attention
from rmcluster.config import BatchingConfig, RMConfig, SequenceClassifierModel
from rmcluster.engine import ScoringEngine
from rmcluster.packing import PackLayout, PackUnit
from rmcluster.pipeline import score_records
from rmcluster.records import conversation_items
from rmcluster.scorers.sequence_classifier import SequenceClassifierScorer
from tests.conversations import varied_conversations


@pytest.fixture(scope="module")
def engine(demo_dir):
    return ScoringEngine.from_config(RMConfig(model={"name": str(demo_dir)}))


def test_flash_attention_without_flash_attn_falls_back_to_sdpa_with_a_warning(monkeypatch, caplog, demo_dir):
    monkeypatch.setattr(model_loading, "flash_attn_available", lambda: False)  # whatever this machine has
    cfg = SequenceClassifierModel(name=str(demo_dir), attn_implementation="flash_attention_2", device="cpu")
    with caplog.at_level(logging.WARNING, logger="rmcluster.model_loading"):
        model, resolved = model_loading.load_model(cfg)
    assert resolved.attn_implementation == "sdpa" and model.config._attn_implementation == "sdpa"
    assert any("flash-attn is not installed" in r.getMessage() for r in caplog.records)


class _MemoryHungry(SequenceClassifierScorer):
    """Fault injection: a forward over more than `limit` tokens allocates, then raises OutOfMemoryError."""

    limit = 300
    held: list = []
    calls = 0

    def forward(self, batch):
        type(self).calls += 1
        for ref in self.held:  # what an earlier failed forward allocated must be gone before this one
            assert ref() is None, "a failed forward's tensors were still alive at the retry"
        if sum(e.num_tokens for e in batch) > self.limit:
            scratch = torch.empty(4 << 20)  # 16 MB the failed attempt holds in its frame
            self.held.append(weakref.ref(scratch))
            raise torch.OutOfMemoryError(f"injected: {sum(e.num_tokens for e in batch)} tokens")
        return super().forward(batch)


def test_oom_splits_the_batch_after_releasing_the_failed_attempt(engine):
    scorer = _MemoryHungry(engine.scorer.model, engine.scorer.encoder, "demo")
    convs = varied_conversations(16, seed=4, max_words=300)
    good = engine.score_items(conversation_items(convs))
    _MemoryHungry.held, _MemoryHungry.calls = [], 0
    _MemoryHungry.limit = max(r.num_tokens for r in good)  # any one item fits; most batches of two do not
    results = ScoringEngine(scorer, BatchingConfig(packing="off")).score_items(conversation_items(convs))
    gc.collect()
    assert _MemoryHungry.held and all(ref() is None for ref in _MemoryHungry.held)
    assert all(r.error is None for r in results)
    assert [r.score for r in results] == pytest.approx([g.score for g in good], abs=1e-5)


class _Poisoned(SequenceClassifierScorer):
    calls = 0

    def forward(self, batch):
        type(self).calls += 1
        raise torch.AcceleratorError("CUDA error: device-side assert triggered")


def test_a_poisoned_device_is_not_retried_item_by_item(engine):
    scorer = _Poisoned(engine.scorer.model, engine.scorer.encoder, "demo")
    with pytest.raises(torch.AcceleratorError):
        ScoringEngine(scorer, BatchingConfig(packing="off")).score_items(
            conversation_items(varied_conversations(12, seed=5, max_words=300)))
    assert _Poisoned.calls == 1  # not 2N-1 forwards, each blaming another item


def test_out_of_range_token_ids_are_error_rows_never_a_forward(demo_dir, tmp_path):
    from transformers import AutoTokenizer

    path = tmp_path / "wide-tokenizer"
    shutil.copytree(demo_dir, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_tokens(["zzzunseen"])  # a token the model has no embedding row for
    tokenizer.save_pretrained(path)
    assert len(tokenizer) > json.loads((path / "config.json").read_text())["vocab_size"]
    engine = ScoringEngine.from_config(RMConfig(model={"name": str(path)}))
    forwards = []
    engine.scorer.forward = lambda batch, f=engine.scorer.forward: forwards.append(batch) or f(batch)
    rows = score_records(engine, [{"id": "bad", "messages": [{"role": "user", "content": "hi zzzunseen"}]},
                                  {"id": "ok", "messages": [{"role": "user", "content": "hi"}]}])
    assert rows[0]["score"] is None and "outside the model's vocabulary" in rows[0]["error"]
    assert rows[1]["error"] is None and all(max(e.input_ids) < len(tokenizer) - 1 for b in forwards for e in b)


def test_torch_varlen_kernel_gets_a_tuple_window_and_int32_offsets(monkeypatch):
    calls = []

    def fake_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        calls.append({"window": window_size, "gqa": enable_gqa, "cu": (cu_q.dtype, cu_k.dtype, cu_q.device),
                      "heads": (q.shape[1], k.shape[1])})
        return torch.zeros_like(q)

    import torch.nn.attention.varlen as varlen

    monkeypatch.setattr(varlen, "varlen_attn", fake_varlen)
    kernel = segment_attention.torch_varlen_fn()
    layout = PackLayout([PackUnit.single(list(range(9)), 0), PackUnit(list(range(5)), [[7, 8], [9]], [1, 2])])
    q, k = torch.randn(1, 8, layout.num_tokens, 16), torch.randn(1, 2, layout.num_tokens, 16)
    segment_attention._varlen(kernel, layout, q, k, k, None, None, None)
    segment_attention._varlen(kernel, layout, q, k, k, None, 4, None)
    assert [c["window"] for c in calls] == [(-1, 0), (3, 0)] and all(isinstance(c["window"], tuple) for c in calls)
    assert all(c["cu"] == (torch.int32, torch.int32, q.device) and c["gqa"] for c in calls)

    def old_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):  # no enable_gqa
        calls.append({"heads": (q.shape[1], k.shape[1])})
        return torch.zeros_like(q)

    monkeypatch.setattr(varlen, "varlen_attn", old_varlen)
    segment_attention._varlen(segment_attention.torch_varlen_fn(), layout, q, k, k, None, None, None)
    assert calls[-1]["heads"] == (8, 8)  # K/V expanded to the query heads
    with pytest.raises(NotImplementedError, match="softcap"):
        segment_attention._varlen(kernel, layout, q, k, k, None, None, 30.0)


def test_the_varlen_kernel_is_chosen_for_half_precision_cuda_only(monkeypatch):
    class Model:
        dtype = torch.bfloat16

        class config:
            _attn_implementation = "sdpa"

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(segment_attention, "torch_varlen_fn", lambda: "torch varlen")
    assert segment_attention.varlen_kernel(Model(), torch.device("cpu")) is None
    assert segment_attention.varlen_kernel(Model(), torch.device("cuda")) == "torch varlen"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert segment_attention.varlen_kernel(Model(), torch.device("cuda")) is None  # no FlashAttention before sm80
    Model.dtype = torch.float32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert segment_attention.varlen_kernel(Model(), torch.device("cuda")) is None


def test_fp32_head_keeps_bf16_scores_apart(demo_dir):
    cfg = {"name": str(demo_dir), "dtype": "bfloat16"}
    bf16 = ScoringEngine.from_config(RMConfig(model=cfg, batching={"max_batch_size": 1}))
    fp32 = ScoringEngine.from_config(RMConfig(model={**cfg, "fp32_head": True}, batching={"max_batch_size": 1}))
    assert fp32.scorer.model.score.weight.dtype == torch.bfloat16  # the model's own head is untouched
    convs = varied_conversations(6, seed=6, max_words=300)
    low, high = bf16.score_conversations(convs), fp32.score_conversations(convs)
    assert any(a.score != b.score for a, b in zip(low, high))  # the bf16 head rounds; the fp32 one does not
    for conv, a, b in zip(convs, low, high):
        ids = torch.tensor([fp32.encoder.encode(conversation_items([conv])[0]).input_ids])
        with torch.no_grad():
            hidden = fp32.scorer.model.model(ids).last_hidden_state[0, -1]
            want = (hidden.float() @ fp32.scorer.model.score.weight.float().T)[0].item()
        assert abs(b.score - want) < 1e-4 and a.score == pytest.approx(want, abs=0.05)
