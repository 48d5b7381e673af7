"""OpenRLHF 0.11's own remote-reward code against rmcluster: its HTTP client on `/get_reward` (shards across
several URLs) and its loader for a `reward_func` file, called as its SingleTurnAgentExecutor calls them."""

import asyncio

import httpx
import pytest

pytest.importorskip("openrlhf")

from rmcluster.integrations import openrlhf_reward_func  # noqa: E402

CONVERSATIONS = [
    [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four, I think."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."},
     {"role": "assistant", "content": "Hi there, friend."}],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
]


def _queries(tokenizer):
    # What OpenRLHF sends: the decoded sequence, chat template and BOS included.
    return [tokenizer.apply_chat_template(c, tokenize=False) for c in CONVERSATIONS]


def test_openrlhf_http_client_on_get_reward(trainer_app, reference):
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    _, url = trainer_app
    queries = _queries(reference.tokenizer)
    # Two URLs: OpenRLHF shards the queries across them (2 + 1 here).
    executor = SingleTurnAgentExecutor(remote_rm_url=[f"{url}/get_reward", f"{url}/get_reward"])
    shards = asyncio.run(executor._fetch_rewards_via_http(queries, ["p"] * 3, [None] * 3))
    rewards = [r for shard in shards for r in shard["rewards"]]
    assert rewards == pytest.approx(reference.scores(CONVERSATIONS), abs=1e-4)
    assert [len(s["scores"]) for s in shards] == [2, 1]

    # OpenRLHF 0.11.0 sent `query: []` to every URL but one (0.11.2 skips them): an empty answer, not an error.
    empty = httpx.post(f"{url}/get_reward", json={"query": [], "prompts": [], "labels": []}, timeout=60)
    assert empty.status_code == 200, empty.text
    assert empty.json()["rewards"] == [] and empty.json()["scores"] == []


def test_openrlhf_loads_and_calls_reward_func_file(trainer_app, reference, monkeypatch):
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    app, _ = trainer_app
    monkeypatch.setenv("RMCLUSTER_APP", app)
    monkeypatch.setattr(openrlhf_reward_func, "_service", None)
    executor = SingleTurnAgentExecutor(remote_rm_url=openrlhf_reward_func.__file__)
    assert executor.reward_func is not None  # OpenRLHF loaded our file as its reward function

    queries = _queries(reference.tokenizer)
    # As OpenRLHF calls it: one query per call, from worker threads, all at once.
    results = asyncio.run(executor._fetch_rewards_via_func(queries, ["p"] * 3, [None] * 3))
    rewards = [float(r["rewards"][0]) for r in results]
    assert rewards == pytest.approx(reference.scores(CONVERSATIONS), abs=1e-4)
    assert all(float(r["scores"][0]) == float(r["rewards"][0]) for r in results)
    logs = results[0]["extra_logs"]
    assert set(logs) == {"rmcluster_score_latency_s", "rmcluster_retries", "rmcluster_scored_items"}
    assert float(logs["rmcluster_score_latency_s"][0]) > 0
