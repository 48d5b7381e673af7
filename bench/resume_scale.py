"""Resume at corpus scale: a results store of N rows (written directly, no scoring), then what a resumed job pays
before it scores anything, and in all.

    python bench/resume_scale.py --rows 10000000

1. `ResultsStore.done_keys()` alone, in a fresh process: seconds and peak RSS (the job's bookkeeping: one
   16-byte digest per stored key, sorted).
2. The corpus job itself, resumed over that store with a corpus of `--new` records not yet stored among
   `--stored` that are: seconds to its first committed results file (start-up: preflight, lock, done keys, Ray,
   then one batch scored) and in all, and the driver's peak RSS at both points. Target (issue 14): start-up under 60 s and 2 GB at 10M rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FILE_ROWS = 250_000  # the job's default rows per file is far smaller; bigger files only make reading cheaper


def write_store(path: Path, rows: int, model: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rmcluster.store import DATA_DIR, STORE_SCHEMA

    (path / DATA_DIR).mkdir(parents=True)
    now = pa.scalar(0, pa.timestamp("us", tz="UTC"))
    for k, start in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - start)
        cols = {f.name: pa.nulls(n, f.type) for f in STORE_SCHEMA}
        cols["id"] = pa.array([f"r{i}" for i in range(start, start + n)])
        cols["index"] = pa.array([0] * n, pa.int64())
        cols["score"] = pa.array([float(i % 97) / 10 - 4 for i in range(start, start + n)])
        cols["num_tokens"] = pa.array([100] * n, pa.int64())
        cols["truncated"] = pa.array([False] * n)
        cols["model"] = pa.array([model] * n)
        cols["scored_at"] = pa.array([now] * n, pa.timestamp("us", tz="UTC"))
        pq.write_table(pa.table(cols, schema=STORE_SCHEMA), path / DATA_DIR / f"part-synthetic-{k:05d}.parquet")


def measure_done_keys(store: Path) -> dict:
    code = ("import time, resource, json, sys; from rmcluster.store import ResultsStore; t = time.perf_counter(); "
            "k = ResultsStore(sys.argv[1]).done_keys(); print(json.dumps({'seconds': time.perf_counter() - t, "
            "'keys': int(k.size), 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    out = subprocess.run([sys.executable, "-c", code, str(store)], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024  # peak so far


def measure_job(store: Path, corpus: Path, model: str) -> dict:
    """Seconds until the job commits its first results file (start-up plus scoring the first batch), the driver's
    peak RSS by then, and both at the end."""
    argv = [sys.executable, "-m", "jobs.score_corpus", "--input", str(corpus), "--output", str(store), "--model", model]
    before = set((store / "data").iterdir())
    log = tempfile.TemporaryFile("w+")
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    first_file = first_peak = None
    peak = 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, _peak_rss_mb(proc.pid))
        except (OSError, StopIteration):
            pass
        if first_file is None and set((store / "data").iterdir()) - before:
            first_file, first_peak = time.perf_counter() - start, peak
        time.sleep(0.1)
    total = time.perf_counter() - start
    log.seek(0)
    lines = log.readlines()
    if proc.returncode != 0:
        raise RuntimeError("".join(lines[-40:]))
    return {"first_file_s": first_file, "peak_at_first_file_mb": first_peak, "total_s": total,
            "driver_peak_rss_mb": peak, "tail": lines[-25:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--stored", type=int, default=900, help="corpus records already in the store")
    ap.add_argument("--new", type=int, default=100, help="corpus records not yet scored")
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    args = ap.parse_args()

    from rmcluster.demo_model import demo_model_path

    model = str(demo_model_path())
    work = Path(args.dir or tempfile.mkdtemp(prefix="resume-scale-"))
    store, corpus = work / "store", work / "corpus.jsonl"
    start = time.perf_counter()
    write_store(store, args.rows, model)
    print(f"wrote {args.rows} rows in {time.perf_counter() - start:.1f} s "
          f"({sum(p.stat().st_size for p in store.rglob('*.parquet')) / 2**20:.0f} MiB)", flush=True)
    with corpus.open("w") as f:
        for i in list(range(args.stored)) + list(range(args.rows, args.rows + args.new)):
            f.write(json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                                            {"role": "assistant", "content": f"answer {i}"}]}) + "\n")
    keys = measure_done_keys(store)
    print(f"done_keys: {keys['keys']} keys in {keys['seconds']:.1f} s, peak RSS {keys['peak_rss_mb']:.0f} MiB", flush=True)
    job = measure_job(store, corpus, model)
    print("".join(job["tail"]))
    print(f"\nresumed job over {args.rows} stored rows ({args.stored} of its records stored, {args.new} new): "
          f"first results file after {job['first_file_s']:.1f} s (driver peak RSS by then "
          f"{job['peak_at_first_file_mb']:.0f} MiB; targets: start-up < 60 s, < 2 GB), done in {job['total_s']:.1f} s "
          f"(driver peak RSS {job['driver_peak_rss_mb']:.0f} MiB)")


if __name__ == "__main__":
    main()
