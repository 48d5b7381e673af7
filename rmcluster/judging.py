"""Generative judges, the weight-free half: judge prompts, verdict tokens, and how orders combine.

A judge's user message is rendered from a Jinja template (a preset, or a file) with the record's
prompt and response(s), then templated with the judge model's own chat template and generation
prompt; the answer prefix's tokens follow as if the model had written them. The engine then reads
the verdict tokens' logits at the last position (rmcluster/scorers/generative_judge.py).

Pairwise judging runs each comparison in both orders and combines them here: with p_AB the
probability that the first response wins when shown as A, and p_BA when shown as B,
p = (p_AB + p_BA) / 2, the first response's score is log(p / (1 - p)) and the second's its negative.
Best-of-N compares each response with the first one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .encoding import Encoded, EncodedItem, EncodeFailure, ItemError
from .outputs import ScoreOutput, ScoreResult
from .records import ScoreItem
from .templating import ChatEncoder

if TYPE_CHECKING:
    from .config import RMConfig

MTBENCH_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by "
    "comparing the two responses and provide a short explanation. Avoid any position biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow the length of the "
    "responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as "
    "possible. After providing your explanation, output your final verdict by strictly following this format: "
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better.'
)
MTBENCH_USER = (
    "[User Question]\n{{ prompt }}\n\n[The Start of Assistant A's Answer]\n{{ response_a }}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{{ response_b }}\n"
    "[The End of Assistant B's Answer]"
)
YES_NO_USER = ("{{ prompt }}\n\n[The Start of the Response]\n{{ response }}\n[The End of the Response]\n\n"
               "Is the final response correct and helpful? Answer Yes or No.")
GRADE_SYSTEM = ("You are a fair judge assistant tasked with providing clear, objective feedback based on specific "
                "criteria, ensuring each assessment reflects the absolute standards set for performance.")
GRADE_USER = (
    "###Task Description:\nAn instruction and a response to evaluate are given.\n1. Write a detailed feedback that "
    "assesses the quality of the response strictly based on helpfulness, correctness and harmlessness.\n"
    "2. After writing a feedback, write a score that is an integer between 1 and 5.\n3. The output format should "
    "look as follows: \"(write a feedback for criteria) [RESULT] (an integer number between 1 and 5)\"\n\n"
    "###The instruction to evaluate:\n{{ prompt }}\n\n###Response to evaluate:\n{{ response }}\n\n###Feedback: "
)


@dataclass(frozen=True)
class JudgePreset:
    mode: str
    template: str
    system: Optional[str]
    answer_prefix: str
    verdicts: tuple[str, ...]


PRESETS = {
    # RewardBench's default MT-Bench pairwise prompt; one pass reads A vs B right after "[[".
    "pairwise_mtbench": JudgePreset("pairwise", MTBENCH_USER, MTBENCH_SYSTEM, "[[", ("A", "B")),
    # GenRM-style: p("Yes") after a correctness question.
    "pointwise_yes_no": JudgePreset("pointwise", YES_NO_USER, None, "", ("Yes", "No")),
    # Prometheus-style absolute grade: the expected grade over the tokens 1..5 after "[RESULT]".
    "grade_1_5": JudgePreset("pointwise", GRADE_USER, GRADE_SYSTEM, "[RESULT] ", ("1", "2", "3", "4", "5")),
}


def template_text(template: str) -> str:
    """A preset's template, or a Jinja file's text verbatim but for one trailing newline."""
    if template in PRESETS:
        return PRESETS[template].template
    path = Path(template)
    if not path.is_file():
        raise ValueError(f"model.template {template!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    text = path.read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text


def turns_text(messages: Sequence[dict[str, Any]]) -> str:
    """A prompt or response given as messages, rendered as its turns' contents."""
    return "\n\n".join(str(m.get("content", "")) for m in messages)


def grades(verdicts: Sequence[str]) -> Optional[list[float]]:
    """The numeric values of grade verdicts (three or more numbers), else None (a two-way verdict)."""
    if len(verdicts) < 3:
        return None
    try:
        return [float(v) for v in verdicts]
    except ValueError:
        raise ValueError(f"model.verdicts: three or more verdicts are grades and must be numbers, got {list(verdicts)}")


