"""Scorers by kind; `build_scorer` picks one from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Encoded, ItemEncoder, Scorer, encode_each

if TYPE_CHECKING:
    from ..config import RMConfig

__all__ = ["Encoded", "ItemEncoder", "Scorer", "build_encoder", "build_scorer", "encode_each"]


def build_scorer(config: "RMConfig") -> Scorer:
    kind = config.model.kind
    if kind == "sequence_classifier":
        from .sequence_classifier import SequenceClassifierScorer

        return SequenceClassifierScorer.from_config(config)
    raise ValueError(f"unknown scorer kind {kind!r}")


def build_encoder(config: "RMConfig") -> ItemEncoder:
    """The scorer's `encode` without loading weights: for CPU tokenization stages (Serve ingress, Ray Data).

    It encodes exactly as `build_scorer(config).encode` does.
    """
    kind = config.model.kind
    if kind == "sequence_classifier":
        from .sequence_classifier import SequenceClassifierScorer

        return SequenceClassifierScorer.encoder_from_config(config)
    raise ValueError(f"unknown scorer kind {kind!r}")
