"""Generative judges in one forward pass (and reasoning first), against a plain loop written here."""

import math
import random

import pytest

from rmcluster.config import RMConfig
from rmcluster.demo_kinds import demo_checkpoint_path
from rmcluster.engine import ScoringEngine
from rmcluster.judging import GRADE_SYSTEM, GRADE_USER, MTBENCH_SYSTEM, MTBENCH_USER, YES_NO_USER
from rmcluster.pipeline import score_records
from rmcluster.results import rows_to_table
from rmcluster.summary import summarize
from tests.kinds import mixed_records
from tests.reference_kinds import judge_messages, judge_reference, pairwise_judge_reference, reasoning_judge_reference

TOL = 1e-4


def _engine(batching=None, **settings) -> ScoringEngine:
    model = {"kind": "generative_judge", "name": str(demo_checkpoint_path("causal_lm")), **settings}
    return ScoringEngine.from_config(RMConfig(model=model, batching=batching or {}))


def _judge_messages(system, template, **fields):
    return judge_messages(system, template, **fields)


def _split(conv):
    return "\n\n".join(m["content"] for m in conv[:-1]), conv[-1]["content"]


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


@pytest.fixture(scope="module")
def records():
    return mixed_records(60, seed=31, max_words=120)


@pytest.mark.parametrize("packing", ["off", "on"])
def test_pointwise_yes_no_is_the_log_odds_of_the_verdicts(records, packing):
    path = demo_checkpoint_path("causal_lm")
    engine = _engine({"packing": packing})
    assert engine.packing == (packing == "on")
    order = list(range(len(records)))
    random.Random(2).shuffle(order)
    rows = score_records(engine, [records[i][0] for i in order])
    convs = [c for i in order for c in records[i][1]]
    assert len(rows) == len(convs)
    for row, conv in zip(rows, convs):
        prompt, response = _split(conv)
        yes, no = judge_reference(path, _judge_messages(None, YES_NO_USER, prompt=prompt, response=response), "",
                                  ["Yes", "No"])
        assert row["error"] is None and abs(row["score"] - (yes - no)) < TOL
        assert abs(row["values"]["Yes"] - _sigmoid(yes - no)) < TOL and list(row["values"]) == ["Yes", "No"]


def test_grades_are_the_expected_grade(records):
    path = demo_checkpoint_path("causal_lm")
    rows = score_records(_engine(template="grade_1_5"), [r for r, _ in records[:15]])
    for row, conv in zip(rows, [c for _, cs in records[:15] for c in cs]):
        prompt, response = _split(conv)
        logits = judge_reference(path, _judge_messages(GRADE_SYSTEM, GRADE_USER, prompt=prompt, response=response),
                                 "[RESULT] ", ["1", "2", "3", "4", "5"])
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        expected = sum((g + 1) * w for g, w in enumerate(weights)) / sum(weights)
        assert abs(row["score"] - expected) < TOL and 1 <= row["score"] <= 5


def _pairwise_expected(path, prompt, first, second):
    return pairwise_judge_reference(path, MTBENCH_SYSTEM, MTBENCH_USER, "[[", prompt, first, second)


def test_pairwise_runs_both_orders_and_debiases(records):
    path = demo_checkpoint_path("causal_lm")
    pairs = [(r, c) for r, c in records if "chosen" in r]
    groups = [(r, c) for r, c in records if "responses" in r and len(r["responses"]) > 1]
    assert len(pairs) > 5 and any(len(r["responses"]) > 2 for r, _ in groups)
    stats = []
    rows = score_records(_engine(template="pairwise_mtbench"), [r for r, _ in pairs + groups], on_batch=stats.append)
    assert sum(s.reused_tokens for s in stats) > 0  # a record's comparisons ran their common prefix once
    at = 0
    for record, _ in pairs:
        chosen, rejected = rows[at], rows[at + 1]
        score, as_a, as_b = _pairwise_expected(path, record["prompt"], record["chosen"], record["rejected"])
        assert abs(chosen["score"] - score) < TOL and abs(rejected["score"] + score) < TOL
        assert abs(chosen["values"]["p_win_as_a"] - as_a) < TOL and abs(chosen["values"]["p_win_as_b"] - as_b) < TOL
        at += 2
    for record, _ in groups:  # best-of-N: each response against the first; the first itself scores 0
        base = record["responses"][0]
        assert rows[at]["score"] == 0.0 and rows[at]["values"] == {"vs_index": 0.0}
        for k, response in enumerate(record["responses"][1:], 1):
            score, _, _ = _pairwise_expected(path, record["prompt"], response, base)
            assert abs(rows[at + k]["score"] - score) < TOL and rows[at + k]["values"]["vs_index"] == 0.0
        at += len(record["responses"])
    summary = summarize(rows_to_table(rows))
    comparisons = [r for r in rows if r["values"] and "p_win_as_a" in r["values"] and r["label"] != "rejected"]
    flips = sum((r["values"]["p_win_as_a"] > 0.5) != (r["values"]["p_win_as_b"] > 0.5) for r in comparisons)
    assert summary["judge"] == {"comparisons": len(comparisons), "position_bias": flips / len(comparisons)}


