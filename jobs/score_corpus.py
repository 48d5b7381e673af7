"""Score a corpus into a resumable Parquet results store on a Ray cluster.

    python -m jobs.score_corpus --input corpus/ --output results/ --model demo
    ray job submit --working-dir . -- python -m jobs.score_corpus --input 's3://b/c/*.jsonl' --output s3://b/r --model M

The job reads in four steps:
  1. build the dataset: every JSONL line / Parquet row as one unparsed row (jobs/inputs.py);
  2. tokenize on CPU actors: parse, expand, template, tokenize; skip (id, index) already stored;
  3. score on a model actor pool (`map_batches` + `ActorPoolStrategy`, `num_gpus` per actor),
     or, with --serve-app, through a running Serve app's handle;
  4. write atomic Parquet files into the store, then summary.json and report.html (with the
     evaluation per subset when the records are preference pairs or carry a subset, as `rmcluster eval`).
Rerunning the same command on the same output scores only what is missing (see rmcluster/store.py).
Exit status: 0 done; 1 the error rate exceeded --max-error-rate (the rows are written); 2 bad
arguments, missing input, an unloadable model (checked before any cluster work), or another job
running on the same --output (one job per results store; a killed job's lock is taken over).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Optional

from pydantic import ValidationError

from rmcluster.config import RMConfig
from rmcluster.config_cli import add_config_flags, config_from_args
from rmcluster.demo_model import DEMO_MODEL_NAME, MEANINGLESS
from rmcluster.scorers import check_loadable
from rmcluster.store import ResultsStore
from rmcluster.store_summary import format_store_summary, run_figures, summarize_store, write_store_summary

from .config import JobConfig

IO_CPUS = 0.25
SERVE_PROBE = {"id": "rmcluster-job-probe", "text": "probe"}


class PreflightError(Exception):
    """The job cannot start; the message says why. Raised before anything is scored."""


def check_model(config: RMConfig) -> None:
    try:
        check_loadable(config)
    except Exception as err:  # noqa: BLE001 - any failure here means the model is unusable
        raise PreflightError(str(err)) from None


def preflight(config: JobConfig) -> tuple:
    """Inputs exist and the model loads (tokenizer and config; weight files exist), without touching Ray."""
    from .inputs import expand_input

    try:
        fs, files = expand_input(config.input)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise PreflightError(str(err)) from None
    if config.serve.app is None:
        check_model(config.scoring)
    return fs, files


def _num_gpus(config: JobConfig) -> float:
    import ray

    if config.scorer.num_gpus is not None:
        return config.scorer.num_gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def _serve_model_name(app: str) -> str:
    """The app's model name (it labels rows for invalid JSON, which never reach the app); fails fast."""
    from rmcluster.client import HandleRewardClient

    try:
        return HandleRewardClient(app).score_records([SERVE_PROBE])[0]["model"]
    except Exception as err:  # noqa: BLE001 - unknown app, or one that does not speak score_records
        raise PreflightError(f"Serve app {app!r} is not usable: {type(err).__name__}: {err}") from None


def _check_same_model(store: ResultsStore, model: str) -> None:
    """Resuming with another model would mix two models' scores in one store."""
    other = store.models() - {model}
    if other:
        raise PreflightError(f"{store.uri} holds results of model {sorted(other)}, not {model!r}; "
                             "use a new --output for another model")


def build_dataset(config: JobConfig, fs, files: list[str], done, model: str):
    """Steps 1-3: read, tokenize, score (actor pool or Serve). Returns the dataset of result rows."""
    import ray
    from ray.data import ActorPoolStrategy

    from .inputs import CorpusDatasource
    from .stages import EncodeStage, ScoreStage, ServeScoreStage

    # Reading and writing are I/O: a quarter CPU each leaves the cores to the actors (and fits 2-CPU boxes).
    ds = ray.data.read_datasource(CorpusDatasource(files, filesystem=fs), num_cpus=IO_CPUS)
    tok = config.tokenizer
    if config.serve.app is not None:
        return ds.map_batches(
            ServeScoreStage,
            compute=ActorPoolStrategy(size=config.serve.callers),
            num_cpus=IO_CPUS,  # it waits on the app; the replicas hold the CPUs/GPUs
            batch_size=tok.batch_size,
            batch_format="pyarrow",
            fn_constructor_kwargs={"app": config.serve.app, "done_keys": done, "model": model,
                                   "requests_in_flight": config.serve.requests_in_flight},
        )
    ds = ds.map_batches(
        EncodeStage,
        compute=ActorPoolStrategy(min_size=1, max_size=tok.max_size),
        num_cpus=tok.num_cpus,
        batch_size=tok.batch_size,
        batch_format="pyarrow",
        fn_constructor_kwargs={"config": config.scoring, "done_keys": done},
    )
    pool = config.scorer
    return ds.map_batches(
        ScoreStage,
        compute=ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size),
        num_gpus=_num_gpus(config),
        num_cpus=pool.num_cpus,
        batch_size=pool.batch_size,
        batch_format="pyarrow",
        fn_constructor_kwargs={"config": config.scoring},
    )


