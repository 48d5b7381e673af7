"""`JobConfig`: the corpus job's settings around one `RMConfig` (which keeps every scoring default).

Flags are generated from these fields by `rmcluster.config_cli`, and `--config job.yaml` takes the
same keys, so both validate here. Example YAML:

    input: s3://bucket/corpus/*.jsonl
    output: s3://bucket/results/run-1
    scoring: {model: Skywork/Skywork-Reward-Llama-3.1-8B-v0.2, tokenization: {max_length: 4096}}
    scorer: {min_size: 1, max_size: 8, num_gpus: 1}
    max_error_rate: 0.01
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from rmcluster.config import RMConfig, StrictModel


def _cli(flag: str) -> dict:
    return {"cli": flag}


class ScorerPoolConfig(StrictModel):
    """The model-holding actor pool (one engine per actor)."""

    min_size: int = Field(1, ge=1, description="Fewest scoring actors.", json_schema_extra=_cli("--min-actors"))
    max_size: int = Field(1, ge=1, description="Most scoring actors (the pool autoscales in between).",
                          json_schema_extra=_cli("--max-actors"))
    num_gpus: Optional[float] = Field(
        None, ge=0, description="GPUs per scoring actor; unset: 1 when the cluster has GPUs, else 0 (CPU).",
        json_schema_extra=_cli("--num-gpus"))
    num_cpus: float = Field(1, gt=0, description="CPUs per scoring actor (on CPU, also its torch threads).",
                            json_schema_extra=_cli("--actor-cpus"))
    batch_size: int = Field(
        512, ge=1, description="Records per scoring call; the engine packs their items into forward passes by token "
        "budget.",
        json_schema_extra=_cli("--batch-size"))

    @model_validator(mode="after")
    def _sizes(self) -> "ScorerPoolConfig":
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} > max_size {self.max_size}")
        return self


class TokenizerPoolConfig(StrictModel):
    """CPU actors that parse records, template and tokenize them (overlapping the scoring actors)."""

    max_size: int = Field(2, ge=1, description="Most tokenizer actors.", json_schema_extra=_cli("--tokenizer-actors"))
    num_cpus: float = Field(0.5, gt=0, description="CPUs per tokenizer actor.", json_schema_extra=_cli("--tokenizer-cpus"))
    batch_size: int = Field(256, ge=1, description="Records per tokenizer call (and per Serve request batch).",
                            json_schema_extra=_cli("--records-per-batch"))


class ServeModeConfig(StrictModel):
    """Send records to a running Serve app instead of starting scoring actors."""

    app: Optional[str] = Field(
        None, description="Name of a running rmcluster Serve app; its handle's score_records does the scoring.",
        json_schema_extra=_cli("--serve-app"))
    callers: int = Field(1, ge=1, description="Actors calling the Serve handle.", json_schema_extra=_cli("--serve-callers"))
    requests_in_flight: int = Field(4, ge=1, description="Concurrent requests per caller; a batch is split across them.",
                                    json_schema_extra=_cli("--serve-requests"))


class JobConfig(StrictModel):
    input: str = Field(description="JSONL/Parquet file, directory or glob; local, s3:// or gs://.",
                       json_schema_extra=_cli("--input"))
    output: str = Field(description="Results store directory (local, s3:// or gs://); rerun to resume.",
                        json_schema_extra=_cli("--output"))
    scoring: RMConfig = Field(default_factory=RMConfig)
    scorer: ScorerPoolConfig = Field(default_factory=ScorerPoolConfig)
    tokenizer: TokenizerPoolConfig = Field(default_factory=TokenizerPoolConfig)
    serve: ServeModeConfig = Field(default_factory=ServeModeConfig)
    rows_per_file: int = Field(
        8192, ge=1, description="Rows gathered into one results file; a killed job rescored at most this many per writer.",
        json_schema_extra=_cli("--rows-per-file"))
    max_error_rate: Optional[float] = Field(
        None, ge=0, le=1, description="Fail (exit 1, after writing) when errors / items in the store exceed this.",
        json_schema_extra=_cli("--max-error-rate"))
