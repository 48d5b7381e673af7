"""Fixtures for evaluation: one preference set, evaluated once per session by two models and compared."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.rmcluster.eval_data import MAX_LENGTH, write_eval_input


@dataclass(frozen=True)
class EvalRuns:
    input: Path
    # Results store of the demo model. Shared-prompt groups off: items that are the same token ids then score
    # bitwise alike, so the tie pair is an exact tie, as in the plain loop (grouped, they differ by ~1e-7).
    a: Path
    b: Path  # results store of another random model (the pad-token variant)
    compare: Path  # `rmcluster compare a b` output
    printed: str  # what `rmcluster eval` printed for A


def run_cli(*argv: str) -> tuple[int, str]:
    from rmcluster.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(list(argv))
    return rc, out.getvalue()


@pytest.fixture(scope="session")
def eval_runs(demo_dir, pad_demo_dir, tmp_path_factory) -> EvalRuns:
    root = tmp_path_factory.mktemp("eval")
    src = write_eval_input(root / "rewardbench.jsonl")
    a, b, cmp = root / "run-a", root / "run-b", root / "compare"
    rc, printed = run_cli("eval", "--model", str(demo_dir), "--input", str(src), "--output", str(a),
                          "--max-length", str(MAX_LENGTH), "--shared-prompt", "off", "--quiet")
    assert rc == 0
    assert run_cli("eval", "--model", str(pad_demo_dir), "--input", str(src), "--output", str(b),
                   "--max-length", str(MAX_LENGTH), "--quiet")[0] == 0
    assert run_cli("compare", str(a), str(b), "--output", str(cmp))[0] == 0
    return EvalRuns(src, a, b, cmp, printed)