def finish(store: ResultsStore, config: JobConfig, model: str, written: dict, wall: float, already_done: int,
           took_over: Optional[str] = None) -> dict:
    """Step 4b: one row per key, then summary.json and report.html over the whole store (the same as
    `rmcluster eval` writes), with this run's figures apart under `run`."""
    run = run_figures(written["rows"], written["files"], written["tokens"], already_done, wall)
    if took_over is not None:
        run["lock_taken_over_from"] = took_over  # a killed job's lock, left behind
    table, summary = summarize_store(store, model, run, config.input)
    if config.serve.app:
        summary["serve_app"] = config.serve.app
    write_store_summary(store, table, summary, title=f"rmcluster results: {config.output}")
    return summary


def run(config: JobConfig, fs, files: list[str]) -> dict:
    """Steps 1-4 under the store's lock: one job per output directory (a dead job's lock is taken over)."""
    from rmcluster.store_lock import StoreLock, StoreLocked

    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    try:
        lock = StoreLock(config.output, run_id)
        lock.acquire()
    except StoreLocked as err:
        raise PreflightError(str(err)) from None
    except OSError as err:  # the lock is the store's first write: a bucket that refuses it fails before scoring
        raise PreflightError(f"output {config.output} is not writable: {err}") from None
    try:
        return _run_locked(config, fs, files, run_id, lock.took_over.describe() if lock.took_over else None)
    finally:
        lock.release()


def _run_locked(config: JobConfig, fs, files: list[str], run_id: str, took_over: Optional[str]) -> dict:
    import ray

    from .sink import StoreDatasink

    store = ResultsStore(config.output)
    model = config.scoring.model.name
    if config.serve.app is None:
        _check_same_model(store, model)
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS (set by `ray job submit`) or a local cluster
    if config.serve.app is not None:
        model = _serve_model_name(config.serve.app)
        _check_same_model(store, model)
    store.remove_temp_files()  # a killed writer's leftovers never counted
    done = store.done_keys()  # unique keys: repeats in the store are removed by finish()'s dedupe
    start = time.perf_counter()
    ds = build_dataset(config, fs, files, done, model)
    sink = StoreDatasink(config.output, run_id, config.rows_per_file)
    ds.write_datasink(sink, ray_remote_args={"num_cpus": IO_CPUS})
    return finish(store, config, model, sink.written, time.perf_counter() - start, int(done.size), took_over)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.score_corpus",
        description="Score a JSONL/Parquet corpus on Ray into a resumable Parquet results store.",
    )
    add_config_flags(parser, JobConfig)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args, JobConfig)
        fs, files = preflight(config)
    except (PreflightError, ValidationError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.serve.app is None and config.scoring.model.name == DEMO_MODEL_NAME:
        print(f"note: {MEANINGLESS}", file=sys.stderr)
    print(f"scoring {len(files)} file(s) from {config.input} into {config.output}", file=sys.stderr)
    try:
        summary = run(config, fs, files)
    except PreflightError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"results store {config.output}\n{format_store_summary(summary)}")
    rate = summary["errors"] / summary["items"] if summary["items"] else 0.0
    if config.max_error_rate is not None and rate > config.max_error_rate:
        print(f"error: error rate {rate:.4f} ({summary['errors']} of {summary['items']} items) exceeds "
              f"--max-error-rate {config.max_error_rate}; the rows are in {config.output}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
