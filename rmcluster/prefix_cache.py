"""Keys and values of recently computed prefixes, kept between engine calls.

Shared-prefix grouping (`rmcluster.shared_prompt`) runs a prefix once per engine call. Per-sample
requests of one GRPO group that land in different calls (a trainer sends them as rollouts finish;
a Serve batch closes mid-group) would each compute the prompt again. With this cache, every
prompt a forward computes (a group's shared prompt, or a whole single sequence) leaves its
per-layer keys and values here, and a later unit whose token ids start with a cached sequence
takes that many rows from it: causal attention makes a prefix's keys and values independent of
what follows, so the scores are the same. Least recently used entries go first once the cached
tokens exceed the capacity. Off (capacity 0) unless the batching config turns it on.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .encoding import common_prefix_len
from .packing import PackUnit

# Per layer: (keys, values), each [1, KV heads, tokens, head dim] as the attention function gets them.
LayerKV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Rewrite:
    """Units for one forward, the cached keys/values their cached prompts read (by slot), and which
    computed spans to keep: (unit index, token ids) for each prompt or single sequence worth caching."""

    units: list[PackUnit]
    cached: list[LayerKV]
    keep: list[tuple[int, tuple[int, ...]]]


class PrefixCache:
    def __init__(self) -> None:
        self.capacity = 0
        self.min_shared = 16
        self._entries: OrderedDict[tuple[int, ...], LayerKV] = OrderedDict()
        self._by_head: dict[tuple[int, ...], set[tuple[int, ...]]] = {}  # first min_shared ids -> entries
        self.tokens = 0
        self.hits = 0
        self.reused_tokens = 0

    def configure(self, capacity: int, min_shared: int) -> None:
        if min_shared != self.min_shared:
            self.clear()
        self.capacity, self.min_shared = capacity, min_shared
        self._evict()

    def clear(self) -> None:
        self._entries.clear()
        self._by_head.clear()
        self.tokens = 0

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "tokens": self.tokens, "capacity": self.capacity, "hits": self.hits,
                "reused_tokens": self.reused_tokens}

    def rewrite(self, units: Sequence[PackUnit], positions: Sequence[Sequence[int]]) -> Rewrite:
        """Units whose prompt (or single sequence) starts with a cached one take those rows from the cache.

        `positions`: per tail (in unit order), the item-relative positions read; a unit whose reads fall
        inside the cached rows keeps its own (the pack has no rows there to read).
        """
        out = Rewrite([], [], [])
        first_tail = 0
        for unit in units:
            n_tails = len(unit.tails)
            reads = positions[first_tail : first_tail + n_tails]
            first_tail += n_tails
            probe = tuple(unit.prompt) if unit.prompt else tuple(unit.tails[0])
            limit = len(probe) if unit.prompt else len(probe) - 1  # every tail keeps at least one token
            hit = self._longest(probe, limit) if self.capacity and not unit.cached else None
            if hit is not None and all(min(p, default=hit[1]) >= hit[1] for p in reads):
                key, shared = hit
                self._entries.move_to_end(key)
                self.hits += 1
                self.reused_tokens += shared * n_tails
                seqs = [list(unit.prompt) + list(t) for t in unit.tails]  # only on a hit: this runs per call
                out.units.append(PackUnit(key[:shared], [s[shared:] for s in seqs], unit.members, cached_slot=len(
                    out.cached)))
                out.cached.append([(k[:, :, :shared], v[:, :, :shared]) for k, v in self._entries[key]])
                continue
            out.units.append(unit)
            if self.capacity and not unit.cached and self.min_shared <= len(probe) <= self.capacity:
                out.keep.append((len(out.units) - 1, probe))
        return out

    def store(self, ids: tuple[int, ...], kv: LayerKV) -> None:
        if ids in self._entries:
            self._entries.move_to_end(ids)
            return
        self._entries[ids] = kv
        self._by_head.setdefault(ids[: self.min_shared], set()).add(ids)
        self.tokens += len(ids)
        self._evict()

    def _longest(self, ids: Sequence[int], limit: int) -> Optional[tuple[tuple[int, ...], int]]:
        """The cached sequence sharing the longest prefix with `ids` (at most `limit`, at least min_shared)."""
        if limit < self.min_shared:
            return None
        best: Optional[tuple[tuple[int, ...], int]] = None
        for key in self._by_head.get(tuple(ids[: self.min_shared]), ()):
            shared = min(common_prefix_len(key, ids), limit)
            if shared >= self.min_shared and (best is None or shared > best[1]):
                best = (key, shared)
        return best

    def _evict(self) -> None:
        while self.tokens > self.capacity and self._entries:
            ids, _ = self._entries.popitem(last=False)
            self.tokens -= len(ids)
            head = self._by_head[ids[: self.min_shared]]
            head.discard(ids)
            if not head:
                del self._by_head[ids[: self.min_shared]]
