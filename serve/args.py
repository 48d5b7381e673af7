"""`ServeArgs`: what `build_app` takes. It contains the shared `RMConfig` and adds serving settings only.

`serve run serve.config.yaml` validates the application's `args:` into this model, so a typo is an
error at deploy time instead of a silently dropped key.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from rmcluster.config import BatchingConfig, RMConfig, StrictModel

from .strict_keys import unknown_keys


# Short: while a forward pass runs, arriving requests queue up and join the next batch anyway.
DEFAULT_BATCH_WAIT_S = 0.002


class DeploymentArgs(StrictModel):
    """Replica count (fixed or autoscaled), resources and queue limits of one deployment."""

    num_replicas: Optional[int] = Field(None, ge=1, description="Fixed replica count; leave unset to autoscale.")
    autoscaling_config: Optional[dict[str, Any]] = Field(
        None, description="Ray Serve AutoscalingConfig (min_replicas, max_replicas, target_ongoing_requests, "
        "upscale_delay_s, downscale_delay_s, look_back_period_s, ...). Unknown keys are an error."
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica (also its torch thread count, floored).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica.")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests in flight per replica.")
    max_queued_requests: int = Field(
        -1, ge=-1, description="Requests queued per caller before it gets 503 / BackPressureError; -1: no limit."
    )
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After (seconds) sent with 503 under backpressure.")

    @field_validator("autoscaling_config")
    @classmethod
    def _known_autoscaling_keys(cls, value: Optional[dict]) -> Optional[dict]:
        if value is None:
            return value
        from ray.serve.config import AutoscalingConfig

        bad = unknown_keys(value, AutoscalingConfig)
        if bad:
            raise ValueError(f"unknown autoscaling_config keys (Serve would drop them silently): {bad}")
        AutoscalingConfig.model_validate(value)
        return value

    @model_validator(mode="after")
    def _fixed_or_autoscaled(self) -> "DeploymentArgs":
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set either num_replicas or autoscaling_config, not both")
        return self

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for `serve.deployment(...)`."""
        from ray.serve.config import BackpressureConfig

        scaling: dict[str, Any] = (
            {"autoscaling_config": self.autoscaling_config}
            if self.autoscaling_config is not None
            else {"num_replicas": self.num_replicas or 1}
        )
        return {
            **scaling,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=self.retry_after_s),
        }


class ModelServerArgs(DeploymentArgs):
    """The deployment that holds the model. Batch shape is runtime-tunable through `user_config`."""

    torch_threads: Optional[int] = Field(
        None, ge=1, description="Torch CPU threads of a CPU replica. Unset: the cores the replica may run on. Ray sets "
        "OMP_NUM_THREADS to the actor's num_cpus (1 for a fraction), which would run a CPU forward on one core.",
    )

    batch_wait_timeout_s: float = Field(
        DEFAULT_BATCH_WAIT_S, ge=0, description="How long a batch waits for more requests after its first one arrives."
    )
    max_call_tokens: Optional[int] = Field(
        None, ge=1, description="Most tokens one engine call merges from concurrent requests, counted as computed "
        "(a prefix shared by several items once); the engine splits the call into forwards of the token budget. "
        "Larger calls keep more of a GRPO group's per-sample requests together (their prompt runs once), at the "
        "cost of latency. Unset: 4 x max(batching token budget, max_length), or 1 x with the prefix cache on "
        "(a group split over calls reads its prompt from the cache), measured.",
    )


class BatchTuning(StrictModel):
    """The model deployment's `user_config`: batch shape, changeable at runtime without a restart.

    `batching.max_batch_tokens` is the engine's per-forward budget; the Serve batch queue merges
    requests into one engine call of up to `max_call_tokens` computed tokens (shared prefixes once),
    which the engine splits into forwards. `max_batch_size` caps items per forward.
    Both fields are required: their defaults live in `BatchingConfig` and `ModelServerArgs`.
    """

    batching: BatchingConfig
    batch_wait_timeout_s: float = Field(ge=0)
    max_call_tokens: Optional[int] = Field(None, ge=1)  # None: unset, as in ModelServerArgs


