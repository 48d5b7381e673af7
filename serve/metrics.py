"""Prometheus metrics of the scoring deployments, through `ray.serve.metrics`.

Serve adds the deployment, replica and application tags; Ray exports each name with a `ray_`
prefix (Counters also get `_total`). The README lists them.
"""

from __future__ import annotations

from typing import Sequence

from ray.serve import metrics

from rmcluster.outputs import BatchStats

_POW2_ITEMS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
_POW2_TOKENS = [2.0**k for k in range(5, 18)]  # 32 .. 131072
_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
_FRACTION = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]


class ModelServerMetrics:
    """Recorded by the model replicas: one forward pass at a time, one Serve batch at a time."""

    def __init__(self, model: str):
        self.items = metrics.Counter("rmcluster_items_scored", "Items scored.", tag_keys=("model",))
        self.tokens = metrics.Counter("rmcluster_tokens_scored", "Real (unpadded) tokens scored.",
                                      tag_keys=("model",))
        self.batch_items = metrics.Histogram("rmcluster_batch_items", "Items per forward pass.",
                                             boundaries=_POW2_ITEMS, tag_keys=("model",))
        self.batch_tokens = metrics.Histogram("rmcluster_batch_tokens", "Padded tokens per forward pass.",
                                              boundaries=_POW2_TOKENS, tag_keys=("model",))
        self.padding = metrics.Histogram("rmcluster_padding_efficiency",
                                         "Real / padded tokens per forward pass.",
                                         boundaries=_FRACTION, tag_keys=("model",))
        self.forward = metrics.Histogram("rmcluster_forward_latency_s", "Model forward pass latency (seconds).",
                                         boundaries=_SECONDS, tag_keys=("model",))
        self.queue_requests = metrics.Histogram("rmcluster_queue_batch_requests",
                                                "Requests merged into one Serve batch.",
                                                boundaries=_POW2_ITEMS, tag_keys=("model",))
        for m in (self.items, self.tokens, self.batch_items, self.batch_tokens, self.padding, self.forward,
                  self.queue_requests):
            m.set_default_tags({"model": model})  # a fresh dict: Serve adds its tags to it in place

    def record_forwards(self, passes: Sequence[BatchStats]) -> None:
        for s in passes:
            self.tokens.inc(s.real_tokens)
            self.batch_items.observe(s.items)
            self.batch_tokens.observe(s.padded_tokens)
            self.padding.observe(s.real_tokens / s.padded_tokens if s.padded_tokens else 1.0)
            self.forward.observe(s.seconds)

    def record_queue_batch(self, requests: int, items: int) -> None:
        self.queue_requests.observe(requests)
        self.items.inc(items)  # answered, as the replica's stats count them: repeats in a call are computed once


class IngressMetrics:
    """Recorded by the ingress, where tokenization runs (off the model replicas)."""

    def __init__(self, model: str):
        self.tokenize = metrics.Histogram("rmcluster_tokenize_latency_s",
                                          "Templating + tokenization time per request (seconds).",
                                          boundaries=_SECONDS, tag_keys=("model",))
        self.tokenize.set_default_tags({"model": model})
