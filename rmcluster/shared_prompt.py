"""Shared-prompt reuse: the responses of a best-of-N or preference-pair record run their prompt once.

The encoder records, per item, how many leading tokens are the prompt's own tokens, and only where
the templated prompt is an exact prefix of the full templated conversation
(`ChatEncoder.shared_prompt_tokens`). Items whose prompt tokens are identical then form one
`PackUnit`: the prompt, then each response's tail. Causal attention makes the prompt's hidden states
independent of what follows, so each tail scores exactly as its full conversation does.

Grouping is by token content, not by record id, so it needs nothing but the `EncodedItem`s, which
is what crosses process boundaries (Serve ingress, Ray Data CPU stage).
"""

from __future__ import annotations

from typing import Sequence

from .packing import PackUnit
from .encoding import EncodedItem


def build_units(
    encoded: Sequence[EncodedItem], indices: Sequence[int], share: bool, max_group_tokens: int, max_items: int
) -> list[PackUnit]:
    """Units for the items `indices` of `encoded`: shared-prompt groups where allowed, else single sequences.

    A group is cut into several units, each with the prompt, only where one unit would exceed
    `max_group_tokens` or `max_items` items: every cut recomputes the whole prompt.
    """
    units: list[PackUnit] = []
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in indices:
        e = encoded[i]
        if share and 0 < e.prompt_tokens < e.num_tokens:
            groups.setdefault(tuple(e.input_ids[: e.prompt_tokens]), []).append(i)
        else:
            units.append(PackUnit.single(e.input_ids, i))
    for prompt, members in groups.items():
        tails = [encoded[i].num_tokens - len(prompt) for i in members]
        for chunk in _chunks(tails, max_group_tokens - len(prompt), max_items):
            chosen = [members[c] for c in chunk]
            if len(chosen) == 1:  # nothing to share
                units.append(PackUnit.single(encoded[chosen[0]].input_ids, chosen[0]))
            else:
                units.append(PackUnit(prompt, [encoded[i].input_ids[len(prompt):] for i in chosen], chosen))
    return units


def _chunks(tail_lens: Sequence[int], max_tokens: int, max_items: int) -> list[list[int]]:
    chunks: list[list[int]] = []
    current: list[int] = []
    used = 0
    for k, n in enumerate(tail_lens):
        if current and (len(current) >= max_items or used + n > max_tokens):
            chunks.append(current)
            current, used = [], 0
        current.append(k)
        used += n
    if current:
        chunks.append(current)
    return chunks


def reused_tokens(units: Sequence[PackUnit]) -> int:
    """Prompt tokens served from a shared prompt instead of recomputed: the dense work saved."""
    return sum(u.real_tokens - u.num_tokens for u in units)
