"""Dynamic batching on the model replica: concurrent requests merge, and the batch shape changes at runtime."""

import pytest

from tests.conversations import varied_conversations

from .conftest import app_args, deploy

pytestmark = pytest.mark.ray

APP, ROUTE = "batching-test", "/batching"
TOL = 1e-4


def _args(max_batch_tokens, max_batch_size, wait_s):
    return app_args(rm={"batching": {"max_batch_tokens": max_batch_tokens, "max_batch_size": max_batch_size,
                                     "prefix_cache_tokens": 20_000}},
                    model_server={"batch_wait_timeout_s": wait_s, "max_ongoing_requests": 64})


@pytest.fixture(scope="module")
def batching_app(serve_url, demo_dir):
    from ray import serve

    deploy(APP, ROUTE, _args(8192, 64, 0.05))
    yield serve.get_deployment_handle("RewardModelServer", APP)
    serve.delete(APP)


def test_concurrent_requests_merge_into_larger_batches(batching_app, reference):
    from ray import serve

    model = batching_app
    before = model.stats.remote().result()
    convs = varied_conversations(16, seed=31, max_words=200)
    app = serve.get_app_handle(APP)
    responses = [app.score.remote([c]) for c in convs]  # 16 requests in flight at once
    scores = [r.result()[0] for r in responses]
    assert all(abs(s - w) < TOL for s, w in zip(scores, reference.scores(convs)))

    after = model.stats.remote().result()
    batches = after["serve_batches"] - before["serve_batches"]
    assert after["items"] - before["items"] == 16
    assert after["max_requests_per_batch"] >= 2, after  # the replica-side counter of requests merged
    assert after["max_items_per_forward"] >= 2, after  # and they ran as one forward pass
    assert batches < 16, f"16 single-item requests took {batches} batches"


def test_per_sample_grpo_requests_share_their_prompt_across_requests(batching_app, serve_url, reference):
    """veRL's reward loop: one /classify request per sample, a group's 8 at once, as token ids. They land
    in one engine call, which finds the group's common prefix in the ids and computes it once."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    model = batching_app
    prompt = varied_conversations(1, seed=33, max_words=300)[0][:1]
    answers = [c[-1]["content"] for c in varied_conversations(8, seed=34, max_words=200)]
    convs = [prompt + [{"role": "assistant", "content": a}] for a in answers]
    ids = [reference.ids(c)[0].tolist() for c in convs]
    before = model.stats.remote().result()
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda i: httpx.post(f"{serve_url}{ROUTE}/classify", json={"input": i},
                                                    timeout=60).json(), ids))
    assert all(abs(b["data"][0]["probs"][0] - w) < TOL for b, w in zip(bodies, reference.scores(convs)))
    assert [b["usage"]["prompt_tokens"] for b in bodies] == [len(i) for i in ids]
    after = model.stats.remote().result()
    prompt_ids = reference.tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert after["max_requests_per_batch"] >= 2, after
    assert after["reused_tokens"] - before["reused_tokens"] >= len(prompt_ids), after  # shared across requests

    # The handle takes token ids too, as given (no template, no BOS added).
    from ray import serve

    scores = serve.get_app_handle(APP).score_token_ids.remote(ids[:3]).result()
    assert all(abs(s - w) < TOL for s, w in zip(scores, reference.scores(convs[:3])))


def test_samples_sent_one_after_another_read_their_prompt_from_the_prefix_cache(batching_app, serve_url, reference):
    """A trainer that sends each sample as its rollout finishes: every request is its own engine call, and
    the group's prompt, computed for the first, is read from the replica's prefix cache by the rest."""
    import httpx

    model = batching_app
    prompt = varied_conversations(1, seed=35, max_words=300)[0][:1]
    answers = [c[-1]["content"] for c in varied_conversations(6, seed=36, max_words=120)]
    convs = [prompt + [{"role": "assistant", "content": a}] for a in answers]
    texts = [reference.tokenizer.apply_chat_template(c, tokenize=False) for c in convs]
    before = model.stats.remote().result()["prefix_cache"]
    scores = [httpx.post(f"{serve_url}{ROUTE}/classify", json={"input": t}, timeout=60).json()["data"][0]["probs"][0]
              for t in texts]
    assert all(abs(s - w) < TOL for s, w in zip(scores, reference.scores(convs)))
    after = model.stats.remote().result()["prefix_cache"]
    prompt_ids = reference.tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert after["hits"] - before["hits"] == 5, after
    assert after["reused_tokens"] - before["reused_tokens"] >= 5 * len(prompt_ids), after


def test_batch_shape_changes_at_runtime(batching_app, reference):
    from ray import serve

    model = batching_app
    first = model.info.remote().result()
    assert (first["max_batch_tokens"], first["max_batch_size"], first["batch_wait_timeout_s"]) == (8192, 64, 0.05)
    # Unset, with the prefix cache on: one of the largest groups (a group split over calls reads its prompt
    # from the cache); four without it (test below, after the reconfigure turns the cache off).
    assert first["max_call_tokens"] == max(8192, first["max_length"])
    # A quarter-CPU replica still computes on every core it may run on, not Ray's OMP_NUM_THREADS of 1.
    import os

    assert first["torch_threads"] == len(os.sched_getaffinity(0))

    # Serve applies a user_config change by calling reconfigure() on the live replica (a config
    # redeploy with new batching does exactly that); the replica keeps serving with the new shape.
    assert first["shared_prompt"] is True  # auto, on a model that passes the packing check
    model.reconfigure.remote({"batching": {"max_batch_tokens": 1024, "max_batch_size": 4, "packing": "on",
                                           "shared_prompt": "off"}, "batch_wait_timeout_s": 0.0,
                           "max_call_tokens": 2048}).result()
    second = model.info.remote().result()
    assert second["max_call_tokens"] == 2048
    assert (second["max_batch_tokens"], second["max_batch_size"], second["batch_wait_timeout_s"]) == (1024, 4, 0.0)
    assert (second["packing"], second["shared_prompt"]) == (True, False)
    assert second["replica"] == first["replica"]
    model.reconfigure.remote({"batching": {"max_batch_tokens": 1024, "max_batch_size": 4, "packing": "on"},
                              "batch_wait_timeout_s": 0.0}).result()
    assert model.info.remote().result()["max_call_tokens"] == 4 * max(1024, first["max_length"])
    model.reconfigure.remote({"batching": {"max_batch_tokens": 1024, "max_batch_size": 4, "packing": "on",
                                           "shared_prompt": "off"}, "batch_wait_timeout_s": 0.0,
                              "max_call_tokens": 2048}).result()
    before = model.stats.remote().result()
    convs = varied_conversations(12, seed=32, max_words=200)
    app = serve.get_app_handle(APP)
    scores = [r.result()[0] for r in [app.score.remote([c]) for c in convs]]
    assert all(abs(s - w) < TOL for s, w in zip(scores, reference.scores(convs)))
    assert model.stats.remote().result()["items"] - before["items"] == 12

    # Batching reaches replicas through user_config only (not constructor arguments), so a
    # redeploy with new ServeArgs batching arrives through reconfigure().
    deploy(APP, ROUTE, _args(2048, 8, 0.01))
    third = model.info.remote().result()
    assert (third["max_batch_tokens"], third["max_batch_size"], third["batch_wait_timeout_s"]) == (2048, 8, 0.01)
