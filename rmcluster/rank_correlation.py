"""Spearman's rho and Kendall's tau-b in numpy (scipy is not a dependency), ties handled as scipy does.

Spearman: Pearson's r of the average ranks. Kendall tau-b: (concordant - discordant) over the
geometric mean of the pairs not tied in x and not tied in y. Discordant pairs are the inversions of y
once the points are sorted by (x, y), counted level by level of a binary split of the positions (every
pair of positions is split at exactly one level), so it takes O(n log^2 n) in numpy, not O(n^2).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of each tie group's last member
    mean_rank = ends - (counts - 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    """Spearman's rho; None when fewer than 2 points or a side is constant."""
    if len(x) < 2:
        return None
    rx, ry = average_ranks(np.asarray(x, dtype=np.float64)), average_ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else None


def _tied_pairs(values: np.ndarray) -> int:
    _, counts = np.unique(values, return_counts=True, axis=0)
    return int((counts * (counts - 1) // 2).sum())


def _inversions(y: np.ndarray) -> int:
    """Pairs i < j with y[i] > y[j] (y integer ranks 0..n-1 or with repeats)."""
    n = len(y)
    span = int(y.max()) + 1 if n else 1
    pos = np.arange(n)
    total = 0
    width = 1
    while width < n:
        block = pos // (2 * width)  # sibling blocks [2kw, 2kw+w) and [2kw+w, 2kw+2w) make pair k
        left = (pos % (2 * width)) < width
        keys = np.sort(block[left] * span + y[left])  # each pair's left values, in its own key range
        rb, ry = block[~left], y[~left]
        # left values of the same pair greater than each right value
        total += int((np.searchsorted(keys, (rb + 1) * span, "left") - np.searchsorted(keys, rb * span + ry, "right")).sum())
        width *= 2
    return total


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    """Kendall's tau-b; None when fewer than 2 points or a side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2:
        return None
    order = np.lexsort((y, x))  # by x, then y: pairs tied in x are never counted as inversions
    y_rank = np.unique(y, return_inverse=True)[1].reshape(-1)[order]
    discordant = _inversions(y_rank)
    pairs = n * (n - 1) // 2
    tied_x, tied_y = _tied_pairs(x), _tied_pairs(y)
    tied_xy = _tied_pairs(np.stack([x, y], axis=1))
    concordant = pairs - discordant - tied_x - tied_y + tied_xy
    denom = math.sqrt(float(pairs - tied_x) * float(pairs - tied_y))
    return (concordant - discordant) / denom if denom > 0 else None
