"""Handle API and rmcluster.client, called from a Ray actor as an RL trainer does, against the references."""

import pytest

from rmcluster.config import RMConfig
from rmcluster.demo_model import SEED_PAIR
from rmcluster.protocol import InvalidInputError, ItemRejectedError
from tests.conversations import varied_conversations

from .conftest import APP, MAX_LENGTH

pytestmark = pytest.mark.ray

TOL = 1e-4


@pytest.fixture(scope="module")
def trainer(reward_app, trainer_cls):
    return trainer_cls.remote()


@pytest.fixture(scope="module")
def engine(demo_dir):
    from rmcluster.engine import ScoringEngine

    return ScoringEngine.from_config(RMConfig(model="demo", tokenization={"max_length": MAX_LENGTH}))


def _close(a, b):
    return len(a) == len(b) and all(abs(x - y) < TOL for x, y in zip(a, b))


def _pairs():
    return [
        {k: SEED_PAIR[k] for k in ("prompt", "chosen", "rejected")},
        {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4",
         "rejected": [{"role": "assistant", "content": "5"}]},
    ]


def test_handle_methods_match_reference(trainer, reference):
    import ray

    convs = varied_conversations(9, seed=21, max_words=200)
    scores = ray.get(trainer.handle_call.remote(APP, "score", convs))
    assert isinstance(scores, list) and all(isinstance(s, float) for s in scores)
    assert _close(scores, reference.scores(convs))

    pairs = _pairs()
    got = ray.get(trainer.handle_call.remote(APP, "score_pairs", pairs))
    want = [[reference.score(_conv(p["prompt"], p[k])) for k in ("chosen", "rejected")] for p in pairs]
    assert all(_close(g, w) for g, w in zip(got, want)) and len(got) == 2

    groups = [{"prompt": "pick one", "responses": ["a", "b", "c"]}, {"prompt": "again", "responses": ["d"]}]
    got = ray.get(trainer.handle_call.remote(APP, "score_responses", groups))
    want = [[reference.score(_conv(g["prompt"], r)) for r in g["responses"]] for g in groups]
    assert [len(g) for g in got] == [3, 1] and all(_close(g, w) for g, w in zip(got, want))
    for method in ("score", "score_pairs", "score_responses"):  # a trainer's empty batch
        assert ray.get(trainer.handle_call.remote(APP, method, [])) == []


def test_score_records_rows_equal_pipeline(trainer, engine):
    import ray

    from rmcluster.pipeline import score_records

    records = [
        SEED_PAIR,
        {"id": "bon", "prompt": "pick a number", "responses": ["seven", "twelve"]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"id": "tmpl", "text": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"},
        {"id": "half", "prompt": "q"},
        {"id": "long", "messages": [{"role": "user", "content": "apple " * (MAX_LENGTH + 10)}]},
    ]
    got = ray.get(trainer.handle_call.remote(APP, "score_records", records))
    want = score_records(engine, records)
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if k not in ("score", "logits")} == \
            {k: v for k, v in w.items() if k not in ("score", "logits")}
        assert (g["score"] is None) == (w["score"] is None)
        if w["score"] is not None:
            assert abs(g["score"] - w["score"]) < TOL and _close(g["logits"], w["logits"])
    assert sum(r["error"] is not None for r in got) == 2


KINDS = ["http", "handle", "handle-via-ingress"]


def _client(trainer, kind, reward_app, **kwargs):
    """HTTP; the handle client tokenizing in the trainer and calling the model deployment (one hop); or
    through the ingress (two hops)."""
    import ray

    if kind == "http":
        return ray.get(trainer.http_client.remote(reward_app, **kwargs))
    ray.get(trainer.handle_client.remote(APP, one_hop=kind == "handle", **kwargs))
    assert ray.get(trainer.client_attr.remote("hops")) == (1 if kind == "handle" else 2)


@pytest.mark.parametrize("kind", KINDS)
def test_clients_chunk_in_order_and_match_reference(kind, trainer_cls, reward_app, reference):
    import ray

    trainer = trainer_cls.remote()
    _client(trainer, kind, reward_app, chunk_size=4, max_in_flight=3)
    convs = varied_conversations(23, seed=22, max_words=200)  # 6 chunks, 3 in flight
    assert _close(ray.get(trainer.client_call.remote("score", convs)), reference.scores(convs))
    ids = [reference.ids(c)[0].tolist() for c in convs[:6]]
    assert _close(ray.get(trainer.client_call.remote("score_token_ids", ids)), reference.scores(convs[:6]))

    pairs = _pairs()
    got = ray.get(trainer.client_call.remote("score_pairs", pairs))
    assert all(_close(g, [reference.score(_conv(p["prompt"], p[k])) for k in ("chosen", "rejected")])
               for g, p in zip(got, pairs))
    got = ray.get(trainer.client_call.remote("score_responses", [{"prompt": "p", "responses": ["x", "y"]}]))
    assert _close(got[0], [reference.score(_conv("p", r)) for r in ("x", "y")])


@pytest.mark.parametrize("kind", KINDS)
def test_client_errors_index_the_callers_list(kind, trainer_cls, reward_app):
    import ray

    trainer = trainer_cls.remote()
    _client(trainer, kind, reward_app, chunk_size=4)
    convs = varied_conversations(10, seed=23, max_words=200)
    convs[6] = [{"role": "user", "content": "apple " * (MAX_LENGTH + 10)}]  # chunk 1, position 2
    with pytest.raises(ItemRejectedError) as info:
        ray.get(trainer.client_call.remote("score", convs))
    assert info.value.item == 6
    convs[6] = [{"role": "user"}]
    with pytest.raises(InvalidInputError) as info:
        ray.get(trainer.client_call.remote("score", convs))
    assert info.value.item == 6


def _conv(prompt, response):
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    response = [{"role": "assistant", "content": response}] if isinstance(response, str) else response
    return prompt + response
