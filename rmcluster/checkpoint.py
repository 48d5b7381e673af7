"""A checkpoint's files without its weights or torch: path, config.json, tokenizer, remote-code consent.

The Serve ingress and the corpus job's encode stage tokenize on CPU and never load a model, so
they read what they need here. transformers' `AutoTokenizer` and `AutoConfig` import torch (their
config classes do), so the tokenizer class is resolved the way AutoTokenizer resolves it, from
`tokenizer_config.json`, and built directly; the model replica uses the same function, so both
sides tokenize with the same class.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from .demo_model import DEMO_MODEL_NAME, demo_model_path

# Fallback when a config names no context length (same as transformers' common default).
DEFAULT_MAX_POSITIONS = 4096
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


class RemoteCodeRefused(ValueError):
    """The checkpoint ships its own modeling code and the config did not allow running it."""


# `model.name: demo` per kind: the embedded demo checkpoint of that kind (rmcluster/demo_kinds.py).
DEMO_CHECKPOINT_OF_KIND = {"custom_classifier": "armo", "process_reward": "qwen_prm", "generative_judge": "causal_lm",
                           "dpo": "causal_lm", "dpo_reference": "causal_lm_reference"}


def resolve_model_path(name: str, kind: str = "sequence_classifier") -> str:
    """A model name as a loadable path: 'demo' is the kind's demo checkpoint, built on first use."""
    if name != DEMO_MODEL_NAME:
        return name
    if kind in DEMO_CHECKPOINT_OF_KIND:
        from .demo_kinds import demo_checkpoint_path

        return str(demo_checkpoint_path(DEMO_CHECKPOINT_OF_KIND[kind]))
    return str(demo_model_path())


def checkpoint_file(path: str, filename: str, revision: Optional[str] = None) -> Optional[str]:
    """A file of a local checkpoint directory or a hub repo (from the HF cache offline); None if absent."""
    if os.path.isdir(path):
        local = Path(path) / filename
        return str(local) if local.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(path, filename, revision=revision)
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None
    except Exception as err:  # noqa: BLE001 - a bad id, an unknown repo, no network
        raise OSError(f"cannot load model {path!r}: {err} (an HF id needs hub access or a warm HF cache; with "
                      "HF_HUB_OFFLINE=1 only cached or local models load)") from err


def read_json(path: str, filename: str, revision: Optional[str] = None) -> dict[str, Any]:
    found = checkpoint_file(path, filename, revision)
    if found is None:
        return {}
    with open(found, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def model_config(path: str, revision: Optional[str] = None) -> dict[str, Any]:
    """config.json as a dict; OSError when the checkpoint has none (not a model)."""
    if checkpoint_file(path, "config.json", revision) is None:
        raise OSError(f"cannot load model {path!r}: no config.json (not a local checkpoint, and not in the HF "
                      "cache; with HF_HUB_OFFLINE=1 only cached or local models load)")
    return read_json(path, "config.json", revision)


def max_positions(config: dict[str, Any]) -> int:
    """The longest sequence a checkpoint's config admits (multimodal configs nest it in text_config)."""
    for scope in (config, config.get("text_config") or {}):
        for key in _POSITION_KEYS:
            if isinstance(scope.get(key), int):
                return int(scope[key])
    return DEFAULT_MAX_POSITIONS


def vocab_size(config: dict[str, Any]) -> Optional[int]:
    """The model's embedding rows (multimodal configs nest them in text_config); None if config.json says not."""
    for scope in (config, config.get("text_config") or {}):
        if isinstance(scope.get("vocab_size"), int):
            return int(scope["vocab_size"])
    return None


def check_remote_code(name: str, config: dict[str, Any], auto_class: str, trusted: bool) -> bool:
    """Whether `auto_class` loads custom code from the checkpoint; refuse it unless `trusted`."""
    remote = auto_class in (config.get("auto_map") or {})
    if remote and not trusted:
        raise RemoteCodeRefused(
            f"model {name!r} ships its own modeling code ({config['auto_map'][auto_class]!r} in config.json "
            f"auto_map); it runs only with model.trust_remote_code: true (--trust-remote-code). Read it first."
        )
    return remote


def load_tokenizer(path: str, revision: Optional[str] = None, trust_remote_code: bool = False) -> Any:
    """The checkpoint's tokenizer, of the class AutoTokenizer would pick, without importing torch."""
    import transformers

    tok_config = read_json(path, "tokenizer_config.json", revision)
    kwargs: dict[str, Any] = {"revision": revision}
    remote = (tok_config.get("auto_map") or {}).get("AutoTokenizer")
    if remote:
        if not trust_remote_code:
            raise RemoteCodeRefused(f"the tokenizer of {path!r} ships its own code; it runs only with "
                                    "model.trust_remote_code: true (--trust-remote-code)")
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        ref = remote[1] or remote[0] if isinstance(remote, list) else remote
        cls = get_class_from_dynamic_module(ref, path, revision=revision)
        return cls.from_pretrained(path, trust_remote_code=True, **kwargs)
    name = tok_config.get("tokenizer_class") or "PreTrainedTokenizerFast"
    cls = getattr(transformers, name, None) or getattr(transformers, name.removesuffix("Fast"), None)
    if cls is None:
        raise OSError(f"cannot load the tokenizer of {path!r}: transformers has no class {name!r}")
    return cls.from_pretrained(path, **kwargs)
