"""Backpressure: over max_queued_requests callers get 503 + Retry-After, and the clients' retries then succeed.

No fake engine: the slow batches are real, long conversations on a replica that takes one request at
a time and queues one more.
"""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import app_args, deploy

pytestmark = pytest.mark.ray

APP, ROUTE = "backpressure-test", "/bp"
TOL = 1e-4
N = 12


def _long_conversation(i: int) -> list[dict]:
    # About 2,000 tokens: tens of milliseconds or more per forward pass on the demo model.
    return [{"role": "user", "content": f"question {i}: " + "apple river stone " * 250},
            {"role": "assistant", "content": f"answer {i}"}]


@pytest.fixture(scope="module", params=["separate", "colocated"])
def bp_app(request, serve_url, demo_dir):
    """A separate ingress with a small queue of its own, or colocated: the model replica's queue is the front."""
    from ray import serve

    colocated = request.param == "colocated"
    ingress = {} if colocated else {"max_ongoing_requests": 4, "max_queued_requests": 2, "retry_after_s": 1}
    deploy(APP, ROUTE, app_args(
        colocated,
        rm={"tokenization": {"max_length": 4096}},
        model_server={"max_ongoing_requests": 1, "max_queued_requests": 1, "retry_after_s": 1,
                      "batch_wait_timeout_s": 0.0},
        ingress=ingress,
    ))
    yield f"{serve_url}{ROUTE}"
    serve.delete(APP)


def test_overload_gets_503_with_retry_after_and_replica_keeps_serving(bp_app, reference):
    convs = [_long_conversation(i) for i in range(N)]
    with httpx.Client(base_url=bp_app, timeout=300) as http, ThreadPoolExecutor(N) as pool:
        responses = list(pool.map(lambda c: http.post("/v1/score", json={"conversations": [c]}), convs))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
        for r in responses:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1
        for conv, r in zip(convs, responses):
            if r.status_code == 200:
                assert abs(r.json()["scores"][0] - reference.score(conv)) < TOL
        assert http.get("/health").status_code == 200


@pytest.mark.parametrize("kind", ["http", "handle"])
def test_client_retries_through_backpressure(kind, bp_app, trainer_cls, reference):
    import ray

    trainer = trainer_cls.remote()
    target = bp_app if kind == "http" else APP
    # The handle client through the ingress, whose small queue overflows for sure; one hop, its calls reach the
    # model replica as fast as the caller tokenizes them, and the queue did not always fill (a CI run).
    extra = {"one_hop": False} if kind == "handle" else {}
    ray.get(getattr(trainer, f"{kind}_client").remote(target, chunk_size=1, max_in_flight=N, **extra))
    convs = [_long_conversation(i) for i in range(N)]
    scores = ray.get(trainer.client_call.remote("score", convs))  # every request answered, in order
    assert all(abs(s - w) < TOL for s, w in zip(scores, reference.scores(convs)))
    assert ray.get(trainer.client_retries.remote()) > 0, "expected backpressure that the client retried"
