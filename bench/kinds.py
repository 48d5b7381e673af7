"""Rows of `bench/engine.py` for the reward-model kinds other than sequence classifiers.

Each kind is timed against its own plain loop (the checkpoint's documented usage, one conversation
at a time) on the same conversations and model object, tokenization included, in interleaved
rounds; the table reports tokens/s, the ratio to that loop, the largest difference from it, and
how the engine batched (the custom classifier's probe-chosen mode, or packing).

    custom      an ArmoRM-like remote-code checkpoint of the bench shape: its own forward, probed batching
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rmcluster.config import RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.records import conversation_items

from bench.workload import DEMO_SHAPES


@dataclass
class KindBench:
    """One kind: its plain loop and the engine on the same model object."""

    name: str
    loop: Callable[[list], list[float]]
    engine: ScoringEngine
    tokens: Callable[[list], int]
    how: str  # how the engine batched


def _chat_ids(tokenizer, conv) -> torch.Tensor:
    out = tokenizer.apply_chat_template(conv, tokenize=True, return_tensors="pt")
    return out["input_ids"] if hasattr(out, "keys") else out


def custom_classifier(root: Path, shape: str) -> KindBench:
    """ArmoRM-like checkpoint built at the bench shape; the loop is the card's `model(input_ids).score`."""
    from dataclasses import replace

    from rmcluster.demo_kinds import build_armo_like

    path = build_armo_like(root / "armo", replace(DEMO_SHAPES[shape], pad_token=True))
    engine = ScoringEngine.from_config(RMConfig(model={"kind": "custom_classifier", "name": str(path),
                                                       "trust_remote_code": True}))
    model, tokenizer = engine.scorer.model, engine.encoder.tokenizer

    @torch.inference_mode()
    def loop(convs) -> list[float]:
        return [model(_chat_ids(tokenizer, c)).score.float().item() for c in convs]

    def tokens(convs) -> int:
        return sum(_chat_ids(tokenizer, c).shape[-1] for c in convs)

    return KindBench("custom classifier (ArmoRM-like)", loop, engine, tokens,
                     f"probe chose: {engine.scorer.runner.mode}")


KINDS = {"custom": custom_classifier}


def time_kind(bench: KindBench, convs: list, rounds: int) -> dict[str, dict]:
    def engine_scores(cs) -> list[float]:
        return [r.score for r in bench.engine.score_items(conversation_items(cs))]

    methods = {"own loop": bench.loop, "engine": engine_scores}
    for fn in methods.values():
        fn(convs[:4])  # warm-up
    times: dict[str, list[float]] = {m: [] for m in methods}
    scores: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, fn in methods.items():
            start = time.perf_counter()
            scores[name] = fn(convs)
            times[name].append(time.perf_counter() - start)
    tokens = bench.tokens(convs)
    ref = scores["own loop"]
    return {name: {"seconds": statistics.median(t), "tokens_per_s": tokens / statistics.median(t),
                   "max_abs_diff_vs_loop": max(abs(a - b) for a, b in zip(scores[name], ref))}
            for name, t in times.items()}


def run_kinds(names: list[str], shape: str, convs: list, rounds: int) -> dict[str, dict]:
    report = {}
    with tempfile.TemporaryDirectory(prefix="rmcluster-bench-kinds-") as tmp:
        for name in names:
            bench = KINDS[name](Path(tmp), shape)
            rows = time_kind(bench, convs, rounds)
            loop = rows["own loop"]["tokens_per_s"]
            print(f"\nkind={bench.name}: {len(convs)} conversations, {bench.tokens(convs):,} tokens; {bench.how}")
            print(f"{'method':<12}{'tok/s':>10}{'x loop':>8}{'max|d loop|':>13}")
            for method, r in rows.items():
                print(f"{method:<12}{r['tokens_per_s']:>10,.0f}{r['tokens_per_s'] / loop:>8.2f}"
                      f"{r['max_abs_diff_vs_loop']:>13.1e}")
            report[name] = {"how": bench.how, "rows": rows}
    return report
