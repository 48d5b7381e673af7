"""Wire protocol and client module: cheap to import, errors that survive pickling and name item and field."""

import pickle
import subprocess
import sys

import pytest
from pydantic import ValidationError

from rmcluster.protocol import (
    InvalidInputError, ItemRejectedError, ScoreRequest, ServiceOverloadedError, invalid_input,
)


def test_client_and_protocol_import_no_ray_httpx_or_torch():
    code = ("import sys, rmcluster.client, rmcluster.protocol; "
            "bad = [m for m in ('ray', 'httpx', 'torch', 'transformers', 'fastapi') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_keep_their_fields_across_pickling():
    err = pickle.loads(pickle.dumps(InvalidInputError("conversations.2.0.content: Field required", 2,
                                                      "conversations.2.0.content")))
    assert (err.item, err.field, err.status_code) == (2, "conversations.2.0.content", 422)
    assert isinstance(err, ValueError) and str(err).startswith("conversations.2")
    over = pickle.loads(pickle.dumps(ServiceOverloadedError("busy", retry_after_s=3.0)))
    assert over.retry_after_s == 3.0 and over.status_code == 503
    assert ItemRejectedError("x", item=1).to_response().error.code == 400


@pytest.mark.parametrize(
    "body, item, field",
    [
        ({"conversations": [[{"role": "user", "content": "a"}], [{"role": "user"}]]}, 1, "conversations.1.0.content"),
        ({"prompt": "p", "chosen": [{"role": "assistant"}], "rejected": "r"}, 0, "chosen.0.content"),
        ({"prompt": "p", "responses": []}, None, "responses"),
        ({"conversations": [[]]}, 0, "conversations.0"),
    ],
)
def test_validation_errors_name_the_item_and_field(body, item, field):
    with pytest.raises(ValidationError) as info:
        ScoreRequest.model_validate(body)
    err = invalid_input(info.value)
    assert (err.item, err.field) == (item, field) and field in err.message


def test_score_request_takes_exactly_one_shape():
    ScoreRequest.model_validate({"prompt": "p", "chosen": "a", "rejected": "b"})
    for bad in ({}, {"conversations": [[{"role": "user", "content": "x"}]], "prompt": "p"},
                {"responses": ["a"]}, {"prompt": "p", "responses": ["a"], "chosen": "c", "rejected": "r"}):
        with pytest.raises(ValidationError):
            ScoreRequest.model_validate(bad)


def test_score_request_takes_several_pairs_and_groups_as_records():
    pairs = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": ["s1", "s2"], "rejected": "c"}]
    request = ScoreRequest.model_validate({"pairs": pairs})
    assert [type(r).__name__ for r in request.records()] == ["PairRecord", "PairRecord"]
    request = ScoreRequest.model_validate({"groups": [{"prompt": "p", "responses": ["a", "b"]}]})
    assert [len(r.responses) for r in request.records()] == [2]
    for bad in ({"pairs": pairs, "prompt": "p"}, {"pairs": pairs, "groups": []},
                {"pairs": [{"prompt": "p", "chosen": "a"}]}):
        with pytest.raises(ValidationError):
            ScoreRequest.model_validate(bad)


def test_the_http_client_sends_pairs_and_groups_as_records_not_conversations():
    """What goes on the wire: the server must see each pair whole (shared prompts, pairwise judges)."""
    import json

    import httpx

    from rmcluster.client import RewardClient

    sent = []

    def server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        (shape, records), = body.items()
        n = {"pairs": lambda r: 2, "groups": lambda r: len(r["responses"]), "conversations": lambda r: 1}[shape]
        scores = [float(k) for k in range(sum(n(r) for r in records))]
        results = [{"score": s, "num_tokens": 1, "truncated": False} for s in scores]
        return httpx.Response(200, json={"model": "m", "scores": scores, "results": results,
                                         "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    client = RewardClient("http://rm", chunk_size=4)
    client._http = httpx.Client(base_url="http://rm", transport=httpx.MockTransport(server))
    pairs = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(3)]
    assert client.score_pairs(pairs) == [[0.0, 1.0], [2.0, 3.0], [0.0, 1.0]]  # chunks of at most 4 items
    assert [list(b) for b in sent] == [["pairs"], ["pairs"]] and [len(b["pairs"]) for b in sent] == [2, 1]
    sent.clear()
    groups = [{"prompt": "p", "responses": ["a", "b", "c"]}, {"prompt": "q", "responses": ["d", "e"]}]
    assert client.score_responses(groups) == [[0.0, 1.0, 2.0], [0.0, 1.0]]
    assert [list(b) for b in sent] == [["groups"], ["groups"]]


@pytest.mark.parametrize("status", [500, 502, 504])
def test_the_http_client_retries_a_proxys_bare_error_but_not_the_apps_own(status):
    """Serve's proxy answers a replica killed mid-request with a bare 500 (tests/serve/test_replica_kill.py, colocated);
    the app's own errors carry its error shape and are final."""
    import httpx

    from rmcluster.client import ProxyError, RetryPolicy, RewardClient
    from rmcluster.protocol import ScoringFailedError

    answers: list[tuple[int, dict | str]] = []  # (status, JSON body or text), one per request

    def server(request: httpx.Request) -> httpx.Response:
        status, body = answers.pop(0)
        return httpx.Response(status, text=body) if isinstance(body, str) else httpx.Response(status, json=body)

    ok = (200, {"model": "m", "scores": [1.5], "results": [{"score": 1.5, "num_tokens": 1, "truncated": False}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}})
    client = RewardClient("http://rm", retry=RetryPolicy(max_retries=2, backoff_s=0.01))
    client._http = httpx.Client(base_url="http://rm", transport=httpx.MockTransport(server))
    conv = [{"role": "user", "content": "hi"}]
    answers[:] = [(status, "Internal Server Error"), ok]
    assert client.score([conv]) == [1.5] and client.retry.retries == 1 and not answers

    ours = {"error": {"message": "boom", "type": "internal_error", "code": status}}
    answers[:] = [(status, ours), ok]
    with pytest.raises(ScoringFailedError, match="boom") as caught:
        client.score([conv])
    assert not isinstance(caught.value, ProxyError) and client.retry.retries == 1 and len(answers) == 1

    answers[:] = [(status, "Bad Gateway")] * 3
    with pytest.raises(ProxyError):  # retried max_retries times, then the last error
        client.score([conv])
    assert client.retry.retries == 3 and not answers
