"""Padding-free packs: several sequences in one row, each attending only to its own tokens.

A pack is a list of units. A unit is either one whole sequence, or a shared prompt followed by the
tails (responses) that continue it: the prompt's tokens appear once, and each tail attends to the
prompt and then causally to itself. Position ids restart at 0 for every unit and continue from the
prompt's length in each tail, so every token gets the position it has in its own full conversation.
The score head reads each tail's last token.

`PackLayout` turns units into the row the model sees (ids, position ids) and the segment table
that `rmcluster.segment_attention` follows.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch


@dataclass(frozen=True)
class PackUnit:
    """One sequence (`prompt` empty), or a shared prompt and the tails that continue it."""

    prompt: Sequence[int]
    tails: Sequence[Sequence[int]]
    members: Sequence[int]  # the caller's item index for each tail
    # >= 0: the prompt's keys and values are slot N of the forward's prefix-cache entries, not rows of the pack.
    cached_slot: int = -1

    @property
    def cached(self) -> bool:
        return self.cached_slot >= 0

    @property
    def num_tokens(self) -> int:
        """Tokens computed for this unit: the prompt once (none if cached), plus every tail."""
        return (0 if self.cached else len(self.prompt)) + sum(len(t) for t in self.tails)

    @property
    def real_tokens(self) -> int:
        """Tokens of the full sequences this unit scores (what per-sequence scoring computes)."""
        return len(self.prompt) * len(self.tails) + sum(len(t) for t in self.tails)

    @classmethod
    def single(cls, ids: Sequence[int], member: int) -> "PackUnit":
        return cls((), (ids,), (member,))

    def split(self) -> tuple["PackUnit", "PackUnit"]:
        """Two units with half the tails each (each keeps the prompt); for isolating a failing item."""
        h = len(self.tails) // 2
        return (PackUnit(self.prompt, self.tails[:h], self.members[:h], self.cached_slot),
                PackUnit(self.prompt, self.tails[h:], self.members[h:], self.cached_slot))


@dataclass(frozen=True)
class Segment:
    """Query rows [start, end) of the pack, attending to rows [prefix_start, prefix_end) (a shared prompt;
    empty for a whole sequence) and then causally to themselves. With `cache_slot` >= 0 the prefix rows
    are those of that prefix-cache entry, not of the pack."""

    start: int
    end: int
    prefix_start: int = 0
    prefix_end: int = 0
    cache_slot: int = -1

    @property
    def prefix_len(self) -> int:
        return self.prefix_end - self.prefix_start


class PackLayout:
    """The packed row for a list of units, and the per-segment attention plan."""

    def __init__(self, units: Sequence[PackUnit], device: torch.device | str = "cpu"):
        ids: list[int] = []
        positions: list[int] = []
        segments: list[Segment] = []
        last: list[int] = []
        self._tails: list[tuple[int, int, int]] = []  # per tail: (prompt start or -1 if cached, length, tail start)
        # Per unit: the rows of its computed prompt, or of its single sequence (None for a cached prompt).
        self.unit_rows: list[Optional[tuple[int, int]]] = []
        for unit in units:
            p0, p = len(ids), len(unit.prompt)
            if p and not unit.cached:
                ids.extend(unit.prompt)
                positions.extend(range(p))
                segments.append(Segment(p0, p0 + p))
            self.unit_rows.append(None if unit.cached else (p0, p0 + (p or len(unit.tails[0]))))
            for tail in unit.tails:
                if not tail:
                    raise ValueError("a packed tail needs at least one token (its last token is scored)")
                start = len(ids)
                ids.extend(tail)
                positions.extend(range(p, p + len(tail)))
                segments.append(Segment(start, len(ids), 0, p, unit.cached_slot) if unit.cached
                                else Segment(start, len(ids), p0, p0 + p))
                last.append(len(ids) - 1)
                self._tails.append((-1 if unit.cached else p0, p, start))
        self.device = torch.device(device)
        self.segments = segments
        self.num_tokens = len(ids)
        self.input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        self.position_ids = torch.tensor([positions], dtype=torch.long, device=self.device)
        self.last_positions = torch.tensor(last, dtype=torch.long, device=self.device)
        self.has_prefix = any(s.prefix_len for s in segments)
        # Rows each prefix-cache slot's segments read (slots are numbered 0.. in the order units took them).
        slot_rows: dict[int, int] = {}
        for s in segments:
            if s.cache_slot >= 0:
                slot_rows[s.cache_slot] = max(slot_rows.get(s.cache_slot, 0), s.prefix_end)
        self.cached_rows = [slot_rows[slot] for slot in sorted(slot_rows)]
        self.max_kv_len = max((s.prefix_len + s.end - s.start for s in segments), default=0)
        # Built on first use per device (layers of a model split over GPUs live on several), shared by layers.
        self._masks: dict[tuple[Any, ...], torch.Tensor] = {}
        self._varlen: dict[torch.device, tuple[Any, ...]] = {}

    def row_of(self, tail: int, position: int) -> int:
        """The pack row holding token `position` of tail `tail`'s full sequence (its prompt, then the tail)."""
        prompt_start, prompt_len, tail_start = self._tails[tail]
        if position >= prompt_len:
            return tail_start + position - prompt_len
        if prompt_start < 0:
            raise ValueError(f"position {position} of tail {tail} is in a cached prompt: no row holds it")
        return prompt_start + position

    def query_starts(self, rows: Sequence[int]) -> list[Optional[int]]:
        """Per segment, the first of the sorted pack `rows` inside it, or None where none is."""
        starts: list[Optional[int]] = []
        for s in self.segments:
            k = bisect.bisect_left(rows, s.start)
            starts.append(rows[k] if k < len(rows) and rows[k] < s.end else None)
        return starts

    def causal_mask(self, q_len: int, kv_len: int, window: Optional[int], device: torch.device) -> torch.Tensor:
        """Boolean [q_len, kv_len] mask, causal aligned to the bottom right (the queries are the last
        q_len keys), optionally limited to the last `window` keys."""
        key = (q_len, kv_len, window, device)
        mask = self._masks.get(key)
        if mask is None:
            q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
            k_pos = torch.arange(kv_len, device=device)[None, :]
            mask = k_pos <= q_pos
            if window is not None:
                mask &= k_pos > q_pos - window
            self._masks[key] = mask
        return mask

    def varlen_args(self, device: torch.device) -> tuple[Optional[torch.Tensor], torch.Tensor, torch.Tensor, int, int]:
        """(kv_index, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) for a varlen kernel.

        Queries are the pack's rows in order. Keys are gathered per segment as prefix rows then own
        rows (`kv_index`, None when no segment has a prefix), so a bottom-right-aligned causal kernel
        (flash-attn >= 2.1) computes exactly the segment attention. `kv_index` reads the pack's rows
        followed by the prefix-cache slots' rows (`cached_rows` of each, in slot order).
        """
        if device not in self._varlen:
            slot_start = [self.num_tokens]
            for n in self.cached_rows:
                slot_start.append(slot_start[-1] + n)
            cu_q, cu_k, kv_rows = [0], [0], list[int]()
            for s in self.segments:
                cu_q.append(s.end)
                cu_k.append(cu_k[-1] + s.prefix_len + s.end - s.start)
                if self.has_prefix:
                    first = slot_start[s.cache_slot] if s.cache_slot >= 0 else 0
                    kv_rows.extend(range(first + s.prefix_start, first + s.prefix_end))
                    kv_rows.extend(range(s.start, s.end))
            index = torch.tensor(kv_rows, dtype=torch.long, device=device) if self.has_prefix else None
            max_q = max((s.end - s.start for s in self.segments), default=0)
            cu_seqlens_q = torch.tensor(cu_q, dtype=torch.int32, device=device)
            cu_seqlens_k = torch.tensor(cu_k, dtype=torch.int32, device=device)
            self._varlen[device] = (index, cu_seqlens_q, cu_seqlens_k, max_q, self.max_kv_len)
        return self._varlen[device]
