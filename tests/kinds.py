"""Mixed record corpora for the reward-model kinds, each record with the conversations its items score."""

from __future__ import annotations

import random

from tests.conversations import random_conversation, sentence

Conversation = list[dict]


def mixed_records(n: int, seed: int = 0, max_words: int = 300) -> list[tuple[dict, list[Conversation]]]:
    """(record, one conversation per item) in random shapes: chats, pairs, best-of-N, templated-free text."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.random()
        prompt = sentence(rng, rng.randint(2, 40))
        if r < 0.4:
            conv = random_conversation(rng, rng.randint(0, max_words))
            out.append(({"id": f"c{i}", "messages": conv}, [conv]))
        elif r < 0.7:
            a, b = sentence(rng, rng.randint(1, max_words // 2)), sentence(rng, rng.randint(1, 60))
            user = [{"role": "user", "content": prompt}]
            out.append(({"id": f"p{i}", "prompt": prompt, "chosen": a, "rejected": b},
                        [user + [{"role": "assistant", "content": x}] for x in (a, b)]))
        else:
            responses = [sentence(rng, rng.randint(1, 80)) for _ in range(rng.randint(1, 5))]
            user = [{"role": "user", "content": prompt}]
            out.append(({"id": f"g{i}", "prompt": prompt, "responses": responses},
                        [user + [{"role": "assistant", "content": x}] for x in responses]))
    return out


def steps_records(n: int, seed: int = 0, separator: str = "<extra_0>") -> list[tuple[dict, list[tuple[str, list[str]]]]]:
    """Process-reward records: (record, per item its (prompt, steps)); steps as lists, and as messages
    whose content already holds the separator."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = sentence(rng, rng.randint(2, 30))
        chains = [[sentence(rng, rng.randint(1, 25)) for _ in range(rng.randint(1, 6))] for _ in range(3)]
        r = rng.random()
        if r < 0.35:
            out.append(({"id": f"s{i}", "prompt": prompt, "steps": chains[0]}, [(prompt, chains[0])]))
        elif r < 0.6:
            out.append(({"id": f"p{i}", "prompt": prompt, "chosen": chains[0], "rejected": chains[1]},
                        [(prompt, chains[0]), (prompt, chains[1])]))
        elif r < 0.85:
            k = rng.randint(1, 3)
            out.append(({"id": f"g{i}", "prompt": prompt, "responses": chains[:k]}, [(prompt, c) for c in chains[:k]]))
        else:
            content = "".join(step + separator for step in chains[0])
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": content}]
            out.append(({"id": f"m{i}", "messages": messages}, [(prompt, chains[0])]))
    return out
