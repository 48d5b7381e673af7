"""Prometheus metrics: the names the README lists are exported by the node's metrics agent, with real values."""

import re

import httpx
import pytest

from tests.conversations import varied_conversations

from .conftest import APP, wait_for

pytestmark = pytest.mark.ray

EXPORTED = [  # as Prometheus sees them: Ray adds the `ray_` prefix, counters get `_total`
    "ray_rmcluster_items_scored_total", "ray_rmcluster_tokens_scored_total", "ray_rmcluster_batch_items_count",
    "ray_rmcluster_batch_tokens_count", "ray_rmcluster_padding_efficiency_count",
    "ray_rmcluster_forward_latency_s_count", "ray_rmcluster_queue_batch_requests_count",
    "ray_rmcluster_tokenize_latency_s_count",
]


def _scrape(ray, app: str) -> dict[str, float]:
    port = ray.nodes()[0]["MetricsExportPort"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for name, labels, value in re.findall(r"^(ray_rmcluster_\w+)\{([^}]*)\} (\S+)$", text, re.M):
        if f'application="{app}"' in labels:
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def test_scoring_metrics_are_exported(reward_app, ray_cluster):
    from ray import serve

    convs = varied_conversations(10, seed=41, max_words=200)
    assert httpx.post(f"{reward_app}/v1/score", json={"conversations": convs}, timeout=120).status_code == 200
    # The replica's own counters are exact; the exported counters catch up within a few seconds.
    stats = serve.get_deployment_handle("RewardModelServer", APP).stats.remote().result()

    def exported():
        totals = _scrape(ray_cluster, APP)
        done = (all(name in totals for name in EXPORTED)
                and totals["ray_rmcluster_items_scored_total"] == stats["items"]
                and totals["ray_rmcluster_tokens_scored_total"] == stats["tokens"])
        return totals if done else None

    totals = wait_for(exported, timeout_s=120, what=f"exported counters to reach {stats}", interval_s=2)
    assert totals["ray_rmcluster_batch_items_count"] >= 1 and totals["ray_rmcluster_forward_latency_s_count"] >= 1
    efficiency = totals["ray_rmcluster_padding_efficiency_sum"] / totals["ray_rmcluster_padding_efficiency_count"]
    assert 0 < efficiency <= 1
