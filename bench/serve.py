"""Serving benchmark: the engine called directly vs the Serve handle path vs the HTTP path, one run.

    python bench/serve.py                         # CPU: hidden-256, 4-layer random Llama, fp32
    python bench/serve.py --shape demo --requests 200
    python bench/serve.py --json out.json
    python bench/serve.py --trainer               # veRL GRPO steps: per-sample /classify vs the veRL adapter

Same model, same requests (one conversation each, as an RL trainer sends them) at 1, 8 and 32
concurrent clients on every path. The engine path calls `ScoringEngine.score_items` in-process
(tokenization included; one forward at a time, so concurrent clients queue on a lock). The handle
path calls `serve.get_app_handle(app).score.remote(...)`; the HTTP path POSTs `/v1/score`. The model
replica gets the engine's torch thread count (`--threads`, through num_cpus), so the comparison is
of the serving path, not of threads.

The handle client (`HandleRewardClient.score`, from threads) runs both ways: one hop (it tokenizes in
the caller and calls the model deployment) and two (through the ingress).

Targets: handle throughput >= 70% of the engine's (issue 3), the one-hop client >= 90% at 8 and 32
clients (issue 13); 1-client HTTP p50 <= engine p50 + 15 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH")) if p)

from rmcluster.demo_model import demo_model_path  # noqa: E402

from bench.workload import DEMO_SHAPES as SHAPES, long_tail, words  # noqa: E402
CONCURRENCY = (1, 8, 32)
PROBE_WARNING = "Failed to get queue length"
# One event loop for every async client: a handle's router may be bound to the loop that first used it.
LOOP = asyncio.new_event_loop()


# -- workload ---------------------------------------------------------------------------------------
def conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """Prompt 20-200 and response 20-400 words (about tokens with the demo tokenizer), long-tailed."""
    rng = random.Random(seed)

    def text(median: int, lo: int, hi: int) -> str:
        return words(rng, long_tail(rng, median, 0.7, lo, hi))

    return [[{"role": "user", "content": text(60, 20, 200)}, {"role": "assistant", "content": text(120, 20, 400)}]
            for _ in range(n)]


# -- measurement ------------------------------------------------------------------------------------
def summarize(name: str, clients: int, latencies: list[float], wall: float, items: int) -> dict:
    lat = sorted(latencies)
    return {
        "path": name, "clients": clients, "requests": len(lat), "items_per_s": items / wall,
        "p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "wall_s": wall,
    }


def run_engine(engine, requests: list, clients: int) -> dict:
    from rmcluster.records import ScoreItem

    lock = threading.Lock()  # one forward at a time, as in a replica
    latencies: list[float] = []

    def one(conv):
        start = time.perf_counter()
        with lock:
            engine.score_items([ScoreItem.conversation("0", conv)])
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, requests))
    return summarize("engine", clients, latencies, time.perf_counter() - start, len(requests))


async def _closed_loop(call, requests: list, clients: int) -> tuple[list[float], float]:
    queue = list(reversed(requests))
    latencies: list[float] = []

    async def client():
        while queue:
            conv = queue.pop()
            start = time.perf_counter()
            await call(conv)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - start


async def _await(call):
    return await call()  # called inside the loop: the handle's router may live on it


def run_handle(handle, requests: list, clients: int) -> dict:
    async def call(conv):
        await handle.score.remote([conv])

    latencies, wall = LOOP.run_until_complete(_closed_loop(call, requests, clients))
    return summarize("handle", clients, latencies, wall, len(requests))


def run_client(client, name: str, requests: list, clients: int) -> dict:
    """`HandleRewardClient.score([conv])` from `clients` threads, as trainer workers call it."""
    latencies: list[float] = []

    def one(conv):
        start = time.perf_counter()
        client.score([conv])
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, requests))
    return summarize(name, clients, latencies, time.perf_counter() - start, len(requests))


def run_http(url: str, requests: list, clients: int) -> dict:
    import httpx

    async def main():
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            async def call(conv):
                (await http.post("/v1/score", json={"conversations": [conv]})).raise_for_status()

            return await _closed_loop(call, requests, clients)

    latencies, wall = LOOP.run_until_complete(main())
    return summarize("http", clients, latencies, wall, len(requests))


class _DriverLogCount(logging.Handler):
    """Counts a message in this process's Serve logger (the handle path's router lives here)."""

    def __init__(self, needle: str):
        super().__init__(logging.WARNING)
        self.needle, self.count = needle, 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += self.needle in record.getMessage()


def _count_in_serve_logs(session_dir: str, needle: str) -> dict[str, int]:
    """Occurrences of a log message per Serve process kind (proxy, replicas, ...) and in this driver."""
    counts: dict[str, int] = {}
    for path in Path(session_dir, "logs", "serve").glob("*.log"):
        n = path.read_text(errors="replace").count(needle)
        if n:
            kind = path.name.split("_")[0]
            counts[kind] = counts.get(kind, 0) + n
    return counts


def tokenize_vs_forward(engine, convs: list) -> dict:
    """Per-request split of the engine path: templating + tokenization vs the forward pass."""
    from rmcluster.records import conversation_items

    items = conversation_items(convs)
    start = time.perf_counter()
    encoded = [engine.encode([it])[0] for it in items]
    tok = time.perf_counter() - start
    start = time.perf_counter()
    for e in encoded:
        engine.score_encoded([e])
    fwd = time.perf_counter() - start
    return {"tokenize_ms": 1e3 * tok / len(items), "forward_ms": 1e3 * fwd / len(items)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- main -------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--requests", type=int, default=256, help="requests per measurement (one conversation each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads: engine here, num_cpus of the replica")
    parser.add_argument("--batch-wait-ms", type=float, help="Serve batch wait (default: ServeArgs')")
    parser.add_argument("--max-batch-tokens", type=int, help="token budget (default: the device's, from RMConfig)")
    parser.add_argument("--max-ongoing-requests", type=int, default=128,
                        help="model replica's max_ongoing_requests (Serve's default, 5, reproduces the probe stall)")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                        help="Serve's per-request access log lines in the replicas (on by default, as in Serve)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--trainer", action="store_true",
                        help="instead: veRL-shaped GRPO reward steps, per-sample /classify vs the veRL adapter")
    parser.add_argument("--steps", type=int, default=3, help="--trainer: timed steps")
    args = parser.parse_args()

    import torch

    import ray
    from ray import serve

    from rmcluster.config import RMConfig
    from rmcluster.engine import ScoringEngine
    from serve.app import build_app
    from serve.args import ServeArgs

    torch.set_num_threads(args.threads)
    model_dir = str(demo_model_path(SHAPES[args.shape]))
    rm = RMConfig(model={"name": model_dir}, batching={"max_batch_tokens": args.max_batch_tokens})
    requests = conversations(args.requests)
    warmup = conversations(32, seed=1)
    engine = ScoringEngine.from_config(rm)
    engine.score_conversations(warmup)

    context = ray.init(num_cpus=args.threads + 2, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    model_server = {"num_cpus": args.threads, "num_replicas": 1, "max_ongoing_requests": args.max_ongoing_requests}
    if args.batch_wait_ms is not None:
        model_server["batch_wait_timeout_s"] = args.batch_wait_ms / 1e3
    serve_args = ServeArgs(rm=rm, model_server=model_server, ingress={"num_cpus": 0.5, "num_replicas": 1})
    args.batch_wait_ms = 1e3 * serve_args.model_server.batch_wait_timeout_s
    serve.run(build_app(serve_args), name="bench", route_prefix="/",
              logging_config={"enable_access_log": args.access_log})
    if args.trainer:
        from bench.trainer_step import run as trainer_run

        print(trainer_run(model_dir, "bench", f"http://127.0.0.1:{port}", args.steps))
        serve.shutdown()
        ray.shutdown()
        return 0
    handle = serve.get_app_handle("bench")
    url = f"http://127.0.0.1:{port}"
    driver_probes = _DriverLogCount(PROBE_WARNING)
    logging.getLogger("ray.serve").addHandler(driver_probes)
    run_handle(handle, warmup, 8)
    run_http(url, warmup, 8)
    from rmcluster.client import HandleRewardClient

    one_hop, via_ingress = HandleRewardClient("bench", one_hop=True), HandleRewardClient("bench", one_hop=False)
    run_client(one_hop, "client1", warmup, 8)
    run_client(via_ingress, "client2", warmup, 8)

    split = tokenize_vs_forward(engine, requests[:64])
    rows = []
    for clients in args.clients:
        # Interleaved per concurrency level, so drift on a shared machine hits every path alike.
        for run in (lambda: run_engine(engine, requests, clients), lambda: run_handle(handle, requests, clients),
                    lambda: run_client(one_hop, "client1", requests, clients),
                    lambda: run_client(via_ingress, "client2", requests, clients),
                    lambda: run_http(url, requests, clients)):
            rows.append(run())
            print(_fmt(rows[-1]), flush=True)
    model = serve.get_deployment_handle("RewardModelServer", "bench")
    stats = LOOP.run_until_complete(_await(lambda: model.stats.remote()))
    serve.shutdown()
    probe_warnings = _count_in_serve_logs(context.address_info["session_dir"], PROBE_WARNING)
    if driver_probes.count:
        probe_warnings["driver"] = driver_probes.count
    ray.shutdown()

    report = _report(rows, split, probe_warnings, stats, args)
    print(report["text"])
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in report.items() if k != "text"}, indent=2))
    return 0


def _fmt(r: dict) -> str:
    return (f"  {r['path']:<8} clients={r['clients']:<3} {r['items_per_s']:8.1f} items/s   "
            f"p50 {r['p50_ms']:7.1f} ms   p99 {r['p99_ms']:7.1f} ms")


def _report(rows: list[dict], split: dict, probe_warnings: int, stats: dict, args) -> dict:
    by = {(r["path"], r["clients"]): r for r in rows}
    lines = [f"\nshape={args.shape} requests={args.requests} threads={args.threads} "
             f"batch_wait_ms={args.batch_wait_ms} max_ongoing_requests={args.max_ongoing_requests} "
             f"access_log={args.access_log} "
             f"RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S={os.environ.get('RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S', '0.1 (default)')}", "clients  handle/engine  client 1 hop/engine  client 2 hops/engine  http/engine  (throughput)"]
    ratios = {}
    for c in args.clients:
        e = by[("engine", c)]["items_per_s"]
        ratios[c] = {p: by[(p, c)]["items_per_s"] / e for p in ("handle", "client1", "client2", "http")}
        lines.append(f"{c:>7}  {ratios[c]['handle']:13.2f}  {ratios[c]['client1']:19.2f}  {ratios[c]['client2']:20.2f}"
                     f"  {ratios[c]['http']:11.2f}")
    best_engine = max(by[("engine", c)]["items_per_s"] for c in args.clients)
    best_handle = max(by[("handle", c)]["items_per_s"] for c in args.clients)
    first = min(args.clients)
    http_overhead = by[("http", first)]["p50_ms"] - by[("engine", first)]["p50_ms"]
    best_client = max(by[("client1", c)]["items_per_s"] for c in args.clients)
    lines += [
        f"target one-hop client >= 90% of engine at 8 and 32 clients: "
        + ", ".join(f"{c} clients {ratios[c]['client1']:.0%}" for c in args.clients)
        + f" (best {best_client:.1f} items/s)",
        f"target handle >= 70% of engine: best handle {best_handle:.1f} / best engine {best_engine:.1f} items/s "
        f"= {best_handle / best_engine:.0%}",
        f"target 1-client HTTP p50 <= engine p50 + 15 ms: +{http_overhead:.1f} ms ({first} client(s))",
        f"per request on the engine path: tokenize {split['tokenize_ms']:.2f} ms, forward {split['forward_ms']:.2f} ms "
        "(the Serve paths tokenize in the ingress, off the model replica)",
        f"model replica: {stats}",
        f"router 'Failed to get queue length' warnings (Serve logs, by process): {probe_warnings or 'none'}",
    ]
    return {"rows": rows, "ratios": ratios, "tokenize_vs_forward": split, "replica_stats": stats,
            "probe_warnings": probe_warnings, "text": "\n".join(lines)}


if __name__ == "__main__":
    sys.exit(main())
