"""`rmcluster` command line: score or evaluate a file in-process (no Ray), compare two runs, build the demo model."""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path
from typing import Any

from .config_cli import add_config_flags, config_from_args
from .demo_model import DEMO_MODEL_NAME, MEANINGLESS


def _engine(args: argparse.Namespace) -> Any:
    """The scoring engine for the command's config, after checking the input (before loading a model)."""
    from .corpus import input_format
    from .engine import ScoringEngine

    config = config_from_args(args)
    input_format(args.input)  # fail on an unknown format before loading a model
    if not Path(args.input).is_file():
        raise FileNotFoundError(f"input not found: {args.input}")
    if config.model.name == DEMO_MODEL_NAME:
        print(f"note: {MEANINGLESS}", file=sys.stderr)
    return ScoringEngine.from_config(config)


def _cmd_score(args: argparse.Namespace) -> int:
    from .file_scoring import score_file
    from .results import parquet_file
    from .summary import format_summary, summarize

    engine = _engine(args)
    with parquet_file(args.output) as writer:
        run = score_file(engine, args.input, args.chunk_size, args.quiet, writer.write_table)
    summary = summarize(run.table(), run.wall_seconds)
    if run.reused_tokens:  # shared prompts: dense FLOPs scale with tokens, so this share of them was skipped
        summary["prompt_tokens_reused"] = run.reused_tokens
        summary["dense_flops_saved"] = run.reused_tokens / summary["tokens"]
    print(f"wrote {args.output}\n{format_summary(summary)}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    """`score` into a results store, then the evaluation: summary.json (per subset) and report.html."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from .file_scoring import score_file
    from .store import REPORT_FILE, STORE_SCHEMA, ResultsStore
    from .store_lock import StoreLock, StoreLocked
    from .store_summary import format_store_summary, run_figures, summarize_store, write_store_summary

    store = ResultsStore(args.output)
    if store.data_files():
        print(f"error: {args.output} already holds results; use a new --output (python -m jobs.score_corpus "
              "resumes a store)", file=sys.stderr)
        return 2
    engine = _engine(args)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    part = itertools.count()

    def write(table: pa.Table) -> None:  # one store file per chunk, as the job writes them
        stamp = pa.array([datetime.now(timezone.utc)] * table.num_rows, STORE_SCHEMA.field("scored_at").type)
        store.write_data(table.append_column("scored_at", stamp), f"part-{run_id}-{next(part):06d}.parquet")

    try:
        with StoreLock(args.output, run_id):  # the corpus job on the same store would mix two runs
            done = score_file(engine, args.input, args.chunk_size, args.quiet, write)
            figures = run_figures(done.rows, done.chunks, done.tokens, 0, done.wall_seconds)
            table, summary = summarize_store(store, engine.model_name, figures, str(Path(args.input).resolve()))
            write_store_summary(store, table, summary, title=f"rmcluster eval: {Path(args.input).name}")
    except StoreLocked as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote results store {args.output}\n{format_store_summary(summary)}\nreport: "
          f"{Path(args.output) / REPORT_FILE}")
    if "eval" not in summary:
        print("note: no preference pairs and no subsets in the input: nothing to evaluate", file=sys.stderr)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """Two runs side by side: compare.json and report.html in --output."""
    import json

    from .compare import COMPARE_FILE, attach_texts, compare_runs, format_comparison, input_of, load_run
    from .compare_report import render_compare_report
    from .store import REPORT_FILE, ResultsStore

    a, b = load_run(args.run_a), load_run(args.run_b)
    comparison = compare_runs(a, b, top=args.top)
    attach_texts(comparison, args.input or input_of(a, b))
    out = args.output or f"compare-{Path(args.run_a.rstrip('/')).name}-vs-{Path(args.run_b.rstrip('/')).name}"
    target = ResultsStore(out)  # the same atomic writes, local or object storage
    target.write_text(COMPARE_FILE, json.dumps(comparison, indent=2) + "\n")
    target.write_text(REPORT_FILE, render_compare_report(a, b, comparison))
    print(f"{format_comparison(comparison)}\nwrote {Path(out) / COMPARE_FILE} and {Path(out) / REPORT_FILE}")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from .store import SUMMARY_FILE, ResultsStore
    from .store_summary import format_store_summary
    from .summary import SUMMARY_COLUMNS, summarize

    store = ResultsStore(args.dir)
    summary = store.summary()
    if summary is None:
        files = store.data_files()
        if not files:
            print(f"error: no results store at {args.dir} (no {SUMMARY_FILE}, no data files)", file=sys.stderr)
            return 2
        # An unfinished or killed job: what its committed files hold (possibly with repeats).
        print(f"note: no {SUMMARY_FILE} (job not finished); computed from {len(files)} data files", file=sys.stderr)
        summary = summarize(store.read(SUMMARY_COLUMNS))
    print(f"{args.dir}\n{format_store_summary(summary)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo_model import SEED_PAIR
    from .engine import ScoringEngine
    from .pipeline import score_records

    config = config_from_args(args)
    engine = ScoringEngine.from_config(config)
    rows = score_records(engine, [SEED_PAIR])
    print(f"model: {config.model.name}\nprompt: {SEED_PAIR['prompt']}")
    for row in rows:
        print(f"  {row['label']:<8} score = {row['score']:.4f}  ({row['num_tokens']} tokens)")
    if config.model.name == DEMO_MODEL_NAME:
        print(f"note: {MEANINGLESS}")
    return 0


def _cmd_demo_model(args: argparse.Namespace) -> int:
    from .demo_model import build_demo_model, demo_model_path

    path = build_demo_model(args.dir) if args.dir else demo_model_path()
    print(f"{path}\n{MEANINGLESS}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmcluster", description="Reward-model scoring.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine resolved")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score a JSONL/Parquet file in-process and write Parquet results")
    score.add_argument("--input", required=True, help="records as .jsonl or .parquet")
    score.add_argument("--output", required=True, help="results .parquet (written atomically)")
    score.add_argument("--chunk-size", type=int, default=4096, help="records read and length-sorted together")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(score)
    score.set_defaults(func=_cmd_score)

    evaluate = sub.add_parser(
        "eval", help="score preference pairs (RewardBench format: prompt, chosen, rejected, subset) into a results "
        "store, with accuracy per subset, intervals and sections in summary.json and report.html")
    evaluate.add_argument("--input", required=True, help="records as .jsonl or .parquet; a `subset` or `category` "
                          "column groups them")
    evaluate.add_argument("--output", required=True, help="results store directory (new or empty)")
    evaluate.add_argument("--chunk-size", type=int, default=4096, help="records read and length-sorted together")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(evaluate)
    evaluate.set_defaults(func=_cmd_eval)

    compare = sub.add_parser("compare", help="compare two runs (results stores or score .parquet files): pair "
                             "agreement, rank correlation, accuracy per subset side by side, biggest disagreements")
    compare.add_argument("run_a", metavar="RUN_A", help="results store directory or .parquet (A)")
    compare.add_argument("run_b", metavar="RUN_B", help="results store directory or .parquet (B)")
    compare.add_argument("--output", help="directory for compare.json and report.html "
                         "[default: compare-<A>-vs-<B> in the current directory]")
    compare.add_argument("--input", help="the records' file or directory, for the text of disagreements "
                         "[default: the input named in A's or B's summary.json]")
    compare.add_argument("--top", type=int, default=10, help="disagreements shown")
    compare.set_defaults(func=_cmd_compare)

    results = sub.add_parser("results", help="print the summary of a results store (the corpus job's output dir)")
    results.add_argument("dir", help="results store directory (local, s3:// or gs://)")
    results.set_defaults(func=_cmd_results)

    demo = sub.add_parser("demo", help="score the 'Jane has 12 apples' preference pair in-process")
    add_config_flags(demo)
    demo.set_defaults(func=_cmd_demo)

    demo = sub.add_parser("demo-model", help=f"build the embedded demo model ({MEANINGLESS})")
    demo.add_argument("dir", nargs="?", help="write here instead of the user cache")
    demo.set_defaults(func=_cmd_demo_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
        return code
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
