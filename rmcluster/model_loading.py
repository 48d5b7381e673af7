"""Model loading: HF id or local path (or 'demo'), resolving the 'auto' settings (torch side).

Tokenizer and config.json come from `rmcluster.checkpoint`, which the weight-free encoders share.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import torch

from .checkpoint import resolve_model_path
from .config import ModelConfig

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ResolvedModel:
    """The concrete choices behind a ModelConfig's 'auto' values."""

    path: str
    device: torch.device
    dtype: torch.dtype
    attn_implementation: str


def flash_attn_available() -> bool:
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception:  # a broken build (ABI mismatch) is as good as absent
        return False
    return True


def resolve(cfg: ModelConfig) -> ResolvedModel:
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
    if cfg.dtype == "auto":
        # bf16 matmul on CPUs without AMX is ~100x slower than fp32.
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = _DTYPES[cfg.dtype]
    attn = cfg.attn_implementation
    if attn == "auto":
        attn = "flash_attention_2" if device.type == "cuda" and flash_attn_available() else "sdpa"
    return ResolvedModel(resolve_model_path(cfg.name), device, dtype, attn)


def _dtype_kwarg() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_sequence_classifier(cfg: ModelConfig) -> tuple[Any, ResolvedModel]:
    """(model, resolved) for an AutoModelForSequenceClassification checkpoint, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    resolved = resolve(cfg)
    kwargs: dict[str, Any] = {
        _dtype_kwarg(): resolved.dtype,
        "attn_implementation": resolved.attn_implementation,
        "revision": cfg.revision,
        "trust_remote_code": cfg.trust_remote_code,
    }
    if cfg.num_labels is not None:
        kwargs["num_labels"] = cfg.num_labels
    if cfg.device_map:
        kwargs["device_map"] = cfg.device_map
    try:
        model = AutoModelForSequenceClassification.from_pretrained(resolved.path, **kwargs)
    except OSError as err:
        raise OSError(
            f"cannot load model {cfg.name!r}: {err}\n(an HF id needs hub access or a warm HF cache; "
            "with HF_HUB_OFFLINE=1 only cached or local models load)"
        ) from err
    if not cfg.device_map:
        model.to(resolved.device)
    model.eval()
    log.info(
        "loaded %s on %s as %s with %s", cfg.name, resolved.device, resolved.dtype, resolved.attn_implementation
    )
    return model, resolved