class JudgeEncoder(ChatEncoder):
    """Judge prompts for a record's items: one per item (pointwise), or both orders per comparison (pairwise)."""

    def __init__(self, tokenizer: Any, max_length: int, mode: str, template: str, system: Optional[str],
                 answer_prefix: str, verdicts: Sequence[str], generating: bool = False):
        super().__init__(tokenizer, max_length, on_overflow="error")
        import jinja2.sandbox

        self.mode, self.system, self.generating = mode, system, generating
        self.verdicts = tuple(verdicts)
        self.grades = grades(self.verdicts)
        if mode == "pairwise" and len(self.verdicts) != 2:
            raise ValueError(f"a pairwise judge has two verdicts (first: the first response wins), got {self.verdicts}")
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
        self.template = env.from_string(template)
        self.answer_prefix = answer_prefix
        self.prefix_ids, self.verdict_ids = verdict_tokens(tokenizer, answer_prefix, self.verdicts)

    @classmethod
    def from_config(cls, config: "RMConfig") -> "JudgeEncoder":
        from .checkpoint import (
            check_remote_code, load_tokenizer, max_positions, model_config, resolve_model_path, vocab_size,
        )
        from .config import GenerativeJudgeModel

        m, tok = config.model, config.tokenization
        assert isinstance(m, GenerativeJudgeModel)
        path = resolve_model_path(m.name, m.kind)
        checkpoint = model_config(path, m.revision)
        check_remote_code(m.name, checkpoint, m.auto_class_name, m.trust_remote_code)
        preset = PRESETS.get(m.template)
        encoder = cls(load_tokenizer(path, m.revision, m.trust_remote_code), tok.max_length or max_positions(checkpoint),
                   m.resolved_mode, template_text(m.template), m.resolved_system,
                   m.answer_prefix if m.answer_prefix is not None else (preset.answer_prefix if preset else ""),
                   m.verdicts or (preset.verdicts if preset else ("Yes", "No")), generating=m.generate is not None)
        encoder.vocab_size = vocab_size(checkpoint)
        return encoder

    # -- prompts --------------------------------------------------------------------------------------
    def _judge_ids(self, **fields: str) -> EncodedItem:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": self.template.render(**fields)}]
        ids = self.conversation_ids(messages, add_generation_prompt=True)
        if not self.generating:  # a reasoning judge writes its own rationale, then the prefix
            ids += self.prefix_ids
        self.check_vocabulary(ids)
        if len(ids) > self.max_length:
            raise ItemError(f"the judge prompt is {len(ids)} tokens, over max_length {self.max_length}")
        return EncodedItem(ids)

    def encode(self, item: ScoreItem) -> EncodedItem:
        """A pointwise judgement of one item: its prompt and its final response in the template."""
        given = self.given_ids(item)
        if given is not None:  # already a full judge prompt (templated, or token ids)
            ids = given + ([] if self.generating else self.prefix_ids)
            self.check_vocabulary(ids)
            return EncodedItem(ids)
        prompt, response = _split(item)
        return self._judge_ids(prompt=prompt, response=response)

    def encode_record(self, items: Sequence[ScoreItem]) -> list[Encoded]:
        if self.mode == "pointwise":
            return super().encode_record(items)
        if len(items) < 2:
            return [EncodeFailure("ItemError: a pairwise judge scores pairs and best-of-N groups; this record has "
                                  "one response (use mode: pointwise)")]
        units: list[Encoded] = []
        for item in items[1:]:  # pairs: chosen vs rejected; best-of-N: each response vs the first
            first, other = (items[0], item) if items[0].label == "chosen" else (item, items[0])
            units += [self._pairwise_or_fail(first, other), self._pairwise_or_fail(other, first)]
        return units

    def _pairwise_or_fail(self, a: ScoreItem, b: ScoreItem) -> Encoded:
        try:
            prompt, response_a = _split(a)
            _, response_b = _split(b)
            return self._judge_ids(prompt=prompt, response_a=response_a, response_b=response_b)
        except Exception as err:  # noqa: BLE001 - this comparison's error, shared by both its items
            return EncodeFailure.of(err)

    # -- results --------------------------------------------------------------------------------------
    def combine(self, items: Sequence[ScoreItem], results: Sequence[ScoreResult]) -> list[ScoreResult]:
        if self.mode == "pointwise":
            return super().combine(items, results)
        if len(items) < 2:
            return [results[0]] * len(items)
        if items[0].label == "chosen":  # one comparison: chosen (first) vs rejected
            return list(_pair_results(results[0], results[1]))
        out = [ScoreResult.ok(ScoreOutput(0.0, values={"vs_index": 0.0}), 0)]  # the baseline itself: p = 1/2
        for k in range(1, len(items)):
            # Item k against item 0: (item k as A, item 0 as B), then swapped; item k did all of that work.
            as_a, as_b = results[2 * k - 2], results[2 * k - 1]
            mine, _ = _pair_results(as_a, as_b)
            values = {**(mine.output.values or {}), "vs_index": 0.0} if mine.output is not None else None
            out.append(ScoreResult(_with_values(mine.output, values), as_a.num_tokens + as_b.num_tokens,
                                   mine.truncated, mine.error))
        return out


