"""Process reward models: step scores against each checkpoint's documented usage, one chain at a time."""

import math
import random

import pytest

from rmcluster.config import RMConfig
from rmcluster.demo_kinds import demo_checkpoint_path
from rmcluster.engine import ScoringEngine
from rmcluster.pipeline import score_records
from rmcluster.results import rows_to_table
from rmcluster.summary import summarize
from tests.kinds import steps_records
from tests.reference_kinds import math_shepherd_reference, qwen_prm_reference

TOL = 1e-4
AGGREGATE = {"min": min, "last": lambda s: s[-1], "mean": lambda s: sum(s) / len(s), "prod": math.prod}


def _engine(name, batching=None, **settings) -> ScoringEngine:
    model = {"kind": "process_reward", "name": str(demo_checkpoint_path(name)), **settings}
    return ScoringEngine.from_config(RMConfig(model=model, batching=batching or {}))


def _qwen(**settings):
    return _engine("qwen_prm", trust_remote_code=True, **settings)


def _shepherd_conversation(prompt, steps):
    # Math-Shepherd's card scores plain text; here the same tags inside the demo chat template.
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": "".join(s + "ки" for s in steps)}]


def _check(rows, records, oracle, aggregate="min"):
    expected = [oracle(*chain) for _, chains in records for chain in chains]
    assert len(rows) == len(expected)
    for row, steps in zip(rows, expected):
        assert row["error"] is None, row["error"]
        assert len(row["step_scores"]) == len(steps)
        assert max(abs(a - b) for a, b in zip(row["step_scores"], steps)) < TOL
        assert abs(row["score"] - AGGREGATE[aggregate](steps)) < TOL


def test_token_head_prm_matches_the_card_in_random_order():
    records = steps_records(150, seed=3)
    random.Random(0).shuffle(records)
    engine = _qwen()
    assert engine.scorer.runner.mode == "right" and not engine.packing
    path = demo_checkpoint_path("qwen_prm")
    _check(score_records(engine, [r for r, _ in records]), records, lambda p, s: qwen_prm_reference(path, p, s))


@pytest.mark.parametrize("aggregate", list(AGGREGATE))
def test_aggregates(aggregate):
    records = steps_records(20, seed=4)
    path = demo_checkpoint_path("qwen_prm")
    rows = score_records(_qwen(aggregate=aggregate), [r for r, _ in records])
    _check(rows, records, lambda p, s: qwen_prm_reference(path, p, s), aggregate)


@pytest.mark.parametrize("packing,shared", [("off", "off"), ("on", "off"), ("on", "on")])
def test_candidate_token_prm_packs_and_shares_prompts_exactly(packing, shared):
    records = steps_records(120, seed=5, separator="ки")
    engine = _engine("math_shepherd", {"packing": packing, "shared_prompt": shared}, step_token="ки",
                     candidate_tokens=["+", "-"])
    assert engine.packing == (packing == "on") and engine.shared_prompt == (shared == "on")
    stats = []
    rows = score_records(engine, [r for r, _ in records], on_batch=stats.append)
    if shared == "on":
        assert sum(s.reused_tokens for s in stats) > 0  # pairs and groups really shared their prompt
    path = demo_checkpoint_path("math_shepherd")
    _check(rows, records, lambda p, s: math_shepherd_reference(path, _shepherd_conversation(p, s)))


def test_pair_accuracy_works_for_prms():
    records = [r for r, _ in steps_records(60, seed=6) if "chosen" in r]
    rows = score_records(_qwen(), records)
    summary = summarize(rows_to_table(rows))
    wins = sum(rows[i]["score"] > rows[i + 1]["score"] for i in range(0, len(rows), 2))
    assert summary["pairs"] == len(records) and summary["pair_accuracy"] == pytest.approx(wins / len(records))
    assert summary["step_scores"]["steps"] == sum(len(r["step_scores"]) for r in rows)


def test_bad_steps_and_separators_are_clear():
    with pytest.raises(ValueError, match="must be exactly one"):
        _engine("math_shepherd", step_token="not one token", candidate_tokens=["+", "-"])
    rows = score_records(_qwen(), [{"id": "x", "messages": [{"role": "user", "content": "q"},
                                                            {"role": "assistant", "content": "no separators"}]}])
    assert rows[0]["score"] is None and "no step separator '<extra_0>'" in rows[0]["error"]
    from rmcluster.config import RMConfig as Config

    plain = ScoringEngine.from_config(Config(model="demo"))
    rows = score_records(plain, [{"id": "s", "prompt": "q", "steps": ["a", "b"]}])
    assert "needs model.kind: process_reward" in rows[0]["error"]
