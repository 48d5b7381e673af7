"""`rmcluster` command line: score a file in-process (no Ray), build the demo model."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .config_cli import add_config_flags, config_from_args
from .demo_model import DEMO_MODEL_NAME, MEANINGLESS
from .outputs import BatchStats


def _cmd_score(args: argparse.Namespace) -> int:
    import pyarrow as pa
    from tqdm import tqdm

    from .corpus import input_format, iter_records
    from .engine import ScoringEngine
    from .pipeline import score_records
    from .results import RESULT_SCHEMA, parquet_file, rows_to_table
    from .summary import SUMMARY_COLUMNS, format_summary, summarize

    config = config_from_args(args)
    input_format(args.input)  # fail on an unknown format before loading a model
    if not Path(args.input).is_file():
        print(f"error: input not found: {args.input}", file=sys.stderr)
        return 2
    if config.model.name == DEMO_MODEL_NAME:
        print(f"note: {MEANINGLESS}", file=sys.stderr)
    engine = ScoringEngine.from_config(config)
    start = time.perf_counter()
    tables = []
    reused = 0

    def on_batch(stats: BatchStats) -> None:
        nonlocal reused
        bar.update(stats.items)
        reused += stats.reused_tokens

    with parquet_file(args.output) as writer, tqdm(desc="scoring", unit="item", disable=args.quiet) as bar:
        for chunk in iter_records(args.input, args.chunk_size):
            before = bar.n
            table = rows_to_table(score_records(engine, chunk, on_batch=on_batch))
            bar.update(max(0, table.num_rows - (bar.n - before)))  # rows that never reached a batch: errors
            writer.write_table(table)
            tables.append(table.select(SUMMARY_COLUMNS))
    wall = time.perf_counter() - start
    summary = summarize(pa.concat_tables(tables) if tables else RESULT_SCHEMA.empty_table(), wall)
    if reused:  # shared prompts: dense FLOPs scale with tokens, so this share of them was skipped
        summary["prompt_tokens_reused"] = reused
        summary["dense_flops_saved"] = reused / summary["tokens"]
    print(f"wrote {args.output}\n{format_summary(summary)}")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from .store import SUMMARY_FILE, ResultsStore
    from .summary import SUMMARY_COLUMNS, format_summary, summarize

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
    print(f"{args.dir}\n{format_summary(summary)}")
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
