"""The tiny remote-code and causal-LM checkpoints: they build, load the way their real models do,
and their documented usages (tests/reference_kinds.py) give finite, input-dependent values."""

import hashlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from rmcluster.demo_kinds import (
    ASSISTANT_HEADER,
    CODE_DIR,
    DEMO_CHECKPOINTS,
    DemoCheckpoint,
    build_armo_like,
    demo_checkpoint_path,
)
from rmcluster.demo_model import DemoModelSpec
from tests.reference_kinds import (
    armo_reference,
    chat_ids,
    grm_reference,
    internlm2_reference,
    load,
    math_shepherd_reference,
    qwen_prm_reference,
)


def _chat(*turns: str) -> list[dict]:
    roles = ["system", "user", "assistant"][-len(turns) :]
    return [{"role": role, "content": text} for role, text in zip(roles, turns)]


CONVERSATIONS = [
    _chat("How many apples does Jane have?", "She has 8."),
    _chat("hi", "Hello there friend, the answer is 3."),
    _chat("Be helpful.", "What is the sum?", "9"),
]
SEQ_CLS, BASE = AutoModelForSequenceClassification, AutoModel
# name -> (auto class it loads with, what that auto class gives WITHOUT trust_remote_code)
REMOTE_CODE = {
    "armo": (SEQ_CLS, "LlamaForSequenceClassification"),
    "qrm": (SEQ_CLS, "LlamaForSequenceClassification"),
    "grm": (SEQ_CLS, "LlamaForSequenceClassification"),
    "qwen_prm": (BASE, "LlamaModel"),
    "internlm2": (BASE, None),  # own model_type: refuses
}
CAUSAL = ("causal_lm", "causal_lm_reference", "math_shepherd")