def test_a_pairwise_judge_refuses_records_with_one_response(records):
    rows = score_records(_engine(template="pairwise_mtbench"), [{"id": "one", "messages": records[0][1][0]}]
                         if "messages" in records[0][0] else [{"id": "one", "text": "hi"}])
    assert rows[0]["score"] is None and "scores pairs and best-of-N" in rows[0]["error"]


def test_a_user_template_file_and_system(tmp_path, records):
    path = demo_checkpoint_path("causal_lm")
    template = "Question: {{ prompt }}\nAnswer: {{ response }}\nGood? Yes or No.\n"
    (tmp_path / "judge.jinja").write_text(template)
    engine = _engine(template=str(tmp_path / "judge.jinja"), system="Be strict.", answer_prefix="", verdicts=["Yes", "No"])
    rows = score_records(engine, [r for r, _ in records[:10]])
    for row, conv in zip(rows, [c for _, cs in records[:10] for c in cs]):
        prompt, response = _split(conv)
        # The file's text verbatim, but for its one trailing newline.
        messages = _judge_messages("Be strict.", template[:-1], prompt=prompt, response=response)
        yes, no = judge_reference(path, messages, "", ["Yes", "No"])
        assert abs(row["score"] - (yes - no)) < TOL


def test_a_prefix_that_merges_with_a_verdict_is_refused():
    with pytest.raises(ValueError, match="tokenize as .* not the prefix's tokens"):
        _engine(answer_prefix="Y", verdicts=["es", "o"])  # "Yes" is one token: no verdict token follows "Y"
    with pytest.raises(ValueError, match="neither a preset"):
        _engine(template="no_such_preset")


def test_reasoning_first_then_the_verdict_at_the_prefix(records):
    path = demo_checkpoint_path("causal_lm")
    engine = _engine(template="pointwise_yes_no", answer_prefix="[[", verdicts=["A", "B"], generate={"max_new_tokens": 12})
    convs = [c for _, cs in records[:8] for c in cs]
    rows = score_records(engine, [r for r, _ in records[:8]])
    for row, conv in zip(rows, convs):
        prompt, response = _split(conv)
        messages = _judge_messages(None, YES_NO_USER, prompt=prompt, response=response)
        (a, b), rationale = reasoning_judge_reference(path, messages, "[[", ["A", "B"], 12)
        assert row["error"] is None and abs(row["score"] - (a - b)) < TOL, (row, a - b)
        assert row["rationale"] == rationale and rationale


def test_reasoning_stops_where_the_judge_writes_the_prefix(records):
    """A prefix the judge really emits (a token of its own greedy output), so the rationale is cut there."""
    import torch
    from transformers import AutoModelForCausalLM

    from rmcluster.judging import verdict_tokens
    from tests.reference_kinds import load

    path = demo_checkpoint_path("causal_lm")
    model, tokenizer = load(str(path), AutoModelForCausalLM, False)
    prompt, response = _split(records[0][1][0])
    messages = _judge_messages(None, YES_NO_USER, prompt=prompt, response=response)
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.eos_token_id)[0, len(ids):].tolist()
    prefix = None
    for k in range(2, len(out)):  # a token it writes after a short rationale, usable as an answer prefix
        text = tokenizer.decode([out[k]])
        try:
            if tokenizer(text, add_special_tokens=False)["input_ids"] == [out[k]] and out[k] not in out[:k]:
                verdict_tokens(tokenizer, text, ["A", "B"])
                prefix = text
                break
        except ValueError:
            continue
    assert prefix is not None
    engine = _engine(template="pointwise_yes_no", answer_prefix=prefix, verdicts=["A", "B"], generate={"max_new_tokens": 16})
    row = score_records(engine, [{"id": "x", "prompt": prompt, "chosen": response, "rejected": "no"}])[0]
    (a, b), rationale = reasoning_judge_reference(path, messages, prefix, ["A", "B"], 16)
    assert abs(row["score"] - (a - b)) < TOL and row["rationale"] == rationale
    assert prefix not in rationale and len(tokenizer(rationale, add_special_tokens=False)["input_ids"]) < 16
