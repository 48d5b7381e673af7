"""Batch planning: sort by length, then fill batches under a token budget and an item cap.

Pure functions of the lengths (no model, no torch), so the same plan serves the engine, tests and
benchmarks. Cost is counted as padded tokens: rows x the longest row.
"""

from __future__ import annotations

from typing import Sequence


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Indices into `lengths`, grouped into batches, longest first.

    Longest first means an out-of-memory batch shows up at the start, not after an hour. An item
    longer than the budget runs alone rather than being refused (max_length bounds items).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        if current and (len(current) >= max_batch_size or (len(current) + 1) * width > max_batch_tokens):
            batches.append(current)
            current = []
        if not current:
            width = lengths[i]  # sorted descending: the first item is the widest
        current.append(i)
    if current:
        batches.append(current)
    return batches


def padding_efficiency(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Real tokens / computed (padded) tokens over a plan."""
    real = sum(lengths)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return real / padded if padded else 1.0
