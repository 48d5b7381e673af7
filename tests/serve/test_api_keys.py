"""Optional API keys on the ingress: 401 without a valid Bearer key on every endpoint but /health, keys from
an environment variable or a file that rotates while serving, and the HTTP client and adapters sending one."""

import os
import time

import httpx
import pytest

from rmcluster.client import RewardClient
from rmcluster.protocol import UnauthorizedError
from serve.api_keys import KeySet
from serve.args import ApiKeysSource, ServeArgs

from .conftest import app_args, deploy, wait_for

CONV = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
CALLS = [("post", "/v1/score", {"conversations": [CONV]}), ("post", "/get_reward", {"query": ["some text"]}),
         ("post", "/classify", {"model": "demo", "input": "some text"}), ("get", "/v1/models", None),
         ("get", "/docs", None), ("get", "/openapi.json", None)]


def _write_keys(path, *keys):
    tmp = path.with_suffix(".tmp")  # replace in one step, as a Secret volume update does
    tmp.write_text("# rotated\n" + "\n".join(keys) + "\n")
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def keyed_app(serve_url, demo_dir, tmp_path_factory):
    from ray import serve

    key_file = tmp_path_factory.mktemp("keys") / "api-keys"
    _write_keys(key_file, "key-one", "key-two")
    deploy("reward-keys", "/keys", app_args(ingress={"api_keys": {"file": str(key_file)}}))
    yield serve_url + "/keys", key_file
    serve.delete("reward-keys")


def _call(url, method, path, body, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, url + path, json=body, headers=headers, timeout=60)


def test_every_endpoint_but_health_needs_a_key(keyed_app):
    url, _ = keyed_app
    assert httpx.get(url + "/health", timeout=60).status_code == 200  # the liveness probe stays open
    for method, path, body in CALLS:
        for key, message in ((None, "missing API key"), ("wrong", "invalid API key"), ("key-one2", "invalid")):
            r = _call(url, method, path, body, key)
            assert r.status_code == 401, (path, key, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            error = r.json()["error"]
            assert error["type"] == "unauthorized" and error["code"] == 401 and message in error["message"]
        for key in ("key-one", "key-two"):
            assert _call(url, method, path, body, key).status_code == 200, (path, key)
    r = httpx.post(url + "/v1/score", json={"conversations": [CONV]}, headers={"Authorization": "Basic key-one"})
    assert r.status_code == 401  # only the Bearer scheme


def test_client_and_adapter_send_the_key(keyed_app, reference, monkeypatch):
    url, _ = keyed_app
    expected = reference.score(CONV)
    with RewardClient(url, api_key="key-two") as client:
        assert client.score([CONV]) == pytest.approx([expected], abs=1e-4)
    monkeypatch.setenv("RMCLUSTER_API_KEY", "key-one")  # the default for clients and trainer adapters
    with RewardClient(url) as client:
        assert client.score([CONV]) == pytest.approx([expected], abs=1e-4)
    with RewardClient(url, api_key="nope") as client:
        with pytest.raises(UnauthorizedError, match="HTTP 401: invalid API key"):
            client.score([CONV])
        assert client.retry.retries == 0  # a refused key is final, not retried

    import asyncio

    from rmcluster.integrations.service import RewardService

    service = RewardService({"url": url, "api_key": "key-two"})
    text = reference.tokenizer.apply_chat_template(CONV, tokenize=False)
    assert asyncio.run(service.score_texts([text])) == pytest.approx([expected], abs=1e-4)
    service.close()


def test_a_rotated_key_file_takes_effect_while_serving(keyed_app):
    url, key_file = keyed_app
    body = {"conversations": [CONV]}
    _write_keys(key_file, "key-three")
    wait_for(lambda: _call(url, "post", "/v1/score", body, "key-three").status_code == 200, 30, "the new key")
    assert _call(url, "post", "/v1/score", body, "key-one").status_code == 401  # the old ones are gone
    _write_keys(key_file, "key-one", "key-two")  # back, for the other tests
    wait_for(lambda: _call(url, "post", "/v1/score", body, "key-one").status_code == 200, 30, "the old key again")


def test_keys_from_the_environment_and_config_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("RM_KEYS", "alpha, beta")
    keys = KeySet(ApiKeysSource(env="RM_KEYS"))
    assert keys.allows(b"alpha") and keys.allows(b"beta") and not keys.allows(b"alph") and not keys.allows(b"")
    monkeypatch.setenv("RM_KEYS", " ")
    with pytest.raises(ValueError, match="no keys in environment variable RM_KEYS"):
        KeySet(ApiKeysSource(env="RM_KEYS"))
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="no keys in file"):
        KeySet(ApiKeysSource(file=str(tmp_path / "empty")))
    for bad in ({}, {"env": "A", "file": "/x"}, {"keys": ["inline-key"]}):
        with pytest.raises(ValueError):
            ServeArgs.model_validate({"ingress": {"api_keys": bad}})


def test_an_emptied_key_file_keeps_the_last_keys(tmp_path):
    path = tmp_path / "keys"
    _write_keys(path, "k1")
    keys = KeySet(ApiKeysSource(file=str(path)))
    path.write_text("")  # mid-rotation: never 'no keys, everyone in' nor 'no keys, nobody in'
    time.sleep(1.1)
    assert keys.allows(b"k1")
