"""Rows of `bench/engine.py` for the reward-model kinds other than sequence classifiers.

Each kind is timed against its own plain loop (the checkpoint's documented usage, one item at a time)
on the same records and model objects, tokenization included, in interleaved rounds (medians); the
table reports items/s, the ratio to that loop, the largest score difference from it, and how the
engine batched.

    custom    ArmoRM-like remote-code checkpoint (realistic mix as chats): own forward, probed batching
    judge     one-pass pointwise judge (pointwise_yes_no) on best-of-8 records
    pairwise  pairwise judge (pairwise_mtbench): each response against the first, both orders
    dpo       DPO policy + reference on best-of-8 records: the loop runs both models per response
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from rmcluster.config import RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.pipeline import score_records

from bench.workload import DEMO_SHAPES


@dataclass
class KindBench:
    """One kind: its plain loop and the engine, scoring the same records."""

    name: str
    loop: Callable[[list[dict]], list[float]]
    engine: ScoringEngine
    how: str  # how the engine batched
    records: str  # which records: "chats" (realistic mix) or "best-of-8"


def _ids(tokenizer, messages, generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _engine(model: dict, batching: dict | None = None) -> ScoringEngine:
    return ScoringEngine.from_config(RMConfig(model=model, batching=batching or {}))


def custom_classifier(root: Path, shape: str) -> KindBench:
    """ArmoRM-like checkpoint at the bench shape; the loop is the card's `model(input_ids).score`."""
    from rmcluster.demo_kinds import build_armo_like

    path = build_armo_like(root / "armo", replace(DEMO_SHAPES[shape], pad_token=True))
    engine = _engine({"kind": "custom_classifier", "name": str(path), "trust_remote_code": True})
    model, tokenizer = engine.scorer.model, engine.encoder.tokenizer

    @torch.inference_mode()
    def loop(records) -> list[float]:
        return [model(torch.tensor([_ids(tokenizer, r["messages"])])).score.float().item() for r in records]

    return KindBench("custom classifier (ArmoRM-like)", loop, engine, f"probe chose: {engine.scorer.runner.mode}",
                     "chats")


def _causal_lm(root: Path, shape: str, seed: int) -> Path:
    from rmcluster.demo_kinds import build_causal_lm

    return build_causal_lm(root / f"lm-{seed}", DEMO_SHAPES[shape], seed)


def _responses(record) -> list[list[dict]]:
    user = [{"role": "user", "content": record["prompt"]}]
    return [user + [{"role": "assistant", "content": r}] for r in record["responses"]]


def judge(root: Path, shape: str) -> KindBench:
    """Pointwise Yes/No judge; the loop renders the prompt, templates it and reads two logits per response."""
    from rmcluster.judging import YES_NO_USER

    engine = _engine({"kind": "generative_judge", "name": str(_causal_lm(root, shape, 0))})
    model, enc = engine.scorer.model, engine.encoder
    yes, no = enc.verdict_ids
    import jinja2

    template = jinja2.Template(YES_NO_USER)

    @torch.inference_mode()
    def loop(records) -> list[float]:
        out = []
        for record in records:
            for response in record["responses"]:
                user = template.render(prompt=record["prompt"], response=response)
                ids = _ids(enc.tokenizer, [{"role": "user", "content": user}], True)
                logits = model(torch.tensor([ids])).logits[0, -1]
                out.append((logits[yes] - logits[no]).item())
        return out

    return KindBench("one-pass pointwise judge", loop, engine, f"packing {'on' if engine.packing else 'off'}",
                     "best-of-8")


def pairwise(root: Path, shape: str) -> KindBench:
    """MT-Bench pairwise judge, both orders; best-of-N compares each response with the first."""
    import math

    import jinja2

    from rmcluster.judging import MTBENCH_SYSTEM, MTBENCH_USER

    engine = _engine({"kind": "generative_judge", "name": str(_causal_lm(root, shape, 0)),
                      "template": "pairwise_mtbench"})
    model, enc = engine.scorer.model, engine.encoder
    a_id, b_id = enc.verdict_ids
    template = jinja2.Template(MTBENCH_USER)

    @torch.inference_mode()
    def order(prompt, first, second) -> float:
        messages = [{"role": "system", "content": MTBENCH_SYSTEM},
                    {"role": "user", "content": template.render(prompt=prompt, response_a=first, response_b=second)}]
        logits = model(torch.tensor([_ids(enc.tokenizer, messages, True) + enc.prefix_ids])).logits[0, -1]
        return (logits[a_id] - logits[b_id]).item()

    def loop(records) -> list[float]:
        out = []
        for record in records:
            base, *others = record["responses"]
            out.append(0.0)
            for response in others:
                p_a = 1 / (1 + math.exp(-order(record["prompt"], response, base)))
                p_b = 1 / (1 + math.exp(order(record["prompt"], base, response)))
                p = (p_a + p_b) / 2
                out.append(math.log(p / (1 - p)))
        return out

    return KindBench("pairwise judge (2 orders)", loop, engine, f"packing {'on' if engine.packing else 'off'}",
                     "best-of-8")


