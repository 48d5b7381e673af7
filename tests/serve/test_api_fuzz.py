"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): every endpoint, bounded here; a longer run is
recorded in bench/RESULTS.md. No 5xx, responses as documented (a 4xx in the error shape), and no replica
restart. Then the hostile inputs the schema cannot express: deep nesting, huge numbers, NaN, invalid UTF-8,
10^5 tiny items, one item of 10^7 characters, empty lists."""

import json
import os

import httpx
import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("RMCLUSTER_FUZZ_EXAMPLES", "25"))  # per endpoint; bench/RESULTS.md has a long run


@pytest.fixture(scope="module")
def api_schema(reward_app):
    return schemathesis.openapi.from_url(f"{reward_app}/openapi.json")


@pytest.fixture(scope="module")
def replica_pid(reward_app):
    from ray import serve

    from .conftest import APP

    model = serve.get_deployment_handle("RewardModelServer", APP)
    before = model.info.remote().result()["pid"]
    yield
    assert model.info.remote().result()["pid"] == before, "the model replica restarted during fuzzing"


def _fuzz(operation, mode, replies):
    from hypothesis import given
    from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        response = case.call(timeout=120)
        replies.append(response.status_code)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
        # Status code, content type and body as the schema documents them. Left out: whether schema-valid data
        # is accepted and invalid data refused, since the schema cannot say "exactly one shape" or "fits
        # max_length"; those answers are 4xx in the error shape, checked below.
        case.validate_response(response, excluded_checks=[positive_data_acceptance, negative_data_rejection])
        if 400 <= response.status_code < 500:
            error = response.json()["error"]
            assert error["code"] == response.status_code and error["type"] and error["message"]

    run()


def test_every_endpoint_answers_as_documented(api_schema, replica_pid):
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    # (pytest 9 cannot host schemathesis' own pytest plugin, so its strategies run under hypothesis directly.)
    replies: dict[str, list[int]] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, replies.setdefault(f"{operation.label} {mode.value}", []))
            except Unsatisfiable:  # a GET without parameters has no invalid input
                assert mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET", operation.label
    print({k: f"{len(v)} requests, {sum(c >= 500 for c in v)} 5xx" for k, v in replies.items()})
    assert sum(map(len, replies.values())) >= 5 * EXAMPLES  # every endpoint got its examples


def _post(url, path, content, headers=None):
    return httpx.post(url + path, content=content, headers={"content-type": "application/json", **(headers or {})},
                      timeout=120)


HOSTILE = {
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "deep object": '{"conversations": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}",
    "huge number": '{"input_ids": [[' + "9" * 5000 + "]]}",
    "huge id": '{"input_ids": [[99999999999999999999]]}',
    "NaN": '{"input_ids": [[NaN]]}',
    "Infinity": '{"model": "demo", "input": [Infinity]}',
    "wrong types": '{"conversations": [[{"role": 1, "content": {"x": []}}]]}',
    "lone surrogate": '{"conversations": [[{"role": "user", "content": "\\ud800"}]]}',
    "10^5 tiny items": json.dumps({"input_ids": [[1]] * 100_000}),
    "10^7 characters": json.dumps({"conversations": [[{"role": "user", "content": "a" * 10_000_000}]]}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bodies_get_a_documented_4xx(reward_app, replica_pid, name):
    for path in ("/v1/score", "/classify", "/get_reward"):
        r = _post(reward_app, path, HOSTILE[name].encode("utf-8", "surrogatepass"))
        assert 400 <= r.status_code < 500, (name, path, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert error["code"] == r.status_code, (name, path, error)


def test_invalid_utf8_and_empty_lists(reward_app, replica_pid):
    r = _post(reward_app, "/v1/score", b'{"conversations": [[{"role": "user", "content": "\xff\xfe"}]]}')
    assert r.status_code in (400, 422) and r.json()["error"]["code"] == r.status_code, r.text  # not JSON text
    for path, body in (("/v1/score", {"conversations": []}), ("/v1/score", {"pairs": []}),
                       ("/v1/score", {"groups": []}), ("/v1/score", {"input_ids": []}),
                       ("/get_reward", {"query": []}), ("/classify", {"model": "demo", "input": []})):
        r = httpx.post(reward_app + path, json=body, timeout=60)
        assert r.status_code in (200, 422), (path, body, r.text)
        if r.status_code == 200:  # an empty request answers empty lists
            data = r.json()
            assert all(v == [] for k, v in data.items() if k in ("scores", "results", "rewards", "data")), data
        else:
            assert r.json()["error"]["code"] == 422
