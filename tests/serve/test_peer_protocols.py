"""Drop-in compatibility: requests shaped exactly as OpenRLHF and veRL send them, from Ray workers."""

import pytest

from tests.conversations import varied_conversations

pytestmark = pytest.mark.ray

TOL = 1e-4


def _templated(reference, conv) -> str:
    """The policy's decoded text: chat template applied, BOS and special tokens included."""
    return reference.tokenizer.apply_chat_template(conv, tokenize=False)


def test_openrlhf_remote_rm_request(reward_app, reference, ray_cluster):
    """OpenRLHF's remote_rm_fn_ray: a Ray task POSTs {"query", "prompts", "labels"}, reads "rewards"."""
    ray = ray_cluster
    convs = varied_conversations(6, seed=11, max_words=200)
    queries = [_templated(reference, c) for c in convs]
    assert all(q.startswith(reference.tokenizer.bos_token) for q in queries)

    @ray.remote(num_cpus=0)
    def remote_rm_fn(api_url, queries, prompts, labels):
        import httpx

        response = httpx.post(api_url, json={"query": queries, "prompts": prompts, "labels": labels},
                              headers={"Content-Type": "application/json"}, timeout=180)
        response.raise_for_status()
        return response.json()

    body = ray.get(remote_rm_fn.remote(f"{reward_app}/get_reward", queries, ["p"] * 6, [None] * 6))
    want = reference.scores(convs)  # templated text must score as its conversation: no double BOS
    assert all(abs(a - b) < TOL for a, b in zip(body["rewards"], want))
    assert body["scores"] == body["rewards"]
    assert body["extra_logs"]["num_tokens"] == [float(reference.ids(c).shape[-1]) for c in convs]


def test_verl_classify_request(reward_app, reference, trainer_cls):
    """veRL's reward loop: strips the leading BOS, POSTs /classify with activation off, reads data[-1].probs[-1]."""
    trainer = trainer_cls.remote()
    bos = reference.tokenizer.bos_token
    for conv, flag in zip(varied_conversations(4, seed=12, max_words=200), ["use_activation", "activation"] * 2):
        text = _templated(reference, conv).removeprefix(bos)
        status, body = _post(trainer, f"{reward_app}/classify", {"model": "/models/rm", "input": text, flag: False})
        assert status == 200 and body["object"] == "list" and body["model"] == "demo"
        assert abs(body["data"][-1]["probs"][-1] - reference.score(conv)) < TOL
        assert body["data"][-1]["num_classes"] == 1 and body["usage"]["prompt_tokens"] == reference.ids(conv).shape[-1]

    texts = [_templated(reference, c) for c in varied_conversations(3, seed=13, max_words=200)]
    status, body = _post(trainer, f"{reward_app}/classify", {"input": texts, "use_activation": False})
    # BOS left in place is not doubled; a list of inputs answers in order.
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(abs(d["probs"][0] - reference.score_ids(reference.tokenizer(t, add_special_tokens=False)["input_ids"]))
               < TOL for d, t in zip(body["data"], texts))


def _post(trainer, url, body):
    import ray

    return ray.get(trainer.post.remote(url, body))


def test_classify_and_score_take_token_ids_as_given(reward_app, reference, trainer_cls):
    """vLLM's `input` may be token ids (one list or several); /v1/score has an `input_ids` shape. No BOS is
    added and nothing is re-templated; an id outside the vocabulary is the item's 400."""
    trainer = trainer_cls.remote()
    convs = varied_conversations(3, seed=14, max_words=200)
    ids = [reference.ids(c)[0].tolist() for c in convs]
    want = reference.scores(convs)
    status, one = _post(trainer, f"{reward_app}/classify", {"input": ids[0]})
    assert status == 200 and abs(one["data"][0]["probs"][0] - want[0]) < TOL
    assert one["usage"]["prompt_tokens"] == len(ids[0])  # BOS not added to ids
    status, many = _post(trainer, f"{reward_app}/classify", {"input": ids})
    assert status == 200 and all(abs(d["probs"][0] - w) < TOL for d, w in zip(many["data"], want))
    status, scored = _post(trainer, f"{reward_app}/v1/score", {"input_ids": ids})
    assert status == 200 and all(abs(s - w) < TOL for s, w in zip(scored["scores"], want))
    vocab = len(reference.tokenizer)
    status, bad = _post(trainer, f"{reward_app}/classify", {"input": [ids[0], [1, vocab + 5]]})
    assert status == 400 and "vocabulary" in bad["error"]["message"], bad
    status, bad = _post(trainer, f"{reward_app}/v1/score", {"input_ids": [[1, -3]]})
    assert status == 422, bad
