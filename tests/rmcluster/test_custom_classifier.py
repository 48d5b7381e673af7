"""Custom classifiers (remote-code heads) against each checkpoint's own documented usage, one at a time."""

import json
import random
import shutil

import pytest

from rmcluster.checkpoint import RemoteCodeRefused
from rmcluster.cli import main as cli
from rmcluster.config import RMConfig
from rmcluster.demo_kinds import demo_checkpoint_path
from rmcluster.engine import ScoringEngine
from rmcluster.pipeline import score_records
from tests.kinds import mixed_records
from tests.reference_kinds import armo_reference, grm_reference, internlm2_reference, load

TOL = 1e-4
N = 200  # records: about 350 items of 1 to ~500 tokens

# name -> (settings beyond the kind, the oracle's score for one conversation)
KINDS = {
    "armo": ({}, lambda path, conv: armo_reference(path, conv)[0]),  # the defaults are ArmoRM's
    "grm": ({"reward_output": 2, "values_output": None}, grm_reference),
    "internlm2": ({"auto_class": "AutoModel", "reward_output": 0, "values_output": None}, internlm2_reference),
}


def _engine(path, **settings) -> ScoringEngine:
    model = {"kind": "custom_classifier", "name": str(path), "trust_remote_code": True, **settings}
    return ScoringEngine.from_config(RMConfig(model=model, tokenization={"max_length": 1024}))


@pytest.fixture(scope="module")
def records():
    return mixed_records(N, seed=11)


@pytest.mark.parametrize("name", list(KINDS))
def test_scores_equal_the_checkpoints_own_loop_in_random_order(name, records):
    settings, oracle = KINDS[name]
    path = demo_checkpoint_path(name)
    engine = _engine(path, **settings)
    assert engine.scorer.runner.mode == "right"  # the probe proved right-padded batches equal for these three
    order = list(range(len(records)))
    random.Random(1).shuffle(order)
    rows = score_records(engine, [records[i][0] for i in order])
    expected = [oracle(path, conv) for i in order for conv in records[i][1]]
    assert len(rows) == len(expected) > 300
    assert all(r["error"] is None for r in rows)
    assert max(abs(r["score"] - e) for r, e in zip(rows, expected)) < TOL


def test_armo_objectives_are_named_values(records):
    path = demo_checkpoint_path("armo")
    names = [f"goal_{i}" for i in range(5)]
    engine = _engine(path, value_names=names)
    rows = score_records(engine, [r for r, _ in records[:30]])
    convs = [c for _, cs in records[:30] for c in cs]
    for row, conv in zip(rows, convs):
        score, rewards, _ = armo_reference(path, conv)
        assert list(row["values"]) == names
        assert max(abs(a - b) for a, b in zip(row["values"].values(), rewards)) < TOL
        assert abs(row["score"] - score) < TOL and row["logits"] is None
    assert engine.scorer.output_names == tuple(names)


def test_qrm_quantiles_are_averaged_per_objective(records):
    path = demo_checkpoint_path("qrm")
    engine = _engine(path, values_output="reward_quantiles")
    model, tokenizer = load(str(path))
    from tests.reference_kinds import chat_ids

    rows = score_records(engine, [r for r, _ in records[:20]])
    for row, conv in zip(rows, [c for _, cs in records[:20] for c in cs]):
        out = model(chat_ids(tokenizer, conv))
        assert abs(row["score"] - out.score.item()) < TOL
        means = out.reward_quantiles[0].mean(-1).tolist()  # the card: an objective's reward is its quantiles' mean
        assert max(abs(a - b) for a, b in zip(row["values"].values(), means)) < TOL


def test_a_head_that_ignores_the_mask_runs_one_item_per_forward(tmp_path, records):
    """A forward that reads the last position of the row, mask or not: no padding is equal, so no batching."""
    path = tmp_path / "naive"
    shutil.copytree(demo_checkpoint_path("grm"), path)
    code = (path / "grm_like.py").read_text()
    naive = code.replace("attention_mask.sum(-1) - 1", "torch.full_like(attention_mask.sum(-1), input_ids.shape[1] - 1)")
    naive = naive.replace("attention_mask=attention_mask", "attention_mask=None")
    assert naive != code
    (path / "grm_like.py").write_text(naive)
    engine = _engine(path, reward_output=2, values_output=None)
    assert engine.scorer.runner.mode == "single"
    rows = score_records(engine, [r for r, _ in records[:25]])
    convs = [c for _, cs in records[:25] for c in cs]
    assert max(abs(r["score"] - grm_reference(path, c)) for r, c in zip(rows, convs)) < TOL


def test_remote_code_is_refused_unless_trusted(tmp_path, capsys):
    path = demo_checkpoint_path("armo")
    for kind in ("custom_classifier", "sequence_classifier"):  # a stock class would load it silently, and wrongly
        with pytest.raises(RemoteCodeRefused, match="ships its own modeling code.*trust-remote-code"):
            ScoringEngine.from_config(RMConfig(model={"kind": kind, "name": str(path)}))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    argv = ["score", "--kind", "custom_classifier", "--model", str(path), "--input", str(src), "--output",
            str(tmp_path / "o.parquet")]
    assert cli(argv) == 2 and "trust_remote_code" in capsys.readouterr().err
    assert cli([*argv, "--trust-remote-code", "--quiet"]) == 0


def test_a_missing_output_field_is_a_clear_error_at_load():
    path = demo_checkpoint_path("grm")
    with pytest.raises(ValueError, match=r"model.reward_output: .*no field 'score'.*tuple"):
        _engine(path)  # GRM returns a tuple: the default attribute name does not exist
    with pytest.raises(ValueError, match="model.value_names has 2 names, but the model gives 5"):
        _engine(demo_checkpoint_path("armo"), value_names=["a", "b"])


def test_token_logit_reads_one_vocabulary_logit_after_the_last_token(records):
    """Nemotron-70B-Reward-HF style: a causal LM whose reward is the logit of one vocabulary id."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.reference_kinds import chat_ids

    path = demo_checkpoint_path("causal_lm")
    for packing in ("off", "on"):
        model = {"kind": "custom_classifier", "name": str(path), "token_logit": 0}
        engine = ScoringEngine.from_config(RMConfig(model=model, batching={"packing": packing}))
        assert engine.packing == (packing == "on")
        rows = score_records(engine, [r for r, _ in records[:25]])
        lm, tokenizer = load(str(path), AutoModelForCausalLM, False)
        with torch.no_grad():
            expected = [lm(chat_ids(tokenizer, c)).logits[0, -1, 0].item() for _, cs in records[:25] for c in cs]
        assert max(abs(r["score"] - e) for r, e in zip(rows, expected)) < TOL
