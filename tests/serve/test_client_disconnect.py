"""A request whose HTTP client has gone stops costing the model replica: Serve cancels it in the ingress, the
ingress cancels its chunks, and chunks not yet started never run. Measured: items the replica scored for a
request of 3,000 conversations whose client hung up once the replica had started on it."""

import json
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from .conftest import app_args, deploy, wait_for

ITEMS = 3000


@pytest.fixture(scope="module")
def big_body_app(serve_url, demo_dir):
    from ray import serve

    deploy("reward-disconnect", "/disconnect", app_args(ingress={"max_body_bytes": 16 * 2**20}))
    yield serve_url + "/disconnect"
    serve.delete("reward-disconnect")


def _send(url: str, body: dict) -> socket.socket:
    """POST over a bare socket, so the test can hang up at the moment it chooses."""
    parsed = urlparse(url)
    payload = json.dumps(body).encode()
    sock = socket.create_connection((parsed.hostname, parsed.port))
    sock.sendall(f"POST {parsed.path}/v1/score HTTP/1.1\r\nHost: {parsed.hostname}\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def test_a_gone_client_stops_the_replicas_work(big_body_app):
    from ray import serve

    model = serve.get_deployment_handle("RewardModelServer", "reward-disconnect")
    items = lambda: model.stats.remote().result()["items"]  # noqa: E731
    words = " ".join(["river"] * 60)
    body = {"conversations": [[{"role": "user", "content": f"{i} {words}"}, {"role": "assistant", "content": words}]
                              for i in range(ITEMS)]}
    before = items()
    sock = _send(big_body_app, body)
    wait_for(lambda: items() > before, 120, "the replica to start on the request", interval_s=0.05)
    sock.close()  # the client hangs up mid-request
    at_hang_up = items() - before
    hung_up = time.monotonic()

    def settled():  # the replica's item count stops moving
        first = items()
        time.sleep(2)
        return first == items()

    wait_for(settled, 120, "the replica to go idle")
    scored = items() - before
    print(f"client gone mid-request: the replica had scored {at_hang_up} items, {scored} of {ITEMS} in all; "
          f"idle {time.monotonic() - hung_up - 2:.1f} s after the hang-up")
    assert scored < ITEMS / 2, f"the replica scored {scored} of {ITEMS} items for a client that had gone"
    r = httpx.post(big_body_app + "/v1/score", json={"conversations": body["conversations"][:2]}, timeout=60)
    assert r.status_code == 200  # and it still serves
