"""rmcluster against vLLM, side by side in one run, on the same model, corpora and cores.

    make bench-peers                               # vLLM's CPU build into .venv-vllm (never .venv), then this
    python bench/peers/compare.py --skip-http      # offline only
    python bench/peers/compare.py --json out.json

Offline, per corpus (realistic mix, best-of-8 with 500-token prompts and 200-token responses, short):
the plain HF loop (one conversation at a time), rmcluster in-process on records, on pre-templated
text and on token ids (tokenizing included), and vLLM's `LLM.classify` on token ids with its prefix
cache off and on, each pass from a cold cache; the fastest of `--rounds` passes each. Over HTTP,
GRPO-shaped steps as veRL's reward loop sends them (aiohttp, a new session per request): one `/classify`
request per sample (templated text, BOS stripped), 12 groups of 8 sharing a prompt, all sent at once,
new prompts every step: `serve run` (one model replica, the batch waits given; Ray Serve's default environment
and its high-throughput one, HAProxy + gRPC, as `make demo` and the cluster configs run it; the model
replica answering HTTP itself, as serve.config.yaml ships, or behind a separate ingress) against
`vllm serve --runner pooling`, one server at a time. Scores: max |difference| from the HF loop.
The model is the random hidden-256, 4-layer Llama classifier (float32): its scores are meaningless.

vLLM runs twice, offline and over HTTP: as it sets itself up (`--vllm-cores auto`: on x86 it keeps one
core for its scheduler process and binds its compute threads to the rest, so on a 2-core box its model
runs on one thread) and with every core computing (`all`: `VLLM_CPU_OMP_THREADS_BIND` set to every core
this process may run on, as rmcluster's torch threads use them). Ratios are printed against both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from bench.engine import make_mix  # noqa: E402
from bench.workload import DEMO_SHAPES  # noqa: E402
from rmcluster.config import RMConfig  # noqa: E402
from rmcluster.demo_model import demo_model_path  # noqa: E402
from rmcluster.engine import ScoringEngine  # noqa: E402
from rmcluster.pipeline import score_records  # noqa: E402

SIZES = {"realistic": 225, "best-of-8": 96, "short": 400}
GROUP, GROUPS_PER_STEP = 8, 12


# -- corpora --------------------------------------------------------------------------------------
def corpus(tokenizer, name: str, n: int, seed: int) -> dict:
    convs = make_mix(name, n, seed)
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in convs]
    ids = [list(tokenizer.apply_chat_template(c, tokenize=True)["input_ids"]) for c in convs]
    assert all(tokenizer(t, add_special_tokens=False)["input_ids"] == i for t, i in zip(texts, ids))
    if name == "best-of-8":  # as records: the prompt once, its 8 responses
        records = [{"id": str(k), "prompt": convs[k][0]["content"],
                    "responses": [c[1]["content"] for c in convs[k : k + GROUP]]} for k in range(0, n, GROUP)]
    else:
        records = [{"id": str(k), "messages": c} for k, c in enumerate(convs)]
    return {"convs": convs, "texts": texts, "ids": ids, "records": records, "tokens": sum(map(len, ids))}


# -- offline --------------------------------------------------------------------------------------
def _best(run, rounds: int) -> dict:
    best: dict = {"seconds": float("inf")}
    for _ in range(rounds):
        start = time.perf_counter()
        scores = run()
        seconds = time.perf_counter() - start
        if seconds < best["seconds"]:
            best = {"seconds": seconds, "scores": scores}
    return best


def hf_loop(model_dir: Path, corpora: dict, rounds: int) -> dict:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa").eval()
    out = {}
    with torch.inference_mode():
        model(torch.tensor([corpora["_warmup"]["ids"][0]]))
        for name, c in corpora.items():
            out[name] = _best(lambda: [model(torch.tensor([ids])).logits[0][0].item() for ids in c["ids"]], rounds)
    return out


def rmcluster_offline(model_dir: Path, corpora: dict, rounds: int) -> dict:
    engine = ScoringEngine.from_config(RMConfig(model={
        "name": str(model_dir), "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"}))
    score_records(engine, corpora["_warmup"]["records"])
    out = {}
    for name, c in corpora.items():
        for shape, raws in (("records", c["records"]), ("text", [{"text": t} for t in c["texts"]]),
                            ("input_ids", [{"input_ids": i} for i in c["ids"]])):
            out[f"{name}|{shape}"] = _best(lambda: [r["score"] for r in score_records(engine, raws)], rounds)
    return out


VLLM_CORES = ("auto", "all")


def vllm_cores_env(cores: str) -> dict:
    """vLLM's CPU thread binding: "auto" as it chooses (one core kept for its scheduler on x86), "all" every
    core of this process computing."""
    if cores == "auto":
        return {}
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, sorted(os.sched_getaffinity(0))))}


def _vllm_cores(value: str) -> list[str]:
    """--vllm-cores: a comma list of VLLM_CORES, checked before anything runs."""
    modes = value.split(",")
    bad = [m for m in modes if m not in VLLM_CORES]
    if bad:
        raise argparse.ArgumentTypeError(f"takes {' and '.join(VLLM_CORES)}, not {', '.join(bad)}")
    return modes


def vllm_offline(vllm_python: str, model_dir: Path, corpora: dict, work: Path, rounds: int, cores: str) -> dict:
    payload = {name: c["ids"] for name, c in corpora.items() if name != "_warmup"}
    payload["_warmup"] = corpora["_warmup"]["ids"][:8]
    (work / "corpora.json").write_text(json.dumps(payload))
    out = work / f"vllm-{cores}.json"
    with open(work / f"vllm-offline-{cores}.log", "w") as log:  # its thread binding is logged here
        subprocess.run([vllm_python, str(ROOT / "bench/peers/vllm_offline.py"), str(model_dir),
                        str(work / "corpora.json"), str(out), str(rounds)], check=True, cwd=work, stdout=log,
                       stderr=subprocess.STDOUT, env={**os.environ, **vllm_cores_env(cores)})
    return json.loads(out.read_text())


# -- HTTP -----------------------------------------------------------------------------------------
async def grpo_steps(url: str, model: str, steps: list[list[str]]) -> dict:
    """Each step: every sample's /classify request at once; latency per request, seconds per step.

    Sent as veRL's reward loop sends them (`RewardLoopWorker._post_request`): aiohttp, a new
    ClientSession (so a new connection) per request, `use_activation: false`.
    """
    import aiohttp

    async def one(text: str) -> float:
        start = time.perf_counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            async with session.post(f"{url}/classify", json={"model": model, "input": text,
                                                             "use_activation": False}) as r:
                r.raise_for_status()
                await r.json()
        return time.perf_counter() - start

    latencies, step_seconds = [], []
    await asyncio.gather(*(one(t) for t in steps[0]))  # warm-up step (other prompts)
    for texts in steps[1:]:
        start = time.perf_counter()
        latencies += await asyncio.gather(*(one(t) for t in texts))
        step_seconds.append(time.perf_counter() - start)
    latencies.sort()
    return {"step_seconds": step_seconds, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def _stop(proc: subprocess.Popen, port: int) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Ray's proxy can outlive `serve run` for a while, and HAProxy (high-throughput mode) altogether: the
    # next server's health check must not reach this one, which then goes away mid-step (the suspected,
    # unproven cause of a "Server disconnected" seen twice in a warm-up step). A leftover HAProxy is
    # stopped after 10 s (no other HAProxy runs on a benchmark machine).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        if time.monotonic() > deadline - 50:
            subprocess.run(["pkill", "-x", "haproxy"], check=False)
        time.sleep(0.5)
    raise RuntimeError(f"port {port} still answers 60 s after its server stopped")


_STATS = """
import json, ray
from ray import serve
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
print(json.dumps(serve.get_deployment_handle("RewardModelServer", "reward").stats.remote().result(timeout_s=60)))
"""


def _replica_stats() -> dict:
    """The rmcluster model replica's counters (forward seconds, tokens shared, prefix cache), for the profile.

    From a fresh process each time: Serve's handles in a driver outlive `ray.shutdown()`, and a second
    server's stats asked from this process went to the first one's dead replica until timeout."""
    out = subprocess.run([sys.executable, "-c", _STATS], check=True, capture_output=True, text=True, timeout=180)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed_server(command: list[str], cwd: Path, log_path: Path, port: int, steps: list[list[str]],
                  env: dict | None = None, stats: bool = False) -> dict:
    """Start a server, wait for /health, run the GRPO steps against it, stop it."""
    from serve.demo import wait_healthy

    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, timeout_s=600)
            result = asyncio.run(grpo_steps(f"http://127.0.0.1:{port}", "rm", steps))
            if stats:
                result["replica_stats"] = _replica_stats()
            return result
        finally:
            _stop(proc, port)


def serve_http(model_dir: Path, wait_s: float, steps: list[list[str]], work: Path, port: int,
               mode: str = "throughput", ingress: str = "colocated", budget: Optional[int] = None) -> dict:
    """`serve run` of the shipped config with this model; `mode` "throughput": Serve's high-throughput
    environment as `make demo` and the cluster configs set it, "default": Ray Serve's defaults;
    `ingress` "colocated" as shipped (the model replica answers HTTP), "separate": an ingress replica
    of a quarter CPU in front of it. `budget`: the engine's max_batch_tokens (None: the config's)."""
    from serve.demo import HIGH_THROUGHPUT_ENV

    config = yaml.safe_load((ROOT / "serve.config.yaml").read_text())
    config["http_options"]["port"] = port
    args = config["applications"][0]["args"]
    args["rm"]["model"] = {"name": str(model_dir), "dtype": "float32", "attn_implementation": "sdpa"}
    if budget is not None:
        args["rm"].setdefault("batching", {})["max_batch_tokens"] = budget
    server = args["model_server"]
    server.pop("autoscaling_config")
    server.update(num_replicas=1, batch_wait_timeout_s=wait_s, max_ongoing_requests=256, max_queued_requests=1024)
    if ingress == "separate":
        args["ingress"] = {**args["ingress"], "colocated": False, "num_replicas": 1, "num_cpus": 0.25}
    name = f"serve-{mode}-{ingress}-{wait_s}-{budget}"
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = HIGH_THROUGHPUT_ENV if mode == "throughput" else {k: "0" for k in HIGH_THROUGHPUT_ENV}
    return _timed_server([str(Path(sys.executable).parent / "serve"), "run", str(path)], ROOT,
                         work / f"{name}.log", port, steps, env, stats=True)


def vllm_http(vllm_python: str, model_dir: Path, steps: list[list[str]], work: Path, port: int, cores: str) -> dict:
    # `vllm serve` itself, by module: the CLI wrapper looks up a distribution named "vllm", and the CPU
    # build's is "vllm-cpu".
    command = [vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--runner",
               "pooling", "--dtype", "float32", "--enforce-eager", "--served-model-name", "rm",
               "--gpu-memory-utilization", "0.3", "--port", str(port), "--host", "127.0.0.1"]
    return _timed_server(command, work, work / f"vllm-serve-{cores}.log", port, steps, vllm_cores_env(cores))


# -- report ---------------------------------------------------------------------------------------
def _max_diff(a: list, b: list) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"))
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--skip-offline", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="offline passes per method; the fastest counts")
    ap.add_argument("--steps", type=int, default=3, help="timed GRPO steps per server (after one warm-up step)")
    ap.add_argument("--waits", default="0.002", help="rmcluster batch_wait_timeout_s values to measure")
    ap.add_argument("--budgets", default="",
                    help="rmcluster max_batch_tokens values to measure over HTTP (default: the config's own)")
    ap.add_argument("--serve-modes", default="default,throughput",
                    help="Ray Serve environments to measure: default, throughput (HAProxy + gRPC, as make demo runs)")
    ap.add_argument("--ingress", default="colocated,separate",
                    help="rmcluster HTTP front: colocated (as serve.config.yaml ships), separate (an ingress replica)")
    ap.add_argument("--vllm-cores", type=_vllm_cores, default="auto,all",
                    help="vLLM thread bindings to measure: auto (its own: one core kept for its scheduler), all")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if not Path(args.vllm_python).exists():
        sys.exit(f"{args.vllm_python} not found: `make bench-peers` installs vLLM's CPU build there")

    from transformers import AutoTokenizer

    model_dir = demo_model_path(DEMO_SHAPES["small"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    work = Path(tempfile.mkdtemp(prefix="rm-peers-"))
    vllm_cores = args.vllm_cores
    figures: dict = {"model": "random Llama classifier, hidden 256, 4 layers, float32 (scores meaningless)",
                     "torch_threads": torch.get_num_threads()}
    if not args.skip_offline:
        corpora = {name: corpus(tokenizer, name, n, seed=7) for name, n in SIZES.items()}
        corpora["_warmup"] = corpus(tokenizer, "short", 16, seed=99)
        hf = hf_loop(model_dir, corpora, args.rounds)
        rm = rmcluster_offline(model_dir, corpora, args.rounds)
        peers = {cores: vllm_offline(args.vllm_python, model_dir, corpora, work, args.rounds, cores) for cores in vllm_cores}
        print(f"\nOffline, fastest of {args.rounds} cold passes ({figures['model']}; torch threads {figures['torch_threads']})")
        print("  " + ", ".join(f"{n}: {len(corpora[n]['ids'])} items, {corpora[n]['tokens']:,} tokens" for n in SIZES))
        print(f"{'corpus':<11} {'method':<34} {'tok/s':>9} {'x HF loop':>9} "
              + " ".join(f"{'x vLLM cache, ' + c:>20}" for c in vllm_cores) + f" {'max |diff|':>10}")
        for name in SIZES:
            tokens, ref = corpora[name]["tokens"], hf[name]["scores"]
            hf_tps = tokens / hf[name]["seconds"]
            bases = [tokens / peers[c][f"{name}|cache"]["seconds"] for c in vllm_cores]
            rows = {"HF loop": hf[name], **{f"rmcluster {s}": rm[f"{name}|{s}"] for s in ("records", "text", "input_ids")}}
            for c in vllm_cores:
                rows[f"vLLM no prefix cache, cores {c}"] = peers[c][f"{name}|nocache"]
                rows[f"vLLM prefix cache, cores {c}"] = peers[c][f"{name}|cache"]
            figures[name] = {}
            for method, r in rows.items():
                tps = tokens / r["seconds"]
                figures[name][method] = {"tok_s": tps, "max_diff": _max_diff(r["scores"], ref)}
                print(f"{name:<11} {method:<34} {tps:>9.0f} {tps / hf_tps:>9.2f} "
                      + " ".join(f"{tps / b:>20.2f}" for b in bases) + f" {figures[name][method]['max_diff']:>10.1e}")
        _save(args.json, figures)  # the offline figures survive a failing HTTP part
    if not args.skip_http:
        convs = make_mix("best-of-8", GROUP * GROUPS_PER_STEP * (args.steps + 1), seed=11)
        bos = tokenizer.bos_token or ""
        texts = [tokenizer.apply_chat_template(c, tokenize=False).removeprefix(bos) for c in convs]  # as veRL sends
        per_step = GROUP * GROUPS_PER_STEP
        steps = [texts[k : k + per_step] for k in range(0, len(texts), per_step)]
        tokens = sum(len(tokenizer(t)["input_ids"]) for s in steps[1:] for t in s) / args.steps
        budgets = [int(b) for b in args.budgets.split(",") if b] or [None]
        results = {f"vllm serve, cores {c}": vllm_http(args.vllm_python, model_dir, steps, work, 8811, c)
                   for c in vllm_cores}
        for mode in args.serve_modes.split(","):
            for ingress in args.ingress.split(","):
                for wait in (float(w) for w in args.waits.split(",")):
                    for budget in budgets:
                        label = f"rmcluster {mode}, {ingress}, wait {wait:g}s" + (f", budget {budget}" if budget else "")
                        results[label] = serve_http(model_dir, wait, steps, work, 8812, mode, ingress, budget)
                        _save(args.json, {**figures, "http_raw": results})  # what ran survives a later failure
        bases = [tokens / statistics.median(results[f"vllm serve, cores {c}"]["step_seconds"]) for c in vllm_cores]
        print(f"\nHTTP, GRPO steps of {per_step} per-sample /classify requests at once ({tokens:.0f} tokens/step), "
              f"median of {args.steps} cold steps")
        print(f"{'server':<57} {'s/step':>7} {'tok/s':>8} " + " ".join(f"{'x vllm ' + c:>11}" for c in vllm_cores)
              + f" {'p50 ms':>8} {'p99 ms':>8}  replica")
        figures["http"] = {}
        for name, r in results.items():
            step = statistics.median(r["step_seconds"])
            figures["http"][name] = {**r, "tok_s": tokens / step}
            st = r.get("replica_stats")
            replica = (f"forwards {st['forward_seconds']:.1f} s, {st['forward_passes']} passes, shared "
                       f"{st['reused_tokens'] / st['tokens']:.0%}, prefix cache {st['prefix_cache'].get('reused_tokens', 0):,} "
                       f"tokens") if st else ""
            print(f"{name:<57} {step:>7.2f} {tokens / step:>8.0f} "
                  + " ".join(f"{tokens / step / b:>11.2f}" for b in bases) + f" {r['p50_ms']:>8.0f} "
                  f"{r['p99_ms']:>8.0f}  {replica}")
    print(f"\nlogs in {work}")
    _save(args.json, figures)


def _save(path, figures: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
