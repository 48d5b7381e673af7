"""What the benchmarks score: demo-tokenizer model shapes and long-tailed random texts.

Words come from the demo tokenizer's training vocabulary, so one word is about one token.
"""

from __future__ import annotations

import math
import random

from rmcluster.demo_model import _WORDS, DemoModelSpec

DEMO_SHAPES = {
    "demo": DemoModelSpec(),
    # Big enough on CPU that compute, not Python overhead, dominates a forward pass.
    "small": DemoModelSpec(hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8, num_kv_heads=4),
}


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def long_tail(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    """A log-normal length around `median`, clipped to [lo, hi]."""
    return int(min(hi, max(lo, rng.lognormvariate(math.log(median), sigma))))
