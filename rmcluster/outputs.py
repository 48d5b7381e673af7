"""What scoring returns, torch-free: a scorer's typed output per item, the engine's result, batch stats.

A scorer declares the names of its `values` at load; the engine never interprets an output, it
only attaches token counts and errors. Importing this module costs nothing (no torch, no pyarrow),
so the Serve ingress and clients use these types without the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ScoreOutput:
    """One item's forward output: the reward and what else the scorer reads from the model."""

    score: float
    values: Optional[dict[str, float]] = None  # named outputs (objectives, labels, verdict probabilities)
    step_scores: Optional[list[float]] = None  # process reward models: one per step
    logits: Optional[list[float]] = None  # sequence classifiers: every label's logit
    rationale: Optional[str] = None  # generative judges that reason before the verdict


@dataclass(frozen=True)
class ScoreResult:
    """One scored unit: the scorer's output, or why there is none."""

    output: Optional[ScoreOutput]
    num_tokens: int
    truncated: bool
    error: Optional[str]

    @classmethod
    def ok(cls, output: ScoreOutput, num_tokens: int, truncated: bool = False) -> "ScoreResult":
        return cls(output, num_tokens, truncated, None)

    @classmethod
    def failed(cls, error: BaseException | str, num_tokens: int = 0, truncated: bool = False) -> "ScoreResult":
        return cls(None, num_tokens, truncated, error if isinstance(error, str) else error_message(error))

    @property
    def score(self) -> Optional[float]:
        return self.output.score if self.output is not None else None

    @property
    def logits(self) -> Optional[list[float]]:
        return self.output.logits if self.output is not None else None


def error_message(error: BaseException) -> str:
    """How an item's exception reads in its row: the same on every front end."""
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class BatchStats:
    """One forward pass, for progress bars and metrics."""

    items: int
    real_tokens: int  # tokens of the scored sequences, each whole (what per-sequence scoring computes)
    padded_tokens: int  # tokens the batch occupies, padding included (packed: no padding, = real_tokens)
    seconds: float
    reused_tokens: int = 0  # shared-prompt tokens not recomputed: the pass computed padded - reused
