"""The one typed config shared by the engine, the CLI, Serve and Jobs.

Every default lives here. Serve and Jobs wrap an `RMConfig` and add only their own settings;
the CLI generates its flags from these fields (see `rmcluster.config_cli`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from typing_extensions import Annotated

from .encoding import KindEncoding

# Token budgets per device kind, used when `max_batch_tokens` is left unset; padded batches count
# padded tokens (rows x longest row), packs their real tokens, and the same budget measured best for
# both. CPU: the matmuls are at their peak by 1024 tokens (packs of 1024-3072 measured within 4% of
# each other on the Intel VM, 2026-12-04; 2048 and 4096 slower in 2026-11 runs). CUDA: batch-1 prefill
# leaves the GPU idle, so as many tokens as memory comfortably allows.
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "cuda": 32768}


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


class ModelBase(StrictModel):
    """What every model kind has: where the checkpoint is and how it loads."""

    @property
    def auto_class_name(self) -> str:
        """The transformers auto class the checkpoint loads with (its auto_map may name custom code for it)."""
        return "AutoModelForSequenceClassification"

    def encoding(self, checkpoint: dict[str, Any]) -> KindEncoding:
        """What this kind adds to chat encoding, given the checkpoint's config.json."""
        return KindEncoding()

    name: str = Field(
        "demo",
        description="HF model id, local path, or 'demo' for the embedded demo model of the kind (meaningless scores).",
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
    trust_remote_code: bool = Field(
        False, description="Run modeling code shipped with the checkpoint (auto_map in config.json). Off: such a "
        "checkpoint is refused at load, never silently loaded as a stock class. Read the code first.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for packed forwards (dynamic shapes, so no shape buckets; attention "
        "stays eager). Fuses the element-wise work: 0 to 3 percent faster on CPU (bench/RESULTS.md). The first "
        "forward compiles (seconds on CPU, longer for big models); needs a C++ compiler on CPU, Triton on CUDA.",
    )
    cpu_keep_freed_memory: bool = Field(
        True,
        description="On CPU, glibc malloc keeps freed blocks up to 32 MiB for the next forward instead of returning "
        "them to the OS (rmcluster.cpu_memory): ~10 percent faster on CPU; the process keeps its peak heap. "
        "Process-wide; no effect on GPU or other C libraries.",
    )


class SequenceClassifierModel(ModelBase):
    """AutoModelForSequenceClassification: score = logit 0 at the last token (Skywork, most RMs)."""

    kind: Literal["sequence_classifier"] = Field(
        "sequence_classifier", description="The reward-model kind; each kind has its own settings below."
    )
    num_labels: Optional[int] = Field(
        None, ge=1, description="Override the checkpoint's num_labels; unset keeps the checkpoint's head."
    )
    fp32_head: bool = Field(
        False, description="Apply the score head in float32 to the (bf16) hidden state. A bf16 head rounds scores "
        "to steps of 1/16 between 8 and 16, which ties best-of-N picks; float32 keeps them apart, but no longer "
        "equals the bf16 reference loop bit for bit (off by default, for parity).",
    )


def _position_or_name(value: Any) -> Any:
    # A flag value arrives as text: "2" means tuple position 2.
    return int(value) if isinstance(value, str) and value.isdigit() else value


OutputField = Annotated[Union[int, str], BeforeValidator(_position_or_name)]


class CustomClassifierModel(ModelBase):
    """Checkpoints with their own head code (ArmoRM, QRM, GRM, InternLM2-reward), run through their own forward."""

    kind: Literal["custom_classifier"]
    auto_class: Literal["AutoModelForSequenceClassification", "AutoModel", "AutoModelForCausalLM"] = Field(
        "AutoModelForSequenceClassification", description="The transformers auto class the checkpoint's card loads "
        "it with (its auto_map names the code): ArmoRM, QRM, GRM use the default; InternLM2-reward AutoModel.",
    )
    reward_output: OutputField = Field(
        "score", description="Where the reward is in the forward's output: an attribute name (ArmoRM, QRM: score) "
        "or a position in a returned tuple (GRM: 2, as in `_, _, reward = model(...)`).",
    )
    values_output: Optional[OutputField] = Field(
        "rewards", description="Where named objectives are (ArmoRM: rewards [B, K]; QRM: reward_quantiles "
        "[B, K, Q], averaged over quantiles; or gating_output); null for none.",
    )
    value_names: Optional[list[str]] = Field(
        None, description="Names of the objectives, in order (from the model card); unset: objective_0..k.",
    )
    append_token_id: Union[Literal["auto"], int, None] = Field(
        "auto", description="A token appended after the templated conversation, where the model reads its reward "
        "(InternLM2-reward). 'auto': config.json's reward_token_id when present; null: none.",
    )
    token_logit: Optional[int] = Field(
        None, ge=0, description="For causal LMs read as classifiers (Nemotron-70B-Reward-HF: 0): the reward is the "
        "logit of this vocabulary id after the last token, in one forward pass (auto_class is then ignored).",
    )

    @property
    def auto_class_name(self) -> str:
        return "AutoModelForCausalLM" if self.token_logit is not None else self.auto_class

    def encoding(self, checkpoint: dict[str, Any]) -> KindEncoding:
        token = checkpoint.get("reward_token_id") if self.append_token_id == "auto" else self.append_token_id
        return KindEncoding(append_ids=(int(token),) if token is not None else ())


class ProcessRewardModel(ModelBase):
    """Process reward models: one score per reasoning step, read at a step separator token."""

    kind: Literal["process_reward"]
    step_token: str = Field(
        "<extra_0>", description="The step separator (Qwen2.5-Math-PRM: <extra_0>; Math-Shepherd: ки); it must "
        "be one token. Steps given as a list are each followed by it; messages may already hold it.",
    )
    aggregate: Literal["min", "last", "mean", "prod"] = Field(
        "min", description="How the step scores make the item's score: min (usual for best-of-N), last, mean, prod.",
    )
    candidate_tokens: Optional[list[str]] = Field(
        None, description="Causal-LM PRMs (Math-Shepherd: + -): a step's score is the softmax over these tokens' "
        "logits at its separator, taking the first. Unset: the checkpoint's own token head (Qwen2.5-Math-PRM, "
        "loaded with AutoModel), softmax over its labels.",
    )
    positive_label: int = Field(1, ge=0, description="The token head's label read as 'step is good'.")

    @property
    def auto_class_name(self) -> str:
        return "AutoModelForCausalLM" if self.candidate_tokens else "AutoModel"

    def encoding(self, checkpoint: dict[str, Any]) -> KindEncoding:
        return KindEncoding(step_token=self.step_token)


class GenerateConfig(StrictModel):
    """A judge that reasons before its verdict: greedy generation up to the answer prefix."""

    max_new_tokens: int = Field(512, ge=1, description="Longest rationale, in tokens (giving it turns reasoning on).")
    temperature: float = Field(0.0, ge=0, le=0, description="Greedy only (0): a score must be reproducible.")


class GenerativeJudgeModel(ModelBase):
    """LLM judges read from their vocabulary: the verdict tokens' probabilities after the judge prompt."""

    kind: Literal["generative_judge"]
    mode: Optional[Literal["pointwise", "pairwise"]] = Field(
        None, description="pointwise: each response judged alone; pairwise: pairs and best-of-N judged as "
        "comparisons, both orders. Unset: the preset's (pointwise for a template file).",
    )
    template: str = Field(
        "pointwise_yes_no", description="A preset (pairwise_mtbench, pointwise_yes_no, grade_1_5) or a Jinja file "
        "rendering the judge's user message from {{ prompt }} and {{ response }} (pairwise: {{ response_a }}, "
        "{{ response_b }}); the file's text is used verbatim but for one trailing newline.",
    )
    system: Optional[str] = Field(None, description="The judge's system message; unset: the preset's; '' for none.")
    answer_prefix: Optional[str] = Field(
        None, description="Text that starts the judge's answer, its tokens appended as if generated (e.g. '[['); "
        "unset: the preset's ('' for a template file).",
    )
    verdicts: Optional[list[str]] = Field(
        None, description="Candidate answers, the positive first: Yes No; A B (pairwise); 1 2 3 4 5 (grades: the "
        "score is the expected grade). Unset: the preset's (Yes No for a template file).",
    )
    generate: Optional[GenerateConfig] = Field(
        None, description="Reason first (RM-R1, Prometheus with feedback): slow next to one pass.")

    @property
    def auto_class_name(self) -> str:
        return "AutoModelForCausalLM"

    @property
    def resolved_mode(self) -> str:
        from .judging import PRESETS

        preset = PRESETS.get(self.template)
        return self.mode or (preset.mode if preset else "pointwise")

    @property
    def resolved_system(self) -> Optional[str]:
        from .judging import PRESETS

        preset = PRESETS.get(self.template)
        return (self.system if self.system is not None else (preset.system if preset else None)) or None

    @model_validator(mode="after")
    def _fits_the_preset(self) -> "GenerativeJudgeModel":
        from .judging import PRESETS

        preset = PRESETS.get(self.template)
        if preset is not None and self.mode is not None and self.mode != preset.mode:
            raise ValueError(f"template {self.template} is {preset.mode}; mode {self.mode} does not fit it")
        if self.generate is not None and not (self.answer_prefix if self.answer_prefix is not None
                                              else (preset.answer_prefix if preset else "")):
            raise ValueError("generate needs an answer_prefix: the verdict is read where the judge writes it")
        return self


class DPOModel(ModelBase):
    """A DPO-trained policy scored by implicit reward against its reference (RewardBench's DPO)."""

    kind: Literal["dpo"]
    reference: Optional[str] = Field(
        None, description="The reference model (the policy's SFT model): an HF id or path ('demo' for the demo "
        "policy's); unset: reference-free.",
    )
    beta: float = Field(1.0, gt=0, description="Multiplies the log-ratio (TRL's DPO beta; RewardBench uses 1).")
    reference_free: Literal["sum", "avg", "norm"] = Field(
        "sum", description="Without a reference: the response log-probs' sum, average, or minus their L2 norm.",
    )

    @property
    def auto_class_name(self) -> str:
        return "AutoModelForCausalLM"

    def encoding(self, checkpoint: dict[str, Any]) -> KindEncoding:
        return KindEncoding(require_prompt=True)


def _model_shorthand(value: Any) -> Any:
    # `model: Skywork/...` is shorthand for `model: {name: Skywork/...}`, and a model without a kind is a
    # sequence classifier (the only place either is expanded).
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and "kind" not in value:
        value = {**value, "kind": "sequence_classifier"}
    return value


ModelConfig = Annotated[
    Union[SequenceClassifierModel, CustomClassifierModel, ProcessRewardModel, GenerativeJudgeModel, DPOModel],
    BeforeValidator(_model_shorthand),
    Field(discriminator="kind"),
]


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
        description="Padding-free packing: sequences concatenated in one row, attention per sequence, the last "
        "layer at the read rows only. 'auto': on where the model passes the load-time packing check; 'off': "
        "right-padded batches (shared-prompt groups still run as packs).",
    )
    shared_prompt: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Compute a token prefix common to several items of one forward batch once: a best-of-N "
        "or pair record's prompt, a GRPO group sent as one text or token-id list per request, a system prompt "
        "shared across records. Found from the token ids alone, so exact whatever the input shape. 'auto': on "
        "where the model passes the load-time packing check.",
    )
    min_shared_tokens: int = Field(
        16,
        ge=1,
        description="Shortest common prefix worth computing once (each shared prefix is one more attention "
        "segment).",
    )
    prefix_cache_tokens: int = Field(
        0,
        ge=0,
        description="Prefixes kept between engine calls, in tokens (0: off): every prompt or single sequence a "
        "packed forward computes leaves its keys and values, and later items that start with it reuse them "
        "(least recently used go first). For Serve, where the samples of one GRPO group arrive as separate "
        "requests, in different calls. Memory per token: layers x 2 x KV heads x head dim x dtype bytes. "
        "Per-segment sdpa path only (CPU, GPU without a varlen kernel); while on, every forward is packed.",
    )

    def token_budget(self, device_type: str) -> int:
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return DEFAULT_BATCH_TOKENS.get(device_type, DEFAULT_BATCH_TOKENS["cuda"])


class RMConfig(StrictModel):
    """What to score with and how: model, tokenization and batching."""

    model: ModelConfig = Field(default_factory=SequenceClassifierModel)
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
