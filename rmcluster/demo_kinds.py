"""Tiny offline checkpoints that mimic public reward-model kinds, for tests and demos.

Each is built in seconds from the demo tokenizer (see demo_model.py) with random, seeded weights.
THEIR SCORES ARE MEANINGLESS. The remote-code ones carry their own modeling file (from demo_code/)
and an `auto_map`, so loading them runs transformers' real trust_remote_code path:

- "armo": RLHFlow/ArmoRM-Llama3-8B-v0.1 (multi-objective rewards + gate; AutoModelForSequenceClassification)
- "qrm": nicolinho/QRM-Llama3.1-8B (the ArmoRM gate over quantile rewards; AutoModelForSequenceClassification)
- "grm": Ray2333/GRM-llama3-8B-sftreg (value head, tuple output; AutoModelForSequenceClassification)
- "internlm2": internlm/internlm2-7b-reward (value head at an appended reward token, get_score; AutoModel)
- "qwen_prm": Qwen/Qwen2.5-Math-PRM-7B (per-token 2-class head, `<extra_0>` step separator; AutoModel)

Plain LlamaForCausalLM checkpoints (no remote code) serve generative judges, DPO and Math-Shepherd:
- "causal_lm": judge / DPO policy; "causal_lm_reference": the DPO reference (same tokenizer, other seed)
- "math_shepherd": peiyi9979/math-shepherd-mistral-7b-prm (step tag "ки", "+" good / "-" bad)
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rmcluster.demo_model import (
    EOT,
    HEADER_END,
    HEADER_START,
    MEANINGLESS,
    DemoModelSpec,
    build_tokenizer,
    cached_build,
)

CODE_DIR = Path(__file__).parent / "demo_code"
ASSISTANT_HEADER = f"{EOT}{HEADER_START}assistant{HEADER_END}\n\n"  # ArmoRM's gate reads the end of this
REWARD_TOKEN = "<|reward|>"  # InternLM2-reward's appended token
STEP_SEPARATOR = "<extra_0>"  # Qwen2.5-Math-PRM's step separator
STEP_TAG, GOOD_TAG, BAD_TAG = "ки", "+", "-"  # Math-Shepherd
VERDICT_TOKENS = ("Yes", "No")  # generative judges read P(Yes) vs P(No)

DEFAULT_SPEC = DemoModelSpec()
PAD_SPEC = DemoModelSpec(pad_token=True)  # ArmoRM pools at the first pad: it needs a pad absent from text
NUM_OBJECTIVES, NUM_QUANTILES, GATING_HIDDEN = 5, 9, 32
HEAD_STD = 0.5  # reward-model-like range (a few units) for random scalar heads
GATE_STD = 0.2  # gate weights spread over objectives instead of picking one
PRM_HEAD_STD = 0.3  # step probabilities spread over roughly (0.1, 0.9) instead of saturating
SEQ_CLS = "AutoModelForSequenceClassification"


def _llama_config(tokenizer: Any, spec: DemoModelSpec, **extra: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**_llama_kwargs(tokenizer, spec), **extra)


def _llama_kwargs(tokenizer: Any, spec: DemoModelSpec) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "num_labels": spec.num_labels,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": 0.1,  # larger than Llama's 0.02 so attention mixes context and scores vary
        "tie_word_embeddings": False,
    }


def _copy_code(out_dir: Path, filename: str, *names: str) -> list[Any]:
    """Copy demo_code/filename into the checkpoint and load `names` from that copy, the way transformers
    loads remote code (relative imports included): the weights come from the shipped code."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    shutil.copyfile(CODE_DIR / filename, out_dir / filename)
    return [get_class_from_dynamic_module(f"{Path(filename).stem}.{name}", str(out_dir)) for name in names]


def _seeded_model(seed: int, make: Callable[[], Any], init_heads: Callable[[Any], None] = lambda _: None) -> Any:
    """`make()` then `init_heads(model)` under `seed`, leaving the global RNG untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        init_heads(model)
    return model


def _normal_(std: float, *modules: Any) -> None:
    import torch

    for module in modules:
        torch.nn.init.normal_(module.weight, std=std)


def _save(out_dir: Path, model: Any, tokenizer: Any, mimics: str, spec: DemoModelSpec, seed: int) -> Path:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per tiny shard is noise
    try:
        model.eval().save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        hf_logging.enable_progress_bar()
    # Last: README.md marks a complete checkpoint for cached_build.
    (out_dir / "README.md").write_text(
        f"# rmcluster demo checkpoint\n\n{MEANINGLESS}\n\nmimics: {mimics}\n\n"
        f"spec: {asdict(spec)}, seed: {seed}\n"
    )
    return out_dir


def _remote_code_model(out_dir: Path, code: str, class_name: str, auto_class: str, config: Any, seed: int,
                       init_heads: Callable[[Any], None]) -> Any:
    """`class_name` from the checkpoint's own copy of `code`, with config.auto_map pointing at it."""
    (model_class,) = _copy_code(out_dir, code, class_name)
    config.auto_map = {auto_class: f"{Path(code).stem}.{class_name}"}
    config.architectures = [class_name]
    return _seeded_model(seed, lambda: model_class(config), init_heads)


