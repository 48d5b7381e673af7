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
