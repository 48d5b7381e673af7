"""The last decoder layer computed at the read rows only: same hidden states as the whole layer, at
every position a scorer may read (last tokens, positions inside a shared prompt, several per item),
and the HF loop's scores; layers of another shape, or that compute something else, run whole."""

import random

import pytest
import torch

from rmcluster.config import RMConfig
from rmcluster.engine import ScoringEngine
from rmcluster.last_layer_rows import last_layer
from rmcluster.packing import PackUnit
from rmcluster.records import conversation_items
from tests.conversations import varied_conversations
from tests.reference import ReferenceLoop

TOL = 1e-4


def _engine(path) -> ScoringEngine:
    return ScoringEngine.from_config(RMConfig(
        model={"name": str(path), "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"},
        batching={"packing": "on"}))


@pytest.fixture(scope="module")
def engine(demo_dir):
    return _engine(demo_dir)


def test_last_layer_mlp_sees_one_row_per_item_and_scores_match_the_hf_loop(demo_dir, engine):
    runner = engine.scorer.runner
    assert runner.last_layer is not None
    conversations = varied_conversations(24, seed=5)
    prompt = [{"role": "user", "content": "one prompt for several responses " * 6}]
    conversations += [prompt + [{"role": "assistant", "content": f"answer number {k} " * (k + 1)}] for k in range(6)]
    rows_seen: list[int] = []
    hook = runner.last_layer.mlp.register_forward_pre_hook(lambda _m, args: rows_seen.append(args[0].shape[1]))
    try:
        results = engine.score_items(conversation_items(conversations))
    finally:
        hook.remove()
    assert sum(rows_seen) == len(conversations)  # the MLP ran on the scored rows, nothing else
    reference = ReferenceLoop(demo_dir).scores(conversations)
    assert max(abs(r.score - s) for r, s in zip(results, reference)) < TOL


def test_pruned_hidden_states_equal_the_whole_layer_at_any_positions(engine):
    runner = engine.scorer.runner
    layer = runner.last_layer
    rng = random.Random(3)
    vocab = runner.vocab_size

    def ids(n):
        return [rng.randrange(vocab) for _ in range(n)]

    prompt = ids(30)
    near_miss = prompt[:-1] + [(prompt[-1] + 1) % vocab]  # one token off: not the same prompt
    units = [PackUnit.single(ids(17), 0), PackUnit(prompt, [ids(5), ids(1), ids(9)], [1, 2, 3]),
             PackUnit.single(near_miss + ids(4), 4), PackUnit(prompt[:12], [prompt[12:], ids(3)], [5, 6])]
    lengths = [17, 35, 31, 39, 34, 30, 15]
    # Last tokens, positions inside the shared prompt, several per item, the first token, repeats.
    positions = [[16], [0, 29, 34], [30], [5, 31, 38, 38], [33], [29, 11, 0], [14, 12]]
    assert all(max(p) < n for p, n in zip(positions, lengths))
    pruned = runner.packed(units, positions)
    runner.last_layer = None
    try:
        whole = runner.packed(units, positions)
    finally:
        runner.last_layer = layer
    for a, b in zip(pruned, whole):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-5


def test_a_layer_of_another_shape_is_not_pruned(demo_dir):
    engine = _engine(demo_dir)
    backbone = engine.scorer.runner.backbone
    assert last_layer(backbone) is not None
    backbone.layers[-1].extra_norm = torch.nn.Identity()  # e.g. Gemma's pre/post feed-forward norms
    assert last_layer(backbone) is None


def test_a_last_layer_that_computes_something_else_fails_the_probe_and_runs_whole(demo_dir):
    from transformers import AutoModelForSequenceClassification

    from rmcluster.scorers.decoder import DecoderRunner

    model = AutoModelForSequenceClassification.from_pretrained(demo_dir, num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa").eval()
    layer = model.model.layers[-1]

    class DoubledMLP(type(layer)):  # same children, another forward: the MLP's output counts twice
        def forward(self, hidden_states, **kwargs):
            hidden_states = hidden_states + self.self_attn(hidden_states=self.input_layernorm(hidden_states),
                                                           **kwargs)[0]
            return hidden_states + 2 * self.mlp(self.post_attention_layernorm(hidden_states))

    layer.__class__ = DoubledMLP
    runner = DecoderRunner(model, None, "doubled")
    assert runner.supports_packing and runner.last_layer is None
    ids = list(range(5, 40))
    packed = runner.packed([PackUnit.single(ids, 0)], [[34]])[0]
    with torch.inference_mode():
        whole = model.model(torch.tensor([ids])).last_hidden_state[0, 34]
    assert (packed[0] - whole).abs().max().item() < 1e-5
