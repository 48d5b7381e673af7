"""A small RewardBench-style preference set: RewardBench subset names, a `category` column, a tie,
a pair with no subset, an over-length pair (an error row) and a broken line."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.conversations import sentence

MAX_LENGTH = 128  # the over-length pair's chosen response is longer
SUBSETS = {"alpacaeval-easy": 4, "mt-bench-easy": 3, "llmbar-natural": 3, "math-prm": 3, "hep-go": 3, "hep-rust": 2}
TIE_ID, NO_SUBSET_ID, LONG_ID, CATEGORY_ID = "tie", "plain", "long", "cat-0"


def eval_records() -> list[dict]:
    rng = random.Random(16)
    records = []
    for subset, n in SUBSETS.items():
        for i in range(n):
            records.append({"id": f"{subset}-{i}", "prompt": sentence(rng, rng.randint(3, 12)),
                            "chosen": sentence(rng, rng.randint(2, 25)), "rejected": sentence(rng, rng.randint(2, 25)),
                            "subset": subset, "chosen_model": "x", "rejected_model": "y"})
    records.append({"id": TIE_ID, "prompt": "Say it twice.", "chosen": "the same answer", "rejected": "the same answer",
                    "subset": "alpacaeval-easy"})
    records += [{"id": f"cat-{i}", "prompt": sentence(rng, 6), "chosen": sentence(rng, 9), "rejected": sentence(rng, 4),
                 "category": "custom"} for i in range(3)]
    records.append({"id": NO_SUBSET_ID, "prompt": "hi", "chosen": "hello there", "rejected": "go away"})
    records.append({"id": LONG_ID, "prompt": "long", "chosen": "apple " * 200, "rejected": "short", "subset": "hep-go"})
    return records


def write_eval_input(path: Path) -> Path:
    lines = [json.dumps(r) for r in eval_records()]
    lines.insert(5, '{"id": "broken", "prompt": ')  # invalid JSON: one error row, no pair
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
