"""The one typed config shared by the engine, the CLI, Serve and Jobs.

Every default lives here. Serve and Jobs wrap an `RMConfig` and add only their own settings;
the CLI generates its flags from these fields (see `rmcluster.config_cli`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

# Token budgets per device kind, used when `max_batch_tokens` is left unset; padded batches count
# padded tokens (rows x longest row), packs their real tokens, and the same budget measured best for
# both. CPU: small batches win (big matmuls are already at peak; masks, padding and longer packs add
# cache pressure: 2048- and 4096-token packs measured slower than 1024). CUDA: batch-1 prefill
# leaves the GPU idle, so as many tokens as memory comfortably allows.
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "cuda": 32768}
# `packing: auto` per device kind, from bench/engine.py measurements. CPU: length-sorted padded
# batches already run 99% real tokens, and packs measured equal to slightly slower (0.93-1.02x), so
# independent sequences stay padded there; shared-prompt groups run as packs either way.
AUTO_PACKING = {"cpu": False, "cuda": True}


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # YAML `section:` with nothing under it reads as null: it means the section's defaults.
        if not isinstance(data, dict):
            return data
        sections = {name for name, f in cls.model_fields.items()
                    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
        return {k: v for k, v in data.items() if not (v is None and k in sections)}


class ModelConfig(StrictModel):
    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `model: Skywork/...` is shorthand for `model: {name: Skywork/...}` (the only place it is expanded).
        return {"name": value} if isinstance(value, str) else value

    kind: Literal["sequence_classifier"] = Field(
        "sequence_classifier",
        description="Scorer kind. 'sequence_classifier': AutoModelForSequenceClassification, score = logit 0.",
    )
    name: str = Field(
        "demo",
        description="HF model id, local path, or 'demo' for the embedded demo model (meaningless scores).",
        json_schema_extra={"cli": "--model"},
    )
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto': bfloat16 on CUDA, float32 on CPU."
    )
    attn_implementation: Literal["auto", "flash_attention_2", "sdpa", "eager"] = Field(
        "auto", description="'auto': flash_attention_2 when flash_attn imports and CUDA is present, else sdpa."
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    device_map: Optional[Literal["auto"]] = Field(
        None, description="'auto' spreads one model over all GPUs visible to this process (models too big for one GPU)."
    )
    trust_remote_code: bool = Field(False, description="Allow custom modeling code from the checkpoint.")
    num_labels: Optional[int] = Field(
        None, ge=1, description="Override the checkpoint's num_labels; unset keeps the checkpoint's head."
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for packed forwards (dynamic shapes, so no shape buckets; attention "
        "stays eager). Fuses the element-wise work: 0 to 3 percent faster on CPU (bench/RESULTS.md). The first "
        "forward compiles (seconds on CPU, longer for big models); needs a C++ compiler on CPU, Triton on CUDA.",
    )


class TokenizationConfig(StrictModel):
    max_length: Optional[int] = Field(
        None, ge=2, description="Longest item in tokens; unset means the model's max_position_embeddings."
    )
    on_overflow: Literal["error", "truncate_left"] = Field(
        "error",
        description="'error' rejects over-long items; 'truncate_left' drops the oldest prompt tokens, "
        "keeping BOS and the whole final message, and flags the item as truncated.",
    )


class BatchingConfig(StrictModel):
    max_batch_tokens: Optional[int] = Field(
        None,
        ge=1,
        description="Token budget per forward pass: padded tokens (rows x longest row) for padded batches, "
        f"real tokens for packed ones. Unset: per device, {DEFAULT_BATCH_TOKENS}.",
    )
    max_batch_size: int = Field(64, ge=1, description="Most items in one forward pass.")
    packing: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Padding-free packing: sequences concatenated in one row, attention per sequence. "
        "'auto': on where the model passes the load-time packing check and the device's measured default "
        f"says so ({AUTO_PACKING}); 'off': right-padded batches (shared-prompt groups still run as packs).",
    )
    shared_prompt: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Run a record's prompt once for all its responses (best-of-N, pairs) where the templated "
        "prompt is an exact token prefix of every full conversation. 'auto': on where the model passes the "
        "load-time packing check.",
    )

    def token_budget(self, device_type: str) -> int:
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return DEFAULT_BATCH_TOKENS.get(device_type, DEFAULT_BATCH_TOKENS["cuda"])


class RMConfig(StrictModel):
    """What to score with and how: model, tokenization and batching."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    tokenization: TokenizationConfig = Field(default_factory=TokenizationConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RMConfig":
        return cls.model_validate(load_yaml_mapping(path))


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; say which file is wrong if it does not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data
