"""Shared prefixes: items of one engine call whose token ids start alike compute that prefix once.

Grouping reads token ids only, never records or templates, so it serves best-of-N records, GRPO
groups sent one templated text or token-id list per request, judge prompts and a system prompt
common to many records alike. Items are sorted by their ids, so items with long common prefixes
become neighbours, and neighbours are grouped greedily while the group's common prefix stays at
least `min_shared` tokens and widening the group saves more than it costs. A group becomes one
`PackUnit`: the prefix, then each item's tail. Causal attention makes the prefix's hidden states
independent of what follows, so each tail scores exactly as its whole sequence does. Every tail
keeps at least its last token, so an item that is a full prefix of another shares all but that.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from .encoding import EncodedItem, common_prefix_len
from .packing import PackUnit


def build_units(encoded: Sequence[EncodedItem], indices: Iterable[int], share: bool, max_group_tokens: int,
                max_items: int, min_shared: int) -> list[PackUnit]:
    """Units for the items `indices` of `encoded`: shared-prefix groups where allowed, else single sequences.

    A group is cut into several units, each with the prefix, only where one unit would exceed
    `max_group_tokens` or `max_items` items: every cut recomputes the whole prefix.
    """
    indices = list(indices)
    if not share:
        return [PackUnit.single(encoded[i].input_ids, i) for i in indices]
    units: list[PackUnit] = []
    for members, shared in prefix_groups([encoded[i].input_ids for i in indices], min_shared):
        chosen_all = [indices[m] for m in members]
        prefix = encoded[chosen_all[0]].input_ids[:shared]
        tails = [encoded[i].num_tokens - shared for i in chosen_all]
        for chunk in _chunks(tails, max_group_tokens - shared, max_items):
            chosen = [chosen_all[c] for c in chunk]
            if len(chosen) == 1:  # nothing to share
                units.append(PackUnit.single(encoded[chosen[0]].input_ids, chosen[0]))
            else:
                units.append(PackUnit(prefix, [encoded[i].input_ids[shared:] for i in chosen], chosen))
    return units


def prefix_groups(seqs: Sequence[list[int]], min_shared: int) -> list[tuple[list[int], int]]:
    """(members, shared prefix length) over indices into `seqs`; every index in exactly one group.

    In sorted order the common prefix of a run of neighbours is the least of their pairwise ones, so
    one pass suffices. A neighbour joins while the prefix stays >= `min_shared` and the tokens saved
    ((members - 1) x prefix) do not shrink; else it starts a group of its own.
    """
    order = sorted(range(len(seqs)), key=seqs.__getitem__)
    groups: list[tuple[list[int], int]] = []
    for prev, i in zip([None, *order], order):
        if prev is not None:
            members, shared = groups[-1]
            # Each tail keeps its last token: an item never shares all of itself.
            common = min(common_prefix_len(seqs[prev], seqs[i]), len(seqs[prev]) - 1, len(seqs[i]) - 1)
            widened = common if len(members) == 1 else min(shared, common)
            if widened >= min_shared and len(members) * widened >= (len(members) - 1) * shared:
                groups[-1] = (members + [i], widened)
                continue
        groups.append(([i], 0))
    return groups


def computed_tokens(seqs: Sequence[list[int]], min_shared: Optional[int]) -> int:
    """Tokens an engine call over `seqs` computes: each shared prefix once (`min_shared` None: no sharing).

    Cheap (a sort and neighbour comparisons), so a Serve batch queue can size batches by it: a GRPO
    group's samples then arrive in one engine call, where their prompt runs once.
    """
    total = sum(len(s) for s in seqs)
    if min_shared is None or len(seqs) < 2:
        return total
    return total - sum((len(members) - 1) * shared for members, shared in prefix_groups(seqs, min_shared))


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
    """Prefix tokens served from a shared computation instead of recomputed: the dense work saved."""
    return sum(u.real_tokens - u.num_tokens for u in units)
