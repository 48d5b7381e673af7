"""Model loading: HF id or local path (or 'demo'), resolving the 'auto' settings (torch side).

Tokenizer and config.json come from `rmcluster.checkpoint`, which the weight-free encoders share;
the remote-code check there runs before any weights load, here and in every encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .checkpoint import check_remote_code, model_config, resolve_model_path
from .config import ModelBase
from .cpu_memory import keep_freed_memory

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ResolvedModel:
    """The concrete choices behind a model config's 'auto' values."""

    path: str
    device: torch.device
    dtype: torch.dtype
    attn_implementation: str


def flash_attn_available() -> bool:
    """transformers' own check (the package imports and its version is supported), not just an import."""
    from transformers.utils import is_flash_attn_2_available

    try:
        return bool(is_flash_attn_2_available())
    except Exception:  # a broken build (ABI mismatch) is as good as absent
        return False


def resolve(cfg: ModelBase) -> ResolvedModel:
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
    elif attn == "flash_attention_2" and not flash_attn_available():
        # transformers raises ImportError here, which would take a replica down at load.
        log.warning("%s: attn_implementation flash_attention_2 asked for, but flash-attn is not installed (or not "
                    "usable); using sdpa. Install the [gpu] extra on a CUDA machine to get it.", cfg.name)
        attn = "sdpa"
    return ResolvedModel(resolve_model_path(cfg.name, getattr(cfg, "kind", "sequence_classifier")), device, dtype, attn)


def _dtype_kwarg() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_model(cfg: ModelBase, auto_class: Optional[str] = None, path: Optional[str] = None,
               **extra: Any) -> tuple[Any, ResolvedModel]:
    """(model, resolved) in eval mode, through `auto_class` (default: the kind's), loaded onto its device.

    `path` loads another checkpoint with the same settings (a DPO reference model).
    """
    import transformers

    resolved = resolve(cfg)
    if resolved.device.type == "cpu" and cfg.cpu_keep_freed_memory:
        keep_freed_memory()
    if path is not None:
        resolved = ResolvedModel(path, resolved.device, resolved.dtype, resolved.attn_implementation)
    auto_class = auto_class or cfg.auto_class_name
    check_remote_code(resolved.path, model_config(resolved.path, cfg.revision), auto_class, cfg.trust_remote_code)
    kwargs: dict[str, Any] = {
        _dtype_kwarg(): resolved.dtype,
        "attn_implementation": resolved.attn_implementation,
        "revision": cfg.revision,
        "trust_remote_code": cfg.trust_remote_code,
        **extra,
    }
    if cfg.device_map:
        kwargs["device_map"] = cfg.device_map
    elif resolved.device.type == "cuda":
        kwargs["device_map"] = {"": str(resolved.device)}  # straight onto the GPU, not through host memory
    try:
        model = getattr(transformers, auto_class).from_pretrained(resolved.path, **kwargs)
    except OSError as err:
        raise OSError(
            f"cannot load model {cfg.name!r}: {err}\n(an HF id needs hub access or a warm HF cache; "
            "with HF_HUB_OFFLINE=1 only cached or local models load)"
        ) from err
    if "device_map" not in kwargs:
        model.to(resolved.device)
    model.eval()
    log.info("loaded %s (%s) on %s as %s with %s", resolved.path, type(model).__name__, resolved.device,
             resolved.dtype, resolved.attn_implementation)
    return model, resolved
