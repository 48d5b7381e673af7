"""JobConfig: flags generated from it (scoring flags included), YAML, validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.config import JobConfig
from jobs.score_corpus import build_parser
from rmcluster.config import RMConfig
from rmcluster.config_cli import config_from_args


def parse(argv):
    return config_from_args(build_parser().parse_args(argv), JobConfig)


def test_flags_cover_scoring_and_job_settings_with_defaults_from_the_models():
    cfg = parse(["--input", "in.jsonl", "--output", "out", "--model", "demo", "--max-length", "512",
                 "--on-overflow", "truncate_left", "--max-batch-tokens", "2048", "--min-actors", "2",
                 "--max-actors", "4", "--num-gpus", "1", "--batch-size", "64", "--max-error-rate", "0.1",
                 "--serve-app", "reward"])
    assert cfg.scoring.model.name == "demo" and cfg.scoring.tokenization.max_length == 512
    assert cfg.scoring.tokenization.on_overflow == "truncate_left" and cfg.scoring.batching.max_batch_tokens == 2048
    assert (cfg.scorer.min_size, cfg.scorer.max_size, cfg.scorer.num_gpus, cfg.scorer.batch_size) == (2, 4, 1, 64)
    assert cfg.max_error_rate == 0.1 and cfg.serve.app == "reward"
    # Everything not given keeps the one default in RMConfig.
    assert parse(["--input", "i", "--output", "o"]).scoring == RMConfig()


def test_yaml_config_validates_and_flags_override(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("input: corpus/\noutput: results/\nscoring:\n  model: demo\n  batching: {max_batch_size: 8}\n"
                    "scorer: {max_size: 3}\nmax_error_rate: 0.5\n")
    cfg = parse(["--config", str(path), "--max-error-rate", "0.2"])
    assert (cfg.input, cfg.output, cfg.scorer.max_size, cfg.max_error_rate) == ("corpus/", "results/", 3, 0.2)
    assert cfg.scoring.batching.max_batch_size == 8

    path.write_text("input: a\noutput: b\nscorer: {max_sise: 3}\n")  # a typo is an error, not ignored
    with pytest.raises(ValidationError, match="max_sise"):
        parse(["--config", str(path)])


def test_invalid_settings_are_rejected():
    with pytest.raises(ValidationError, match="output"):
        parse(["--input", "i"])
    with pytest.raises(ValidationError, match="min_size 3 > max_size 2"):
        parse(["--input", "i", "--output", "o", "--min-actors", "3", "--max-actors", "2"])
    with pytest.raises(ValidationError):
        parse(["--input", "i", "--output", "o", "--max-error-rate", "1.5"])


# Every YAML shape the docs show for the scoring section (jobs/config.py, the README), as a mapping.
SCORING_SHAPES = {
    "shorthand": "scoring: {model: Skywork/x, tokenization: {max_length: 4096}}\n",
    "mapping": "scoring:\n  model: {name: Skywork/x, dtype: bfloat16}\n  batching: {max_batch_size: 8}\n",
    "empty": "scoring:\n",
    "absent": "",
}
FLAG_SETS = {
    "none": [],
    "model": ["--model", "demo"],
    "model setting": ["--dtype", "float32"],
    "other sections": ["--max-length", "77", "--max-batch-tokens", "9"],
}


@pytest.mark.parametrize("flags", FLAG_SETS.values(), ids=FLAG_SETS.keys())
@pytest.mark.parametrize("shape", SCORING_SHAPES.values(), ids=SCORING_SHAPES.keys())
def test_every_documented_yaml_shape_takes_every_flag(tmp_path, shape, flags):
    path = tmp_path / "job.yaml"
    path.write_text("input: corpus/\noutput: results/\n" + shape)
    yaml_only = parse(["--config", str(path)]).scoring
    cfg = parse(["--config", str(path), *flags]).scoring
    want = yaml_only.model_dump()
    for flag, value in zip(flags[::2], flags[1::2]):
        section, key = {"--model": ("model", "name"), "--dtype": ("model", "dtype"),
                        "--max-length": ("tokenization", "max_length"),
                        "--max-batch-tokens": ("batching", "max_batch_tokens")}[flag]
        want[section][key] = int(value) if value.isdigit() else value
    assert cfg.model_dump() == want  # the flags win, and everything YAML said is kept


def test_a_bad_section_exits_2_naming_the_key(tmp_path, capsys):
    from jobs.score_corpus import main

    path = tmp_path / "job.yaml"
    path.write_text("input: corpus/\noutput: results/\nscoring: 5\n")
    assert main(["--config", str(path), "--model", "demo"]) == 2
    assert "scoring" in capsys.readouterr().err


def test_the_documented_yaml_with_a_model_flag_runs_through_the_real_cli(ray_cluster, demo_dir, tmp_path):
    """The crash of issue 10: `scoring: {model: <name>}` YAML plus --model on the command line."""
    import json
    import subprocess
    import sys

    from tests.jobs.conftest import REPO, job_env

    corpus = tmp_path / "in.jsonl"
    corpus.write_text(json.dumps({"id": "p", "prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {corpus}\noutput: {tmp_path / 'store'}\n"
                      "scoring: {model: Skywork/not-here, tokenization: {max_length: 256}}\n")
    address = ray_cluster.get_runtime_context().gcs_address  # join the session's cluster: no second Ray
    done = subprocess.run([sys.executable, "-m", "jobs.score_corpus", "--config", str(config), "--model", str(demo_dir)],
                          cwd=REPO, env=job_env(RAY_ADDRESS=address), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "store" / "summary.json").read_text())
    assert (summary["scored"], summary["model"]) == (2, str(demo_dir))
