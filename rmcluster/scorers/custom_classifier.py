"""Custom classifiers: checkpoints with their own head code (ArmoRM, QRM, GRM, InternLM2-reward), or a causal
LM read through one vocabulary logit (Nemotron-70B-Reward-HF).

The reward is read from the checkpoint's own forward, by attribute (ArmoRM's `score`) or tuple
position (GRM's `_, _, reward`), and named objectives from another field (ArmoRM's `rewards`,
QRM's `reward_quantiles` averaged over quantiles). Batching follows the load-time probe of
`own_forward` (right- or left-padded, else one at a time); custom code is never packed. The
`token_logit` variant runs on the shared decoder runner instead, so it packs like any decoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..config import CustomClassifierModel
from ..encoding import EncodedItem
from ..outputs import ScoreOutput
from ..records import ScoreItem
from ..templating import ChatEncoder
from .base import Scorer
from .decoder import DecoderRunner, DecoderScorer, capped_logits, lm_head_rows
from .own_forward import OwnForwardRunner, PaddedBatch, output_field, random_items

if TYPE_CHECKING:
    from ..config import RMConfig

# Conversations the probe scores besides random ids: real templated text, of different lengths.
PROBE_CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."},
     {"role": "assistant", "content": "Blue, like the sky on a clear day in the summer."}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
     {"role": "user", "content": "how are you?"}, {"role": "assistant", "content": "fine, thanks"}],
]


def probe_items(encoder: ChatEncoder, chats: Sequence[list[dict[str, Any]]] = PROBE_CHATS) -> list[EncodedItem]:
    return [encoder.encode(ScoreItem.conversation(str(i), chat)) for i, chat in enumerate(chats)]


def pad_id_of(model: Any, encoder: ChatEncoder) -> int:
    """The model's own pad id (custom heads search for it), else the tokenizer's, else EOS as filler: the
    probe then shows whether the head honours the attention mask."""
    for pad in (getattr(model.config, "pad_token_id", None), encoder.tokenizer.pad_token_id,
                encoder.tokenizer.eos_token_id):
        if isinstance(pad, int):
            return pad
    return 0


class CustomClassifierScorer(Scorer):
    def __init__(self, model: Any, encoder: ChatEncoder, settings: CustomClassifierModel, model_name: str):
        self.model = model
        self.encoder = encoder
        self.settings = settings
        self.model_name = model_name
        self.output_names: tuple[str, ...] = ()
        pad = pad_id_of(model, encoder)
        vocab = int(model.get_input_embeddings().num_embeddings)
        probes = probe_items(encoder) + random_items(vocab, [pad])
        self.runner = OwnForwardRunner(model, pad, model_name, self._read, probes)
        self.device_type = self.runner.device_type

    @classmethod
    def from_config(cls, config: "RMConfig", encoder: ChatEncoder) -> Scorer:
        from ..model_loading import load_model

        settings = config.model
        assert isinstance(settings, CustomClassifierModel)
        model, _ = load_model(settings)
        if settings.token_logit is not None:
            return TokenLogitScorer(model, encoder, settings.token_logit, settings.name, settings.compile)
        return cls(model, encoder, settings, settings.name)

    def _read(self, output: Any, batch: PaddedBatch) -> list[ScoreOutput]:
        rows = len(batch.lengths)
        reward = output_field(output, self.settings.reward_output, "reward_output")
        scores = torch.as_tensor(reward).float().reshape(rows, -1)[:, 0].tolist()
        values: list[dict[str, float] | None] = [None] * rows
        if self.settings.values_output is not None:
            field = torch.as_tensor(output_field(output, self.settings.values_output, "values_output")).float()
            per_row = field.reshape(rows, field.shape[1] if field.dim() > 1 else 1, -1).mean(-1)  # QRM: quantiles
            names = self._names(per_row.shape[1])
            values = [dict(zip(names, v)) for v in per_row.tolist()]
        return [ScoreOutput(s, values=v) for s, v in zip(scores, values)]

    def _names(self, count: int) -> tuple[str, ...]:
        if not self.output_names:
            given = self.settings.value_names
            if given is not None and len(given) != count:
                raise ValueError(f"model.value_names has {len(given)} names, but the model gives {count} values")
            self.output_names = tuple(given) if given else tuple(f"objective_{i}" for i in range(count))
        return self.output_names

    def forward(self, batch: Sequence[EncodedItem]) -> list[ScoreOutput]:
        return self.runner.forward(batch)

    def health(self) -> None:
        self.runner.health()


class TokenLogitScorer(DecoderScorer):
    """A causal LM read as a classifier: the reward is one vocabulary logit after the last token."""

    def __init__(self, model: Any, encoder: ChatEncoder, token_id: int, model_name: str, compile: bool = False):
        vocab = model.get_output_embeddings().weight.shape[0]
        if not 0 <= token_id < vocab:
            raise ValueError(f"model.token_logit {token_id} is outside the vocabulary (0..{vocab - 1})")
        self.encoder = encoder
        self.head = lm_head_rows(model, [token_id])
        super().__init__(DecoderRunner(model, encoder.tokenizer.pad_token_id, model_name, compile), model_name)

    def read(self, hidden: list[torch.Tensor], items: Sequence[EncodedItem]) -> list[ScoreOutput]:
        logits = capped_logits(self.model, self.head(torch.cat(hidden)).float())
        return [ScoreOutput(float(v)) for v in logits[:, 0].cpu().tolist()]