def dpo(root: Path, shape: str) -> KindBench:
    """DPO: the loop runs policy and reference per response, log-softmax gathered over the response tokens."""
    policy_path, reference_path = _causal_lm(root, shape, 0), _causal_lm(root, shape, 1)
    engine = _engine({"kind": "dpo", "name": str(policy_path), "reference": str(reference_path)},
                     {"packing": "on", "shared_prompt": "on"})
    policy, reference = engine.scorer.policy.model, engine.scorer.reference.model
    tokenizer = engine.encoder.tokenizer

    @torch.inference_mode()
    def logp(model, ids: list[int], start: int) -> float:
        logps = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        return sum(logps[t - 1, ids[t]].item() for t in range(start, len(ids)))

    def loop(records) -> list[float]:
        out = []
        for record in records:
            for conv in _responses(record):
                ids, start = _ids(tokenizer, conv), len(_ids(tokenizer, conv[:-1], True))
                out.append(logp(policy, ids, start) - logp(reference, ids, start))
        return out

    return KindBench("DPO, policy + reference", loop, engine, "packing on, shared prompts on", "best-of-8")


KINDS = {"custom": custom_classifier, "judge": judge, "pairwise": pairwise, "dpo": dpo}


def time_kind(bench: KindBench, records: list[dict], rounds: int) -> dict[str, dict]:
    def engine_scores(recs) -> list[float]:
        return [row["score"] for row in score_records(bench.engine, recs)]

    methods = {"own loop": bench.loop, "engine": engine_scores}
    for fn in methods.values():
        fn(records[:2])  # warm-up
    times: dict[str, list[float]] = {m: [] for m in methods}
    scores: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, fn in methods.items():  # interleaved, so drift hits both alike
            start = time.perf_counter()
            scores[name] = fn(records)
            times[name].append(time.perf_counter() - start)
    ref = scores["own loop"]
    items = len(ref)
    return {name: {"seconds": statistics.median(t), "items_per_s": items / statistics.median(t),
                   "max_abs_diff_vs_loop": max(abs(a - b) for a, b in zip(scores[name], ref))}
            for name, t in times.items()}


def run_kinds(names: list[str], shape: str, chats: list, best_of_8: list, rounds: int) -> dict[str, dict]:
    """`chats`: conversations (the realistic mix); `best_of_8`: conversations, 8 per prompt in order."""
    records = {
        "chats": [{"id": str(i), "messages": c} for i, c in enumerate(chats)],
        "best-of-8": [{"id": str(i), "prompt": best_of_8[i][0]["content"],
                       "responses": [c[1]["content"] for c in best_of_8[i:i + 8]]} for i in range(0, len(best_of_8), 8)],
    }
    report = {}
    with tempfile.TemporaryDirectory(prefix="rmcluster-bench-kinds-") as tmp:
        for name in names:
            bench = KINDS[name](Path(tmp), shape)
            recs = records[bench.records]
            rows = time_kind(bench, recs, rounds)
            loop = rows["own loop"]["items_per_s"]
            items = sum(len(r.get("responses", [0])) for r in recs)
            print(f"\nkind={bench.name}: {len(recs)} records ({bench.records}), {items} items; {bench.how}")
            print(f"{'method':<12}{'items/s':>10}{'x loop':>8}{'max|d loop|':>13}")
            for method, r in rows.items():
                print(f"{method:<12}{r['items_per_s']:>10,.1f}{r['items_per_s'] / loop:>8.2f}"
                      f"{r['max_abs_diff_vs_loop']:>13.1e}")
            report[name] = {"how": bench.how, "records": bench.records, "rows": rows}
    return report