class ApiKeysSource(StrictModel):
    """Where the ingress reads its API keys: never inline in a config that ships."""

    env: Optional[str] = Field(None, description="Environment variable with the keys, comma-separated (e.g. from a "
                               "Kubernetes Secret); read once at start.")
    file: Optional[str] = Field(None, description="File with one key per line ('#' comments), e.g. a mounted Secret; "
                                "re-read when it changes, so keys rotate without a restart.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "ApiKeysSource":
        if (self.env is None) == (self.file is None):
            raise ValueError("api_keys takes exactly one of: env (a variable's name), file (a path)")
        return self


class IngressArgs(DeploymentArgs):
    """The FastAPI ingress: validates, tokenizes (CPU) and fans requests out to the model replicas."""

    colocated: bool = Field(
        False, description="Serve HTTP from the model replicas themselves (no separate ingress deployment): one "
        "process and one hop fewer per request, for small CPU boxes. Scaling, resources and queue limits are then "
        "model_server's; setting this section's deployment keys (replicas, resources, queues, chunks) is an error.")
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per ingress replica.")
    max_ongoing_requests: int = Field(256, ge=1, description="Requests in flight per ingress replica.")
    max_body_bytes: int = Field(16 * 2**20, ge=1, description="Largest request body accepted (413 above).")
    chunk_items: int = Field(
        64, ge=1, description="Items per call to the model deployment: big requests spread over replicas."
    )
    chunks_in_flight: int = Field(
        4, ge=1, description="Chunks of one request sent to the model replicas at a time, so a big request is slow "
        "rather than refused (keep it times chunk_items well under model_server.max_queued_requests) and leaves "
        "room for other callers.",
    )
    max_items_per_request: int = Field(100_000, ge=1, description="Most items in one request (413 above).")
    max_tokens_per_request: int = Field(20_000_000, ge=1, description="Most tokens in one request (413 above).")
    request_timeout_s: float = Field(
        600.0, gt=0, description="A request not done by then ends with 408 and its queued chunks are dropped.")
    api_keys: Optional[ApiKeysSource] = Field(
        None, description="When set, every HTTP endpoint but /health needs `Authorization: Bearer <key>` (401 "
        "otherwise). Unset: no authentication (keep the service on a private network).")


    @model_validator(mode="after")
    def _colocated_has_no_deployment_of_its_own(self) -> "IngressArgs":
        moot = sorted(self.model_fields_set & _INGRESS_DEPLOYMENT_KEYS) if self.colocated else []
        if moot:
            raise ValueError(f"colocated: true serves HTTP from the model replicas, so {', '.join(moot)} would not "
                             "apply: set them under model_server, or drop them")
        return self


# What only a separate ingress deployment has; the request settings (limits, body size, keys) apply either way.
_INGRESS_DEPLOYMENT_KEYS = {*DeploymentArgs.model_fields, "chunk_items", "chunks_in_flight"}


class ServeArgs(StrictModel):
    """Arguments of `serve.app:build_app` (the `args:` of an application in a Serve config)."""

    rm: RMConfig = Field(default_factory=RMConfig, description="What to score with: model, tokenization, batching.")
    model_server: ModelServerArgs = Field(default_factory=ModelServerArgs)
    ingress: IngressArgs = Field(default_factory=IngressArgs)

    @model_validator(mode="after")
    def _gpus_match_model_placement(self) -> "ServeArgs":
        model, gpus = self.rm.model, self.model_server.num_gpus
        if model.device_map == "auto" and gpus < 1:
            raise ValueError("rm.model.device_map: auto spreads the model over the replica's GPUs; "
                             "set model_server.num_gpus >= 1")
        if gpus > 1 and model.device_map is None:
            raise ValueError(f"model_server.num_gpus is {gpus} but the model loads on one device; "
                             "set rm.model.device_map: auto to spread it, or num_gpus: 1")
        if model.device.startswith("cuda") and gpus == 0:
            raise ValueError(f"rm.model.device is {model.device!r} but model_server.num_gpus is 0")
        return self

    def batch_tuning(self) -> BatchTuning:
        """The model deployment's initial user_config, from `rm.batching` and the batch wait."""
        server = self.model_server
        return BatchTuning(batching=self.rm.batching, batch_wait_timeout_s=server.batch_wait_timeout_s,
                           max_call_tokens=server.max_call_tokens)
