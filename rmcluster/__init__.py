"""rmcluster: reward-model scoring with exact parity to the per-conversation HF loop.

Importing the package is cheap; the engine path imports neither Ray nor FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RMConfig", "ScoreItem", "ScoreResult", "ScoringEngine", "__version__"]

if TYPE_CHECKING:
    from .config import RMConfig
    from .engine import ScoringEngine
    from .outputs import ScoreResult
    from .records import ScoreItem

_LAZY = {"RMConfig": "config", "ScoringEngine": "engine", "ScoreResult": "outputs", "ScoreItem": "records"}


def __getattr__(name: str) -> Any:
    # torch and transformers load only when the engine is first used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
