"""DPO implicit rewards against per-token log-softmax gathered one conversation at a time, for both models."""

import math
import random

import pytest

from rmcluster.config import RMConfig
from rmcluster.demo_kinds import demo_checkpoint_path
from rmcluster.engine import ScoringEngine
from rmcluster.pipeline import score_records
from tests.kinds import mixed_records
from tests.reference_kinds import response_logps

TOL = 1e-4


def _engine(batching=None, **settings) -> ScoringEngine:
    model = {"kind": "dpo", "name": str(demo_checkpoint_path("causal_lm")), **settings}
    return ScoringEngine.from_config(RMConfig(model=model, batching=batching or {}))


def _split(conv):
    return conv[:-1], conv[-1:]


@pytest.fixture(scope="module")
def records():
    # Only shapes with a prompt: a lone user turn has no response to score (an error row, tested below).
    return [(r, c) for r, c in mixed_records(90, seed=41, max_words=160) if "messages" not in r or len(c[0]) > 1]


@pytest.mark.parametrize("packing,shared", [("off", "off"), ("on", "off"), ("on", "on")])
def test_policy_minus_reference_in_random_order(records, packing, shared):
    policy, reference = demo_checkpoint_path("causal_lm"), demo_checkpoint_path("causal_lm_reference")
    engine = _engine({"packing": packing, "shared_prompt": shared}, reference=str(reference), beta=0.1)
    assert engine.packing == (packing == "on") and engine.shared_prompt == (shared == "on")
    order = list(range(len(records)))
    random.Random(3).shuffle(order)
    stats = []
    rows = score_records(engine, [records[i][0] for i in order], on_batch=stats.append)
    if shared == "on":
        assert sum(s.reused_tokens for s in stats) > 0  # pairs and groups ran their prompt once, on both models
    convs = [c for i in order for c in records[i][1]]
    assert len(rows) == len(convs) > 100
    for row, conv in zip(rows, convs):
        pol, ref = response_logps(policy, *_split(conv)), response_logps(reference, *_split(conv))
        assert row["error"] is None, row["error"]
        assert abs(row["score"] - 0.1 * (sum(pol) - sum(ref))) < TOL
        assert abs(row["values"]["policy_logp"] - sum(pol)) < 1e-3 and row["values"]["response_tokens"] == len(pol)


@pytest.mark.parametrize("variant", ["sum", "avg", "norm"])
def test_reference_free_variants(records, variant):
    policy = demo_checkpoint_path("causal_lm")
    rows = score_records(_engine(reference_free=variant), [r for r, _ in records[:20]])
    for row, conv in zip(rows, [c for _, cs in records[:20] for c in cs]):
        lp = response_logps(policy, *_split(conv))
        expected = {"sum": sum(lp), "avg": sum(lp) / len(lp), "norm": -math.sqrt(sum(x * x for x in lp))}[variant]
        assert abs(row["score"] - expected) < TOL
        assert "reference_logp" not in row["values"]


def test_an_item_without_an_exact_prompt_prefix_is_an_error_row(records):
    rows = score_records(_engine(), [{"id": "alone", "messages": [{"role": "user", "content": "no response here"}]},
                                     {"id": "text", "text": "<|begin_of_text|>templated"}])
    for row in rows:
        assert row["score"] is None and "exact token prefix" in row["error"]


def test_demo_names_resolve_to_a_policy_and_its_reference():
    engine = ScoringEngine.from_config(RMConfig(model={"kind": "dpo", "name": "demo", "reference": "demo"}))
    assert engine.scorer.reference is not None
    assert engine.scorer.reference.model.name_or_path != engine.scorer.policy.model.name_or_path
