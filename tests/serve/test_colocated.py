"""`ingress.colocated: true`: the model replicas answer HTTP and handle calls themselves, against the reference loop."""

import asyncio

import httpx
import pytest

from tests.conversations import varied_conversations

from .conftest import MAX_LENGTH, deploy

pytestmark = pytest.mark.ray

APP, ROUTE = "colocated-test", "/colocated"
TOL = 1e-4


@pytest.fixture(scope="module")
def colocated(serve_url, demo_dir):
    from ray import serve

    deploy(APP, ROUTE, {
        "rm": {"model": "demo", "tokenization": {"max_length": MAX_LENGTH, "on_overflow": "error"},
               "batching": {"prefix_cache_tokens": 20_000}},
        "model_server": {"num_cpus": 0.25, "num_replicas": 1, "batch_wait_timeout_s": 0.05},
        "ingress": {"colocated": True, "max_body_bytes": 64 * 1024},
    })
    yield f"{serve_url}{ROUTE}"
    serve.delete(APP)


def test_one_deployment_serves_http_and_scores_like_the_reference(colocated, reference):
    from ray import serve

    assert set(serve.status().applications[APP].deployments) == {"RewardModelServer"}
    convs = varied_conversations(6, seed=41, max_words=200)
    body = httpx.post(f"{colocated}/v1/score", json={"conversations": convs}, timeout=120).json()
    assert all(abs(a - b) < TOL for a, b in zip(body["scores"], reference.scores(convs)))
    texts = [reference.tokenizer.apply_chat_template(c, tokenize=False) for c in convs[:3]]
    rewards = httpx.post(f"{colocated}/get_reward", json={"query": texts}, timeout=120).json()["rewards"]
    assert all(abs(a - b) < TOL for a, b in zip(rewards, reference.scores(convs[:3])))
    assert httpx.get(f"{colocated}/health", timeout=30).json()["model"] == "demo"
    assert httpx.get(f"{colocated}/v1/models", timeout=30).json()["data"][0]["max_model_len"] == MAX_LENGTH
    # The request settings of the ingress section apply here too: body limit, validation errors.
    assert httpx.post(f"{colocated}/v1/score", content=b"x" * (65 * 1024), timeout=30).status_code == 413
    bad = httpx.post(f"{colocated}/v1/score", json={"conversations": [[{"role": "user"}]]}, timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["item"] == 0
    long = [{"role": "user", "content": "apple " * (MAX_LENGTH + 10)}]
    assert httpx.post(f"{colocated}/v1/score", json={"conversations": [long]}, timeout=30).status_code == 400


def test_per_sample_classify_requests_merge_and_share_their_prompt(colocated, reference):
    """veRL's reward loop against the colocated server: a GRPO group's 8 samples, one request each, at once."""
    from ray import serve

    prompt = varied_conversations(1, seed=42, max_words=300)[0][:1]
    convs = [prompt + [{"role": "assistant", "content": c[-1]["content"]}]
             for c in varied_conversations(8, seed=43, max_words=200)]
    bos = reference.tokenizer.bos_token or ""
    texts = [reference.tokenizer.apply_chat_template(c, tokenize=False).removeprefix(bos) for c in convs]
    model = serve.get_deployment_handle("RewardModelServer", APP)
    before = model.stats.remote().result()

    async def send():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(f"{colocated}/classify", json={"input": t, "use_activation": False})
                                          for t in texts))

    scores = [r.json()["data"][0]["probs"][0] for r in asyncio.run(send())]
    assert all(abs(a - b) < TOL for a, b in zip(scores, reference.scores(convs)))
    after = model.stats.remote().result()
    prompt_ids = reference.tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert after["items"] - before["items"] == 8 and after["max_requests_per_batch"] >= 2, after
    shared = (after["reused_tokens"] - before["reused_tokens"]
              + after["prefix_cache"]["reused_tokens"] - before["prefix_cache"]["reused_tokens"])
    assert shared >= 7 * len(prompt_ids), (before, after)  # the prompt ran once, in a call or from the cache


def test_app_handle_and_one_hop_client(colocated, trainer_cls, reference):
    import ray
    from ray import serve

    convs = varied_conversations(5, seed=44, max_words=200)
    got = serve.get_app_handle(APP).score.remote(convs).result()
    assert all(abs(a - b) < TOL for a, b in zip(got, reference.scores(convs)))
    trainer = trainer_cls.remote()
    ray.get(trainer.handle_client.remote(APP, one_hop=False))  # tokenizing on the app: still one hop here
    assert ray.get(trainer.client_attr.remote("hops")) == 1
    ray.get(trainer.handle_client.remote(APP, one_hop=True))
    assert ray.get(trainer.client_attr.remote("hops")) == 1
    got = ray.get(trainer.client_call.remote("score", convs))
    assert all(abs(a - b) < TOL for a, b in zip(got, reference.scores(convs)))
