"""Job benchmark: one corpus scored three ways in one run, and the job's overhead as a ratio.

    python bench/job.py                     # CPU: hidden-256, 4-layer demo-tokenizer Llama, 1,000 records
    python bench/job.py --records 5000 --rounds 3 --json out.json

  engine   in-process `rmcluster.pipeline.score_records` (parse, template, tokenize, score)
  job      `jobs.score_corpus` with its own actor pool: one scoring actor
  serve    `jobs.score_corpus --serve-app`: the same job through the rmcluster Serve app (one replica)

Job figures are end to end (actor start, model load, read, write, summary) over wall time, so the
ratio job/engine includes all of the job's overhead; the target is >= 0.70 with one scoring actor.
The scoring actor and the Serve replica get as many CPUs (torch threads) as the engine uses.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rmcluster.config import RMConfig  # noqa: E402
from rmcluster.demo_model import demo_model_path  # noqa: E402

from bench.workload import DEMO_SHAPES as SHAPES, long_tail, words  # noqa: E402


def make_corpus(path: Path, n: int, seed: int = 0) -> None:
    """Preference pairs with long-tailed prompts (20-400 words) and responses (20-1,000 words)."""
    rng = random.Random(seed)

    def text(median: float, lo: int, hi: int) -> str:
        return words(rng, long_tail(rng, median, 0.8, lo, hi))

    with path.open("w") as f:
        for i in range(n):
            rec = {"id": f"b{i}", "prompt": text(90, 20, 400), "chosen": text(200, 20, 1000),
                   "rejected": text(200, 20, 1000)}
            f.write(json.dumps(rec) + "\n")


def bench_engine(config: RMConfig, corpus: Path) -> dict:
    from rmcluster.corpus import iter_records
    from rmcluster.engine import ScoringEngine
    from rmcluster.pipeline import score_records

    engine = ScoringEngine.from_config(config)
    records = [r for chunk in iter_records(corpus) for r in chunk]
    score_records(engine, records[:8])  # warm-up: first-call allocations
    start = time.perf_counter()
    rows = score_records(engine, records)
    seconds = time.perf_counter() - start
    return {"items": len(rows), "tokens": sum(r["num_tokens"] for r in rows if r["error"] is None), "seconds": seconds}


def bench_job(config: RMConfig, corpus: Path, out: Path, cpus: int, serve_app: str | None = None) -> dict:
    from jobs.config import JobConfig
    from jobs.score_corpus import preflight, run

    job = JobConfig(input=str(corpus), output=str(out), scoring=config,
                    scorer={"min_size": 1, "max_size": 1, "num_cpus": cpus, "num_gpus": 0},
                    serve={"app": serve_app, "requests_in_flight": 8})
    fs, files = preflight(job)
    start = time.perf_counter()
    summary = run(job, fs, files)
    seconds = time.perf_counter() - start
    assert summary["errors"] == 0 and summary["run"]["rows_written"] == summary["items"], summary
    return {"items": summary["items"], "tokens": summary["tokens"], "seconds": seconds}


def bench_serve(config: RMConfig, corpus: Path, out: Path, cpus: int) -> dict:
    """The job through a freshly deployed app (deployed before the clock starts, deleted after)."""
    from ray import serve

    from serve.app import build_app
    from serve.args import ServeArgs

    name = "bench-job"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = ServeArgs(rm=config, model_server={"num_cpus": cpus, "num_replicas": 1},
                     ingress={"num_cpus": 0.5, "num_replicas": 1})
    serve.run(build_app(args), name=name, route_prefix=f"/{name}")
    try:
        return bench_job(config, corpus, out, cpus, serve_app=name)
    finally:
        serve.delete(name)  # its CPUs go back to the actor pool's next round


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000, help="preference pairs (2 items each)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are reported")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="torch threads: engine, scoring actor, replica")
    parser.add_argument("--skip-serve", action="store_true", help="only engine and actor-pool job")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray
    import torch

    torch.set_num_threads(args.cpus)
    config = RMConfig(model=str(demo_model_path(SHAPES[args.shape])))
    work = Path(tempfile.mkdtemp(prefix="rmcluster-bench-job-"))
    corpus = work / "corpus.jsonl"
    make_corpus(corpus, args.records)
    # Room for the scoring actor (or Serve replica) plus the tokenizer, read and write stages.
    ray.init(num_cpus=args.cpus + 2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    with_serve = not args.skip_serve
    if with_serve and importlib.util.find_spec("serve.app") is None:
        print("serve: skipped (no serve/app.py on this branch)", file=sys.stderr)
        with_serve = False

    results: dict[str, list[dict]] = {"engine": [], "job": [], "serve": []}
    for r in range(args.rounds):
        results["engine"].append(bench_engine(config, corpus))
        results["job"].append(bench_job(config, corpus, work / f"job-{r}", args.cpus))
        if with_serve:
            results["serve"].append(bench_serve(config, corpus, work / f"serve-{r}", args.cpus))

    table = {}
    for method, runs in results.items():
        if runs:
            seconds = statistics.median(x["seconds"] for x in runs)
            table[method] = {"items": runs[0]["items"], "tokens": runs[0]["tokens"], "seconds": round(seconds, 2),
                             "tokens_per_s": round(runs[0]["tokens"] / seconds, 1)}
    base = table["engine"]["tokens_per_s"]
    print(f"{args.records} pairs, shape {args.shape}, {args.cpus} torch threads, {args.rounds} round(s)")
    print(f"{'method':<8} {'items':>7} {'tokens':>9} {'seconds':>8} {'tokens/s':>9} {'vs engine':>9}")
    for method, row in table.items():
        row["ratio_vs_engine"] = round(row["tokens_per_s"] / base, 3)
        print(f"{method:<8} {row['items']:>7} {row['tokens']:>9} {row['seconds']:>8} {row['tokens_per_s']:>9} "
              f"{row['ratio_vs_engine']:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": table}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
