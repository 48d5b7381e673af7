"""DPO implicit reward: how much more likely the policy makes a response than its reference model does.

    score = beta * (sum of log p_policy(response tokens) - sum of log p_reference(response tokens))

The response tokens are the full templated conversation's tokens after the templated prompt (with
its generation prompt), by the exact-prefix rule the shared prompt uses; an item whose prompt is
not an exact token prefix is an error row (rmcluster/templating.py). Without a reference,
RewardBench's reference-free variants: the sum, the average (sum / tokens) or "norm" (minus the L2
norm of the per-token log-probs), times beta.

Both models run on decoder runners, reading the hidden states at the positions that predict each
response token (the prompt's last token through the response's second to last), so padded, packed
and shared-prompt batches apply: with shared prompts, the prompt runs once per group on both models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from ..encoding import EncodedItem
from ..outputs import ScoreOutput
from ..packing import PackUnit
from ..templating import ChatEncoder
from .decoder import DecoderRunner
from .base import Scorer

if TYPE_CHECKING:
    from ..config import DPOModel, RMConfig

# Log-softmax over the vocabulary for this many positions at a time: bounds memory at large vocabularies.
POSITIONS_PER_CHUNK = 1024


def response_positions(item: EncodedItem) -> list[int]:
    """The positions whose next-token logits give the response tokens' log-probs."""
    return list(range(item.prompt_tokens - 1, item.num_tokens - 1))


class DPOScorer(Scorer):
    def __init__(self, policy: Any, reference: Optional[Any], encoder: ChatEncoder, settings: "DPOModel",
                 model_name: str):
        self.encoder = encoder
        self.settings = settings
        self.model_name = model_name
        pad = encoder.tokenizer.pad_token_id
        self.policy = DecoderRunner(policy, pad, model_name, settings.compile)
        self.reference = DecoderRunner(reference, pad, f"{model_name} reference", settings.compile) \
            if reference is not None else None
        if self.reference is not None and self.reference.vocab_size != self.policy.vocab_size:
            raise ValueError(f"model.reference has {self.reference.vocab_size} tokens, the policy "
                             f"{self.policy.vocab_size}: DPO needs one tokenizer for both")
        self.device_type = self.policy.device_type
        runners = [self.policy] + ([self.reference] if self.reference is not None else [])
        self.supports_packing = all(r.supports_packing for r in runners)
        self.supports_prefix_cache = all(r.supports_prefix_cache for r in runners)
        self.output_names = ("policy_logp", "reference_logp", "response_tokens") if self.reference is not None \
            else ("policy_logp", "response_tokens")

    @classmethod
    def from_config(cls, config: "RMConfig", encoder: ChatEncoder) -> "DPOScorer":
        from ..checkpoint import resolve_model_path
        from ..config import DPOModel
        from ..model_loading import load_model

        settings = config.model
        assert isinstance(settings, DPOModel)
        policy, _ = load_model(settings)
        reference = None
        if settings.reference is not None:
            reference, _ = load_model(settings, path=resolve_model_path(settings.reference, "dpo_reference"))
        return cls(policy, reference, encoder, settings, settings.name)

    def forward(self, batch: Sequence[EncodedItem]) -> list[ScoreOutput]:
        positions = [response_positions(e) for e in batch]
        policy = self._logps(self.policy, self.policy.padded([e.input_ids for e in batch], positions), batch)
        reference = None
        if self.reference is not None:
            reference = self._logps(self.reference, self.reference.padded([e.input_ids for e in batch], positions),
                                    batch)
        return self._outputs(policy, reference)

    def forward_packed(self, units: Sequence[PackUnit], items: Sequence[EncodedItem]) -> list[ScoreOutput]:
        positions = [response_positions(e) for e in items]
        policy = self._logps(self.policy, self.policy.packed(units, positions), items)
        reference = None
        if self.reference is not None:
            reference = self._logps(self.reference, self.reference.packed(units, positions), items)
        return self._outputs(policy, reference)

    def configure_prefix_cache(self, tokens: int, min_shared: int) -> None:
        for runner in (self.policy, self.reference):
            if runner is not None:
                runner.configure_prefix_cache(tokens, min_shared)

    def prefix_cache_stats(self) -> dict[str, int]:
        return self.policy.prefix_cache.stats()

    @torch.inference_mode()
    def _logps(self, runner: DecoderRunner, hidden: list[torch.Tensor],
               items: Sequence[EncodedItem]) -> list[torch.Tensor]:
        """Per item, the log-prob of each response token under `runner`'s model (float32)."""
        head = runner.model.get_output_embeddings()
        flat = torch.cat(hidden)
        targets = torch.tensor([t for e in items for t in e.input_ids[e.prompt_tokens:]], device=flat.device)
        out = []
        for start in range(0, flat.shape[0], POSITIONS_PER_CHUNK):
            logits = head(flat[start:start + POSITIONS_PER_CHUNK]).float()
            cap = getattr(runner.model.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            picked = targets[start:start + POSITIONS_PER_CHUNK]
            out.append(logits.log_softmax(-1).gather(1, picked[:, None])[:, 0])
        return list(torch.split(torch.cat(out).cpu(), [len(h) for h in hidden]))

    def _outputs(self, policy: list[torch.Tensor], reference: Optional[list[torch.Tensor]]) -> list[ScoreOutput]:
        beta = self.settings.beta
        out = []
        for k, lp in enumerate(policy):
            values = {"policy_logp": float(lp.double().sum()), "response_tokens": float(len(lp))}
            if reference is not None:
                values["reference_logp"] = float(reference[k].double().sum())
                score = values["policy_logp"] - values["reference_logp"]
            elif self.settings.reference_free == "avg":
                score = values["policy_logp"] / len(lp)
            elif self.settings.reference_free == "norm":
                score = -float(torch.linalg.vector_norm(lp.double()))
            else:
                score = values["policy_logp"]
            out.append(ScoreOutput(beta * score, values=values))
        return out

    def health(self) -> None:
        self.policy.health()