@pytest.fixture(scope="session")
def kinds() -> dict[str, Path]:
    return {name: demo_checkpoint_path(name) for name in DEMO_CHECKPOINTS}


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _padded(rows: list[torch.Tensor], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids, mask = torch.full((len(rows), width), pad_id), torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


def test_every_checkpoint_is_complete_and_says_it_is_meaningless(kinds):
    for name, path in kinds.items():
        config = json.loads((path / "config.json").read_text())
        assert {"model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in path.iterdir()}, name
        assert "meaningless" in (path / "README.md").read_text(), name
        for ref in config.get("auto_map", {}).values():  # the modeling file travels with the weights
            module_file = ref.split(".")[0] + ".py"
            assert (path / module_file).read_bytes() == (CODE_DIR / module_file).read_bytes(), name
        assert ("auto_map" in config) == (name in REMOTE_CODE), name


def test_build_is_deterministic_and_keyed_by_spec(tmp_path):
    assert _digest(build_armo_like(tmp_path / "a")) == _digest(build_armo_like(tmp_path / "b"))
    other_spec = DemoModelSpec(pad_token=True, seed=3)
    assert DemoCheckpoint(build_armo_like).key() != DemoCheckpoint(build_armo_like, other_spec).key()
    with pytest.raises(KeyError, match="known"):
        demo_checkpoint_path("no-such-kind")


@pytest.mark.parametrize("name", sorted(REMOTE_CODE))
def test_remote_code_runs_only_with_trust_remote_code(kinds, name):
    auto_class, without_trust = REMOTE_CODE[name]
    path = kinds[name]
    if without_trust is None:
        with pytest.raises(ValueError, match="trust_remote_code"):
            auto_class.from_pretrained(path, trust_remote_code=False)  # None would prompt on stdin first
    else:
        # A llama model_type has built-in classes: by default transformers silently loads one of those,
        # dropping the checkpoint's heads (and, for sequence classification, inventing a random `score`).
        model, info = auto_class.from_pretrained(path, output_loading_info=True)
        assert type(model).__name__ == without_trust and info["unexpected_keys"]
    model, _ = load(str(path), auto_class)
    architecture = json.loads((path / "config.json").read_text())["architectures"][0]
    assert type(model).__name__ == architecture
    assert type(model).__module__.startswith("transformers_modules.")  # from the checkpoint's own file


def test_armo_oracle_scores_vary_and_gate_is_a_distribution(kinds):
    results = [armo_reference(kinds["armo"], c) for c in CONVERSATIONS]
    scores = [score for score, _, _ in results]
    assert all(math.isfinite(s) for s in scores) and len(set(scores)) == len(scores)
    for _, rewards, gating in results:
        assert len(rewards) == len(gating) == 5 and sum(gating) == pytest.approx(1.0, abs=1e-5)


def test_armo_gating_pattern_is_the_assistant_header_in_context(kinds):
    model, tokenizer = load(str(kinds["armo"]))
    pattern = model.config.gating_token_pattern
    assert tokenizer.decode(pattern) == ASSISTANT_HEADER
    ids = chat_ids(tokenizer, CONVERSATIONS[0])
    last_pattern_end = sys.modules[type(model).__module__].last_pattern_end
    header_end = last_pattern_end(ids, pattern, torch.tensor([-1]))
    # The gate reads the token just before the assistant's reply: the reply is what follows.
    reply = tokenizer.encode("She has 8.", add_special_tokens=False)
    assert ids[0, header_end + 1 : header_end + 1 + len(reply)].tolist() == reply


@torch.no_grad()
def test_armo_pools_at_first_pad_so_only_a_pad_absent_from_text_batches_correctly(kinds):
    model, tokenizer = load(str(kinds["armo"]))
    rows = [chat_ids(tokenizer, c)[0] for c in CONVERSATIONS]
    singles = torch.tensor([armo_reference(kinds["armo"], c)[0] for c in CONVERSATIONS])
    padded = [i for i, r in enumerate(rows) if len(r) < max(map(len, rows))]
    assert padded  # the test needs at least one padded row

    ids, mask = _padded(rows, tokenizer.pad_token_id)
    torch.testing.assert_close(model(ids, attention_mask=mask).score, singles, rtol=1e-5, atol=1e-5)
    # Left padding also works: the first pad is at 0, and (0 - 1) % T wraps to the last token.
    ids, mask = _padded(rows, tokenizer.pad_token_id, left=True)
    torch.testing.assert_close(model(ids, attention_mask=mask).score, singles, rtol=1e-4, atol=1e-4)
    # Right-padding with <|eot_id|> (pad = eos, a token that is in the text) pools after the first message.
    ids, mask = _padded(rows, tokenizer.convert_tokens_to_ids("<|eot_id|>"))
    wrong = model(ids, attention_mask=mask).score
    assert all(abs(wrong[i] - singles[i]) > 1e-3 for i in padded)

    model.config.pad_token_id, pad_id = None, model.config.pad_token_id
    try:
        with pytest.raises(ValueError, match="pad_token_id"):
            model(ids)
    finally:
        model.config.pad_token_id = pad_id


@torch.no_grad()
def test_qrm_rewards_are_quantile_means(kinds):
    model, tokenizer = load(str(kinds["qrm"]))
    out = model(chat_ids(tokenizer, CONVERSATIONS[0]))
    assert out.reward_quantiles.shape == (1, 5, 9) and out.score.shape == (1, 1)
    torch.testing.assert_close(out.rewards, out.reward_quantiles.mean(-1))
    assert torch.all(out.reward_quantiles.diff(dim=-1) >= 0)


@torch.no_grad()
def test_grm_reads_the_last_real_token(kinds):
    model, tokenizer = load(str(kinds["grm"]))
    singles = [grm_reference(kinds["grm"], c) for c in CONVERSATIONS]
    assert all(math.isfinite(s) for s in singles) and len(set(singles)) == len(singles)
    ids, mask = _padded([chat_ids(tokenizer, c)[0] for c in CONVERSATIONS], tokenizer.pad_token_id)
    lm_logits, loss, reward = model(input_ids=ids, attention_mask=mask)
    assert loss is None and lm_logits.shape == (*ids.shape, len(tokenizer)) and reward.shape == (3,)
    torch.testing.assert_close(reward, torch.tensor(singles), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_internlm2_get_score_is_a_forward_with_the_reward_token_appended(kinds):
    path = kinds["internlm2"]
    model, tokenizer = load(str(path), AutoModel)
    reward_id = model.config.reward_token_id
    assert tokenizer.convert_ids_to_tokens(reward_id) == "<|reward|>"
    assert "<|reward|>" in tokenizer.all_special_tokens
    singles = [internlm2_reference(path, c) for c in CONVERSATIONS]
    assert all(math.isfinite(s) for s in singles) and len(set(singles)) == len(singles)
    rows = [torch.cat([chat_ids(tokenizer, c)[0], torch.tensor([reward_id])]) for c in CONVERSATIONS]
    assert model(input_ids=rows[0][None]).logits[0, 0].item() == pytest.approx(singles[0], abs=1e-6)
    ids, mask = _padded(rows, 0)  # any pad id: the mask alone locates the last real token
    batched = model(input_ids=ids, attention_mask=mask)[0][:, 0]
    torch.testing.assert_close(batched, torch.tensor(singles), atol=1e-5, rtol=1e-5)


def test_qwen_prm_rewards_one_probability_per_step_causally(kinds):
    path = kinds["qwen_prm"]
    _, tokenizer = load(str(path), AutoModel)
    separator = tokenizer.convert_tokens_to_ids("<extra_0>")
    assert tokenizer.encode("<extra_0>", add_special_tokens=False) == [separator]
    prompt, system = "How many apples?", "Please reason step by step."
    steps = ["Jane gives 4 apples away: 12 - 4 = 8.", "She buys 1 more: 8 + 1 = 9.", "Each gets 3."]
    rewards = qwen_prm_reference(path, prompt, steps, system=system)
    assert len(rewards) == 3 and all(0 < r < 1 for r in rewards) and len(set(rewards)) == 3
    # Causal: changing the last step changes only its own reward.
    changed = qwen_prm_reference(path, prompt, [*steps[:2], "Each gets 4."], system=system)
    assert changed[:2] == pytest.approx(rewards[:2], abs=1e-6)
    assert changed[2] != pytest.approx(rewards[2], abs=1e-6)
    assert qwen_prm_reference(path, prompt, steps) != pytest.approx(rewards, abs=1e-6)  # the system turn counts


def test_math_shepherd_scores_each_step_tag(kinds):
    path = kinds["math_shepherd"]
    text = "Jane has 12 apples and gives 4 away. Step 1: 12 - 4 = 8. ки\nStep 2: 8 + 1 = 9. ки"
    scores = math_shepherd_reference(path, text)
    assert len(scores) == 2 and all(0 < s < 1 for s in scores) and scores[0] != scores[1]
    _, tokenizer = load(str(path), AutoModelForCausalLM, False)
    ids = tokenizer.encode(text)
    assert math_shepherd_reference(path, ids) == scores
    assert len(math_shepherd_reference(path, [{"role": "user", "content": text}])) == 2


@pytest.mark.parametrize("name", CAUSAL)
def test_verdict_and_step_tokens_are_single_tokens(kinds, name):
    tokenizer = AutoTokenizer.from_pretrained(kinds[name])
    for text in ["Yes", "No", "ки", "A", "B", "1", "2", "3", "4", "5", "+", "-", "["]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == text, (text, ids)
    ids = tokenizer.encode("Step ки Yes", add_special_tokens=False)  # added tokens split out of running text
    assert tokenizer.convert_tokens_to_ids("ки") in ids and tokenizer.convert_tokens_to_ids("Yes") in ids


@torch.no_grad()
def test_dpo_policy_and_reference_share_the_tokenizer_not_the_weights(kinds):
    policy, reference = kinds["causal_lm"], kinds["causal_lm_reference"]
    assert (policy / "tokenizer.json").read_bytes() == (reference / "tokenizer.json").read_bytes()
    ids = torch.tensor([AutoTokenizer.from_pretrained(policy).encode("Is 9 the answer? Yes")])
    logits = [load(str(p), AutoModelForCausalLM, False)[0](ids).logits for p in (policy, reference)]
    assert not torch.allclose(*logits)
    assert not any(json.loads((p / "config.json").read_text()).get("auto_map") for p in (policy, reference))

