"""Batch planning: sort by length, then fill batches under a token budget and an item cap.

Pure functions of the lengths (no model, no torch), so the same plan serves the engine, tests and
benchmarks. Padded batches cost rows x the longest row; packed batches cost their real tokens.
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


def plan_packs(costs: Sequence[int], sizes: Sequence[int], max_tokens: int, max_items: int,
               open_packs: int = 8) -> list[list[int]]:
    """Indices into `costs` (tokens a unit computes; `sizes`: items it scores), grouped into packs.

    Largest first (an out-of-memory pack shows up early), each unit going to the first of the last
    `open_packs` packs with room, which keeps packs nearly full at linear cost. A unit over the budget
    runs alone.
    """
    order = sorted(range(len(costs)), key=lambda i: costs[i], reverse=True)
    packs: list[list[int]] = []
    room: list[int] = []
    items: list[int] = []
    for i in order:
        for k in range(max(0, len(packs) - open_packs), len(packs)):
            if costs[i] <= room[k] and items[k] + sizes[i] <= max_items:
                packs[k].append(i)
                room[k] -= costs[i]
                items[k] += sizes[i]
                break
        else:
            packs.append([i])
            room.append(max_tokens - costs[i])
            items.append(sizes[i])
    return packs