def _split(item: ScoreItem) -> tuple[str, str]:
    messages = item.messages or []
    n = item.num_prompt_messages
    if not 0 < n < len(messages):
        raise ItemError("a judge needs a prompt and a response (a conversation of two or more messages)")
    return turns_text(messages[:n]), turns_text(messages[n:])


def _with_values(out: Optional[ScoreOutput], values: Optional[dict[str, float]]) -> Optional[ScoreOutput]:
    if out is None:
        return None
    return ScoreOutput(out.score, values=values, rationale=out.rationale)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _pair_results(first_as_a: ScoreResult, first_as_b: ScoreResult) -> tuple[ScoreResult, ScoreResult]:
    """The two items' results from the orders (first as A) and (first as B); each unit's score is the
    log-odds that A wins."""
    total = first_as_a.num_tokens + first_as_b.num_tokens
    tokens, other_tokens = total // 2, total - total // 2  # each item carries half the work
    truncated = first_as_a.truncated or first_as_b.truncated
    error = first_as_a.error or first_as_b.error
    if error is not None or first_as_a.score is None or first_as_b.score is None:
        message = error or "a comparison has no score"
        return (ScoreResult.failed(message, tokens, truncated), ScoreResult.failed(message, other_tokens, truncated))
    d_ab, d_ba = first_as_a.score, first_as_b.score
    p = (_sigmoid(d_ab) + _sigmoid(-d_ba)) / 2  # the first wins as A, or as B (then B wins)
    q = (_sigmoid(-d_ab) + _sigmoid(d_ba)) / 2  # 1 - p, without cancellation
    score = math.log(p) - math.log(q) if p > 0 and q > 0 else math.copysign(math.inf, p - q)
    rationale = "\n\n".join(f"[{name}] {r.output.rationale}" for name, r in (("as A", first_as_a), ("as B", first_as_b))
                            if r.output is not None and r.output.rationale is not None) or None
    first = ScoreOutput(score, values={"p_win_as_a": _sigmoid(d_ab), "p_win_as_b": _sigmoid(-d_ba)},
                        rationale=rationale)
    second = ScoreOutput(-score, values={"p_win_as_a": _sigmoid(d_ba), "p_win_as_b": _sigmoid(-d_ab)},
                         rationale=rationale)
    return ScoreResult.ok(first, tokens, truncated), ScoreResult.ok(second, other_tokens, truncated)


def verdict_tokens(tokenizer: Any, prefix: str, verdicts: Sequence[str]) -> tuple[list[int], list[int]]:
    """(the prefix's ids, one id per verdict): the tokens the text prefix + verdict splits into, which must
    be the same prefix tokens for every verdict and then exactly one verdict token (`[[A` can be a single
    token, and then no verdict is readable after `[[`). A prefix's trailing space may belong to the verdict
    token (" 4" is one token in some vocabularies): the text is the same either way."""
    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    fulls = [ids(prefix + verdict) for verdict in verdicts]
    for head in dict.fromkeys((prefix, prefix.rstrip())):
        prefix_ids = ids(head)
        if all(len(f) == len(prefix_ids) + 1 and f[:-1] == prefix_ids for f in fulls):
            out = [f[-1] for f in fulls]
            if len(set(out)) != len(out):
                raise ValueError(f"verdicts {list(verdicts)} share a token ({out})")
            return prefix_ids, out
    raise ValueError(f"answer_prefix {prefix!r} + verdicts {list(verdicts)} tokenize as {fulls}, not the prefix's tokens "
                     f"{ids(prefix)} and one verdict token each; choose a prefix that ends where a verdict token "
                     "starts (this tokenizer merges them)")
