"""Deterministic random conversations for tests: varied lengths, roles and turn counts."""

from __future__ import annotations

import random

WORDS = (
    "alpha beta gamma delta apple river stone cloud seven twelve market friend answer question "
    "because therefore however quickly slowly green blue small large count number sum total step "
    "the a of to and is in that it for on with as was by this be at or from have not are"
).split()


def sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + ("." if n_words else "")


def random_conversation(rng: random.Random, total_words: int) -> list[dict]:
    """A chat of 1-4 turns whose content has about `total_words` words (0 allowed)."""
    turns = rng.choice([1, 1, 2, 2, 3, 4])
    msgs = []
    if rng.random() < 0.2:
        msgs.append({"role": "system", "content": sentence(rng, rng.randint(0, 10))})
    sizes = [total_words // (2 * turns)] * (2 * turns)
    sizes[-1] += total_words - sum(sizes)
    for i, n in enumerate(sizes):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": sentence(rng, n)})
    return msgs


def varied_conversations(n: int, seed: int = 0, max_words: int = 850) -> list[list[dict]]:
    """Lengths spread from a dozen tokens (template only) to about 1,000, long-tailed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.random()
        words = rng.randint(0, 20) if r < 0.3 else rng.randint(20, 200) if r < 0.75 else rng.randint(200, max_words)
        out.append(random_conversation(rng, words))
    return out
