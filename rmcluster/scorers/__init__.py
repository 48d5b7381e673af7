"""Scorers by kind: a registry of import paths, so importing it loads no model code (and no torch).

Each kind names its scorer (torch side, loads weights) and its encoder (weight-free, runs on any CPU
stage). Adding a kind is one module and one line here, plus its settings in `rmcluster.config`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import Scorer

if TYPE_CHECKING:
    from ..config import RMConfig
    from ..encoding import Encoder

__all__ = ["KINDS", "Scorer", "build_encoder", "build_scorer"]

# kind -> ("module:Scorer class", "module:Encoder class"); both classes have `from_config`.
KINDS: dict[str, tuple[str, str]] = {
    "sequence_classifier": ("rmcluster.scorers.sequence_classifier:SequenceClassifierScorer",
                            "rmcluster.templating:ChatEncoder"),
}


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _kind(config: "RMConfig") -> tuple[str, str]:
    kind = config.model.kind
    if kind not in KINDS:
        raise ValueError(f"unknown scorer kind {kind!r}; known: {sorted(KINDS)}")
    return KINDS[kind]


def build_encoder(config: "RMConfig") -> "Encoder":
    """The kind's encoder without loading weights: for CPU tokenization stages (Serve ingress, Ray Data).

    It encodes exactly as `build_scorer(config).encoder` does.
    """
    encoder: Encoder = _load(_kind(config)[1]).from_config(config)
    return encoder


def build_scorer(config: "RMConfig") -> Scorer:
    scorer: Scorer = _load(_kind(config)[0]).from_config(config, build_encoder(config))
    return scorer
