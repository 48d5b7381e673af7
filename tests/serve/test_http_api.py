"""The HTTP API against the independent reference loop: shapes, status codes, and a replica that keeps serving."""

import math

import httpx
import pytest

from rmcluster.demo_model import SEED_PAIR
from tests.conversations import varied_conversations

from .conftest import MAX_BODY_BYTES, MAX_LENGTH

pytestmark = pytest.mark.ray

TOL = 1e-4


@pytest.fixture(scope="module")
def http(reward_app):
    with httpx.Client(base_url=reward_app, timeout=120) as client:
        yield client


def _turns(prompt, response):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def test_score_conversations_match_reference(http, reference):
    convs = varied_conversations(12, seed=7, max_words=200)
    body = http.post("/v1/score", json={"conversations": convs}).json()
    expected = reference.scores(convs)
    assert body["model"] == "demo" and len(body["scores"]) == len(convs)
    for got, want, result, conv in zip(body["scores"], expected, body["results"], convs):
        assert abs(got - want) < TOL
        assert result["score"] == got and result["logits"] == [got] and result["truncated"] is False
        assert result["num_tokens"] == reference.ids(conv).shape[-1]
    assert body["usage"]["prompt_tokens"] == sum(r["num_tokens"] for r in body["results"])


def test_score_pair_and_responses_shapes(http, reference):
    pair = {k: SEED_PAIR[k] for k in ("prompt", "chosen", "rejected")}
    scores = http.post("/v1/score", json=pair).json()["scores"]
    want = [reference.score(_turns(pair["prompt"], pair[k])) for k in ("chosen", "rejected")]
    assert len(scores) == 2 and all(abs(a - b) < TOL for a, b in zip(scores, want))

    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    responses = ["4", [{"role": "assistant", "content": "four"}], "5"]
    scores = http.post("/v1/score", json={"prompt": prompt, "responses": responses}).json()["scores"]
    convs = [prompt + [{"role": "assistant", "content": "4"}], prompt + responses[1],
             prompt + [{"role": "assistant", "content": "5"}]]
    assert all(abs(a - b) < TOL for a, b in zip(scores, reference.scores(convs)))


def test_classify_activation_and_models_health_docs(http, reference):
    conv = _turns("hello", "hi there")
    raw = http.post("/classify", json={"messages": conv}).json()
    assert abs(raw["data"][0]["probs"][0] - reference.score(conv)) < TOL  # raw logits by default
    sig = http.post("/classify", json={"messages": conv, "use_activation": True}).json()
    assert abs(sig["data"][0]["probs"][0] - 1 / (1 + math.exp(-raw["data"][0]["probs"][0]))) < 1e-6
    old = http.post("/classify", json={"messages": conv, "activation": True}).json()
    assert old["data"][0]["probs"] == sig["data"][0]["probs"]

    models = http.get("/v1/models").json()
    assert models["data"][0]["id"] == "demo" and models["data"][0]["max_model_len"] == MAX_LENGTH
    assert http.get("/health").json() == {"status": "ok", "model": "demo"}
    spec = http.get("/openapi.json").json()
    assert {"/v1/score", "/get_reward", "/classify", "/v1/models", "/health"} <= set(spec["paths"])
    assert http.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "body, item, field",
    [
        ({"conversations": [[{"role": "user", "content": "ok"}], [{"role": "user"}]]}, 1, "conversations.1.0.content"),
        ({"prompt": "p", "responses": ["a", 7]}, 1, "responses.1"),
        ({"prompt": "p", "chosen": "a", "rejected": [{"role": "assistant"}]}, 1, "rejected.0.content"),
        ({"prompt": "p", "chosen": "a"}, None, None),
        ({"conversations": [[{"role": "user", "content": "x"}]], "extra": 1}, None, "extra"),
    ],
)
def test_invalid_request_is_422_naming_item_and_field(http, body, item, field):
    response = http.post("/v1/score", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == 422 and error["item"] == item and error["field"] == field
    assert (field or "") in error["message"]


def test_bad_inputs_get_their_codes_and_the_replica_keeps_serving(http, reference):
    ok = [_turns("still", "serving")]
    too_long = _turns("apple " * (MAX_LENGTH + 50), "no")
    response = http.post("/v1/score", json={"conversations": [ok[0], too_long]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["item"] == 1 and f"over max_length {MAX_LENGTH}" in error["message"]

    big = {"conversations": [_turns("x" * 1000, "y")] * (MAX_BODY_BYTES // 1000 + 10)}
    response = http.post("/v1/score", json=big)
    assert response.status_code == 413 and response.json()["error"]["code"] == 413
    chunked = http.post("/v1/score", content=iter([b'{"conversations": ['] + [b"1," * 4096] * 40 + [b"1]}"]),
                        headers={"content-type": "application/json"})
    assert chunked.status_code == 413  # no Content-Length: counted as it streams

    assert http.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert http.post("/get_reward", json={"query": [""]}).status_code == 400  # tokenizes to nothing
    assert http.post("/classify", json={"input": "a", "messages": ok[0]}).status_code == 422

    after = http.post("/v1/score", json={"conversations": ok})
    assert after.status_code == 200 and abs(after.json()["scores"][0] - reference.score(ok[0])) < TOL
