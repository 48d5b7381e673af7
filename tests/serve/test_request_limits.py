"""Request limits on the Serve app: a big request is slow rather than refused, and each limit has its error."""

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conversations import random_conversation

from .conftest import app_args, deploy

pytestmark = pytest.mark.ray

APP, ROUTE = "limits-test", "/limits"


@pytest.fixture(scope="module")
def limits_app(serve_url, demo_dir):
    from ray import serve

    # A model queue of 4 requests and chunks of 8 items: 200 items are 25 chunks, which sent all at once
    # would be refused with 503 every time, however often a client retried.
    deploy(APP, ROUTE, app_args(model_server={"max_queued_requests": 4, "max_ongoing_requests": 4},
                                ingress={"chunk_items": 8, "chunks_in_flight": 2, "max_items_per_request": 300,
                                         "max_tokens_per_request": 20000}))
    yield f"{serve_url}{ROUTE}"
    serve.delete(APP)


def _convs(n, seed=0):
    rng = random.Random(seed)
    return [random_conversation(rng, rng.randint(2, 12)) for _ in range(n)]


def test_a_request_of_many_chunks_is_slow_not_refused(limits_app, reference):
    convs = _convs(200)
    response = httpx.post(f"{limits_app}/v1/score", json={"conversations": convs}, timeout=300)
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert len(scores) == 200
    assert max(abs(a - b) for a, b in zip(scores, reference.scores(convs[:20]))) < 1e-4


def test_a_big_request_leaves_room_for_other_callers(limits_app):
    big, small = _convs(250, seed=1), _convs(1, seed=2)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, f"{limits_app}/v1/score", json={"conversations": big}, timeout=300)
        second = pool.submit(httpx.post, f"{limits_app}/v1/score", json={"conversations": small}, timeout=300)
        assert second.result().status_code == 200
        assert not first.done() or first.result().status_code == 200  # the small one did not wait behind it
        assert first.result().status_code == 200


def test_items_and_tokens_over_the_limits_are_413(limits_app):
    too_many = httpx.post(f"{limits_app}/v1/score", json={"conversations": _convs(301)}, timeout=60)
    assert too_many.status_code == 413 and "max_items_per_request" in too_many.json()["error"]["message"]
    long = [[{"role": "user", "content": "apple " * 400}] for _ in range(60)]  # about 24k tokens
    too_long = httpx.post(f"{limits_app}/v1/score", json={"conversations": long}, timeout=60)
    assert too_long.status_code == 413 and "max_tokens_per_request" in too_long.json()["error"]["message"]
    assert too_long.json()["error"]["type"] == "request_too_large"


def test_a_request_past_its_timeout_is_408_and_its_queued_work_dropped(demo_dir):
    import asyncio

    from rmcluster.config import RMConfig
    from rmcluster.protocol import RequestTimeoutError, ScoreRequest
    from rmcluster.scorers import build_encoder
    from serve.serving import RequestLimits, ScoringService

    dropped = []

    async def slow_replicas(encoded):  # fault injection: a model that does not answer in time
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            dropped.append(len(encoded))
            raise

    service = ScoringService(build_encoder(RMConfig(model={"name": str(demo_dir)})), slow_replicas, "demo",
                             limits=RequestLimits(timeout_s=0.2))
    with pytest.raises(RequestTimeoutError, match="request_timeout_s") as info:
        asyncio.run(service.score(ScoreRequest(prompt="2+2?", chosen="4", rejected="5")))
    assert info.value.status_code == 408 and dropped == [2]
