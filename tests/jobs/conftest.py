"""Fixtures for the corpus job: one mixed corpus and its `rmcluster score` reference per session."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import pytest

from tests.jobs.corpus import MAX_LENGTH, reference_rows, write_corpus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus")


@pytest.fixture(scope="session")
def reference(corpus, demo_dir, tmp_path_factory) -> dict:
    return reference_rows(corpus, tmp_path_factory.mktemp("reference"), str(demo_dir))


@pytest.fixture(scope="session")
def job_args(corpus, demo_dir):
    """The job's command-line arguments for the test corpus, minus --output."""
    return ["--input", str(corpus), "--model", str(demo_dir), "--max-length", str(MAX_LENGTH)]


def job_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.score_corpus", *args]


def job_env(**extra: str) -> dict:
    """Environment for a job subprocess: the worktree's code first (see tests/conftest.py)."""
    return {**os.environ, "PYTHONPATH": os.environ["PYTHONPATH"], **extra}


def run_job(argv: list[str]) -> tuple[int, str]:
    """The job in-process (on the session's Ray cluster): exit code and stdout."""
    from jobs.score_corpus import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


@pytest.fixture(scope="session")
def scored(ray_cluster, job_args, tmp_path_factory):
    """One actor-pool run over the whole corpus, in several files so that resume has something to lose."""
    out = tmp_path_factory.mktemp("job") / "store"
    rc, printed = run_job([*job_args, "--output", str(out), "--rows-per-file", "700", "--batch-size", "256"])
    return rc, printed, out
