"""Scorers by kind; `build_scorer` picks one from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Scorer

if TYPE_CHECKING:
    from ..config import RMConfig

__all__ = ["Scorer", "build_scorer"]


def build_scorer(config: "RMConfig") -> Scorer:
    kind = config.model.kind
    if kind == "sequence_classifier":
        from .sequence_classifier import SequenceClassifierScorer

        return SequenceClassifierScorer.from_config(config)
    raise ValueError(f"unknown scorer kind {kind!r}")
