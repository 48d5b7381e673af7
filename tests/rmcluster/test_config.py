import argparse

import pytest
from pydantic import ValidationError

from rmcluster.config import DEFAULT_BATCH_TOKENS, RMConfig
from rmcluster.config_cli import add_config_flags, config_from_args


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return config_from_args(parser.parse_args(argv))


def test_unknown_keys_are_rejected():
    with pytest.raises(ValidationError, match="max_batch_token"):
        RMConfig.model_validate({"batching": {"max_batch_token": 10}})


def test_model_shorthand():
    assert RMConfig.model_validate({"model": "Skywork/x"}).model.name == "Skywork/x"


def test_flags_cover_every_field_and_keep_defaults():
    assert _parse([]) == RMConfig()
    cfg = _parse(["--model", "m", "--max-length", "77", "--on-overflow", "truncate_left",
                  "--max-batch-tokens", "5", "--dtype", "float32", "--trust-remote-code"])
    assert (cfg.model.name, cfg.tokenization.max_length, cfg.tokenization.on_overflow) == ("m", 77, "truncate_left")
    assert cfg.batching.max_batch_tokens == 5 and cfg.model.dtype == "float32" and cfg.model.trust_remote_code


def test_bad_flag_value_is_refused():
    with pytest.raises(SystemExit):
        _parse(["--on-overflow", "chop"])


def test_flags_override_yaml(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model: demo\nbatching: {max_batch_size: 3, max_batch_tokens: 99}\n")
    cfg = _parse(["--config", str(cfg_file), "--max-batch-tokens", "7"])
    assert (cfg.model.name, cfg.batching.max_batch_size, cfg.batching.max_batch_tokens) == ("demo", 3, 7)


def test_token_budget_defaults_per_device():
    b = RMConfig().batching
    assert b.token_budget("cpu") == DEFAULT_BATCH_TOKENS["cpu"] and b.token_budget("cuda") == DEFAULT_BATCH_TOKENS["cuda"]