def _new_dir(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _gated_config(spec: DemoModelSpec, **extra: Any) -> tuple[Any, Any]:
    """(tokenizer, config) for ArmoRM-style models, which pool at the first pad and gate at the header."""
    tokenizer = build_tokenizer(spec)
    if tokenizer.pad_token_id is None:
        raise ValueError("ArmoRM-style pooling reads the first pad token: the spec needs pad_token=True")
    pattern = tokenizer.encode(ASSISTANT_HEADER, add_special_tokens=False)
    config = _llama_config(
        tokenizer,
        spec,
        num_objectives=NUM_OBJECTIVES,
        gating_hidden_dim=GATING_HIDDEN,
        gating_token_pattern=pattern,
        **extra,
    )
    return tokenizer, config


def _init_gated_heads(model: Any) -> None:
    import torch

    _normal_(HEAD_STD, model.regression_layer)
    _normal_(GATE_STD, model.gating[0], model.gating[2])
    k = model.reward_transform_matrix.shape[0]
    with torch.no_grad():  # near identity: objectives mostly keep their own reward
        model.reward_transform_matrix.copy_(torch.eye(k) + 0.1 * torch.randn(k, k))


def _init_value_head(model: Any) -> None:
    _normal_(HEAD_STD, model.v_head)


def _init_prm_head(model: Any) -> None:
    _normal_(PRM_HEAD_STD, model.score[2])  # the hidden layer keeps initializer_range


def build_armo_like(out_dir: str | Path, spec: DemoModelSpec = PAD_SPEC, seed: int = 0) -> Path:
    """ArmoRM-like: per-objective rewards at the token before the first pad, gated at the assistant header."""
    out_dir = _new_dir(out_dir)
    tokenizer, config = _gated_config(spec)
    model = _remote_code_model(
        out_dir, "armo_like.py", "LlamaForRewardModelWithGating", SEQ_CLS, config, seed, _init_gated_heads
    )
    return _save(out_dir, model, tokenizer, "RLHFlow/ArmoRM-Llama3-8B-v0.1", spec, seed)


def build_qrm_like(out_dir: str | Path, spec: DemoModelSpec = PAD_SPEC, seed: int = 0) -> Path:
    """QRM-like: ArmoRM's pooling and gate over per-objective reward quantiles."""
    out_dir = _new_dir(out_dir)
    tokenizer, config = _gated_config(spec, num_quantiles=NUM_QUANTILES)
    shutil.copyfile(CODE_DIR / "armo_like.py", out_dir / "armo_like.py")  # qrm_like imports its pooling from it
    model = _remote_code_model(
        out_dir, "qrm_like.py", "LlamaForQuantileRewardModelWithGating", SEQ_CLS, config, seed, _init_gated_heads
    )
    return _save(out_dir, model, tokenizer, "nicolinho/QRM-Llama3.1-8B", spec, seed)


def build_grm_like(out_dir: str | Path, spec: DemoModelSpec = PAD_SPEC, seed: int = 0) -> Path:
    """GRM-like: value head read at the last real token; forward returns (lm_logits, None, reward)."""
    out_dir = _new_dir(out_dir)
    tokenizer = build_tokenizer(spec)
    config = _llama_config(tokenizer, spec)
    model = _remote_code_model(
        out_dir, "grm_like.py", "LlamaForRewardWithValueHead", SEQ_CLS, config, seed, _init_value_head
    )
    return _save(out_dir, model, tokenizer, "Ray2333/GRM-llama3-8B-sftreg", spec, seed)


def build_internlm2_like(out_dir: str | Path, spec: DemoModelSpec = DEFAULT_SPEC, seed: int = 0) -> Path:
    """InternLM2-reward-like: own config class (model_type internlm2), value at an appended <|reward|>."""
    out_dir = _new_dir(out_dir)
    tokenizer = build_tokenizer(spec)
    tokenizer.add_special_tokens({"additional_special_tokens": [REWARD_TOKEN]})
    config_class, model_class = _copy_code(out_dir, "internlm2_like.py", "InternLM2Config", "InternLM2ForRewardModel")
    reward_token_id = tokenizer.convert_tokens_to_ids(REWARD_TOKEN)
    config = config_class(reward_token_id=reward_token_id, **_llama_kwargs(tokenizer, spec))
    # The config class is remote too: without trust_remote_code transformers cannot even read config.json.
    config.auto_map = {
        "AutoConfig": "internlm2_like.InternLM2Config",
        "AutoModel": "internlm2_like.InternLM2ForRewardModel",
    }
    config.architectures = ["InternLM2ForRewardModel"]
    model = _seeded_model(seed, lambda: model_class(config), _init_value_head)
    return _save(out_dir, model, tokenizer, "internlm/internlm2-7b-reward", spec, seed)


def build_qwen_prm_like(out_dir: str | Path, spec: DemoModelSpec = DEFAULT_SPEC, seed: int = 0) -> Path:
    """Qwen2.5-Math-PRM-like: per-token (bad, good) logits; steps end with the <extra_0> special token."""
    out_dir = _new_dir(out_dir)
    tokenizer = build_tokenizer(spec)
    tokenizer.add_special_tokens({"additional_special_tokens": [STEP_SEPARATOR]})
    config = _llama_config(tokenizer, spec)
    model = _remote_code_model(
        out_dir, "qwen_prm_like.py", "Qwen2ForProcessRewardModel", "AutoModel", config, seed, _init_prm_head
    )
    return _save(out_dir, model, tokenizer, "Qwen/Qwen2.5-Math-PRM-7B", spec, seed)


def build_causal_lm(
    out_dir: str | Path,
    spec: DemoModelSpec = DEFAULT_SPEC,
    seed: int = 0,
    mimics: str = "a Llama-3-style chat LM (generative judge, DPO policy or reference)",
) -> Path:
    """Plain random LlamaForCausalLM, no remote code. The tokenizer depends on `spec` only and the weights
    on `seed`, so a DPO policy and its reference share a tokenizer exactly."""
    from transformers import LlamaForCausalLM

    out_dir = _new_dir(out_dir)
    tokenizer = build_tokenizer(spec)
    # Non-special added tokens: each encodes as one token wherever it appears in text.
    tokenizer.add_tokens([*VERDICT_TOKENS, STEP_TAG])
    config = _llama_config(tokenizer, spec)
    model = _seeded_model(seed, lambda: LlamaForCausalLM(config))
    return _save(out_dir, model, tokenizer, mimics, spec, seed)


def build_math_shepherd_like(out_dir: str | Path, spec: DemoModelSpec = DEFAULT_SPEC, seed: int = 2) -> Path:
    """Math-Shepherd-like: a causal LM whose P("+") vs P("-") at each "ки" step tag is the step score."""
    return build_causal_lm(out_dir, spec, seed, mimics="peiyi9979/math-shepherd-mistral-7b-prm")


@dataclass(frozen=True)
class DemoCheckpoint:
    """A registry entry: `self(out_dir)` builds it; `key()` names its cache directory."""

    build: Callable[[Path, DemoModelSpec, int], Path]
    spec: DemoModelSpec = DEFAULT_SPEC
    seed: int = 0

    def __call__(self, out_dir: Path) -> Path:
        return self.build(Path(out_dir), self.spec, self.seed)

    def key(self) -> str:
        # The builder's and modeling files' source is in the key: editing either rebuilds the cache.
        digest = hashlib.sha1(f"{self.spec.key()}:{self.seed}".encode())
        for source in (Path(__file__), *sorted(CODE_DIR.glob("*.py"))):
            digest.update(source.read_bytes())
        return digest.hexdigest()[:10]


DEMO_CHECKPOINTS: dict[str, DemoCheckpoint] = {
    "armo": DemoCheckpoint(build_armo_like, PAD_SPEC),
    "qrm": DemoCheckpoint(build_qrm_like, PAD_SPEC),
    "grm": DemoCheckpoint(build_grm_like, PAD_SPEC),
    "internlm2": DemoCheckpoint(build_internlm2_like),
    "qwen_prm": DemoCheckpoint(build_qwen_prm_like),
    "causal_lm": DemoCheckpoint(build_causal_lm, seed=0),
    "causal_lm_reference": DemoCheckpoint(build_causal_lm, seed=1),
    "math_shepherd": DemoCheckpoint(build_math_shepherd_like, seed=2),
}


def demo_checkpoint_path(name: str, root: Path | None = None) -> Path:
    """The cached checkpoint `name` (a DEMO_CHECKPOINTS key), built on first use."""
    try:
        checkpoint = DEMO_CHECKPOINTS[name]
    except KeyError:
        raise KeyError(f"unknown demo checkpoint {name!r}; known: {sorted(DEMO_CHECKPOINTS)}") from None
    return cached_build(f"{name}-{checkpoint.key()}", checkpoint, root)
