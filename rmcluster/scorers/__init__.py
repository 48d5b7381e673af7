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

__all__ = ["KINDS", "Scorer", "build_encoder", "build_scorer", "check_loadable"]

# kind -> ("module:scorer factory", "module:encoder factory"): `(config, encoder) -> Scorer` and
# `(config) -> Encoder`, imported only when a kind is built.
KINDS: dict[str, tuple[str, str]] = {
    "sequence_classifier": ("rmcluster.scorers.sequence_classifier:SequenceClassifierScorer.from_config",
                            "rmcluster.templating:ChatEncoder.from_config"),
    "custom_classifier": ("rmcluster.scorers.custom_classifier:CustomClassifierScorer.from_config",
                          "rmcluster.templating:ChatEncoder.from_config"),
    "process_reward": ("rmcluster.scorers.process_reward:build", "rmcluster.templating:ChatEncoder.from_config"),
    "generative_judge": ("rmcluster.scorers.generative_judge:GenerativeJudgeScorer.from_config",
                         "rmcluster.judging:JudgeEncoder.from_config"),
    "dpo": ("rmcluster.scorers.dpo:DPOScorer.from_config", "rmcluster.templating:ChatEncoder.from_config"),
}


def _load(path: str) -> Any:
    module, _, attributes = path.partition(":")
    target: Any = importlib.import_module(module)
    for name in attributes.split("."):
        target = getattr(target, name)
    return target


def _kind(config: "RMConfig") -> tuple[str, str]:
    kind = config.model.kind
    if kind not in KINDS:
        raise ValueError(f"unknown scorer kind {kind!r}; known: {sorted(KINDS)}")
    return KINDS[kind]


def build_encoder(config: "RMConfig") -> "Encoder":
    """The kind's encoder without loading weights: for CPU tokenization stages (Serve ingress, Ray Data).

    It encodes exactly as `build_scorer(config).encoder` does.
    """
    encoder: Encoder = _load(_kind(config)[1])(config)
    return encoder


def build_scorer(config: "RMConfig") -> Scorer:
    scorer: Scorer = _load(_kind(config)[0])(config, build_encoder(config))
    return scorer


def check_loadable(config: "RMConfig") -> None:
    """What can be checked before any cluster work, without weights or torch: the tokenizer and config load,
    remote code is allowed where the checkpoint ships it, and a local checkpoint holds weight files."""
    from pathlib import Path

    from ..checkpoint import resolve_model_path

    name = config.model.name
    try:
        build_encoder(config)
    except Exception as err:
        if str(err).startswith(("cannot load model", "model ")):  # already says which model and why
            raise
        raise OSError(f"cannot load model {name!r}: {type(err).__name__}: {err}") from err
    path = Path(resolve_model_path(name, config.model.kind))
    if path.is_dir() and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise OSError(f"cannot load model {name!r}: no weights (*.safetensors, *.bin) in {path}")
