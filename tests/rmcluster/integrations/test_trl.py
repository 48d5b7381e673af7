"""TRL's own GRPOTrainer and RLOOTrainer train a tiny random policy for 2 steps with the rmcluster reward function
beside TRL's own reward-model path on the same RM; both rewards, as TRL recorded them per completion, equal the
plain HF loop.
Smaller direct calls check the standard (text) format over HTTP and the None path for rejected items."""

import pickle

import pytest
import torch

pytest.importorskip("trl")

from rmcluster.integrations.trl_reward import RmclusterReward  # noqa: E402

PROMPTS = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime number above ten."}],
    [{"role": "user", "content": "Write one line about the sea, please, with a colour in it."}],
]
TOO_LONG = "apples " * 600  # over the test app's max_length of 512 tokens (on_overflow: error)


def _tiny_policy(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config)


class _Recorder:
    """What TRL recorded for each logged step: its per-completion table (`_logs`) and the logged scalars."""

    def __init__(self):
        self.trainer = None
        self.steps = []

    def callback(self):
        from transformers import TrainerCallback

        recorder = self

        class Snapshot(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                table = recorder.trainer._logs
                recorder.steps.append({"prompt": list(table["prompt"]), "completion": list(table["completion"]),
                                       "rewards": {k: list(v) for k, v in table["rewards"].items()},
                                       "logs": dict(logs or {})})

        return Snapshot()


@pytest.mark.parametrize("kind", ["GRPO", "RLOO"])
def test_trainer_rewards_equal_trls_reward_model_and_hf_loop(kind, trainer_app, reference, demo_dir, tmp_path):
    import trl
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    app, _ = trainer_app
    tokenizer = AutoTokenizer.from_pretrained(demo_dir)
    rm_tokenizer = AutoTokenizer.from_pretrained(demo_dir)
    # The demo RM, like Llama-3, has no pad token and its EOS is the template's end of turn. TRL would pad with
    # EOS, and the classifier would then read the token before the final <|eot_id|>, not the card loop's last
    # token. A token the texts never contain keeps TRL's own path a faithful second reference.
    rm_tokenizer.pad_token = "<|end_of_text|>"
    rm = AutoModelForSequenceClassification.from_pretrained(demo_dir, num_labels=1, dtype=torch.float32)
    config = getattr(trl, f"{kind}Config")(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, max_steps=2, logging_steps=1, report_to="none",
        per_device_train_batch_size=8, num_generations=4, max_completion_length=12, save_strategy="no",
        disable_tqdm=True, log_completions=False, seed=0, beta=0.0,  # no KL: no reference policy to load by path
    )
    recorder = _Recorder()
    reward = RmclusterReward(app_name=app)
    trainer = getattr(trl, f"{kind}Trainer")(
        model=_tiny_policy(tokenizer), processing_class=tokenizer, args=config,
        reward_funcs=[reward, rm], reward_processing_classes=[None, rm_tokenizer],
        train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS] * 4), callbacks=[recorder.callback()],
    )
    recorder.trainer = trainer
    trainer.train()

    assert len(recorder.steps) >= 2  # one per step (and a last one with the run's totals)
    assert recorder.steps[0]["completion"] != recorder.steps[1]["completion"]  # two generation batches
    assert (reward.service.calls, reward.service.items) == (2, 16)  # one call a step: 2 prompts x 4 completions
    rm_name = next(n for n in trainer.reward_func_names if n != "rmcluster")
    for step in recorder.steps[:2]:
        ours, trls = step["rewards"]["rmcluster"], step["rewards"][rm_name]
        assert len(ours) == len(step["completion"]) == 8
        assert ours == pytest.approx(trls, abs=1e-4)
        conversations = [p + c for p, c in zip(step["prompt"], step["completion"])]
        assert ours == pytest.approx(reference.scores(conversations), abs=1e-4)
        logs = step["logs"]
        assert logs["rewards/rmcluster/mean"] == pytest.approx(sum(ours) / len(ours), abs=1e-4)
        assert logs["rmcluster/score_latency_s"] > 0 and logs["rmcluster/rejected"] == 0


def test_standard_format_over_http_equals_hf_loop_on_texts(trainer_app, reference):
    import asyncio

    _, url = trainer_app
    tok = reference.tokenizer
    # Standard format: the prompt is already templated text; TRL scores prompt + completion as given.
    prompts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in PROMPTS]
    completions = ["Thirteen.<|eot_id|>", "The grey sea sighs.", TOO_LONG, ""]
    prompts = [prompts[0], prompts[1], prompts[1], prompts[0]]
    metrics = {}
    reward = RmclusterReward(url=url, name="rm_http")
    scores = asyncio.run(reward(prompts=prompts, completions=completions, completion_ids=None,
                                log_metric=metrics.__setitem__))

    texts = [p + c for p, c in zip(prompts, completions)]
    expected = [reference.score_ids(tok(t, add_special_tokens=False)["input_ids"]) for t in texts[:2] + texts[3:]]
    assert scores[2] is None  # over max_length: rejected, the rest scored again without it
    assert [scores[0], scores[1], scores[3]] == pytest.approx(expected, abs=1e-4)
    assert metrics["rm_http/rejected"] == 1 and metrics["rm_http/retries"] >= 1
    reward.close()


def test_conversational_rejected_item_is_none_and_reward_pickles(trainer_app, reference):
    import asyncio

    from trl.trainer.utils import get_callable_name, is_async_callable

    app, _ = trainer_app
    reward = pickle.loads(pickle.dumps(RmclusterReward(app_name=app, name="rm", chunk_size=3)))
    assert get_callable_name(reward) == "rm" and is_async_callable(reward)  # as TRL names and awaits it
    greeting = [{"role": "user", "content": "Say hi."}]
    prompts = [PROMPTS[0]] * 3 + [PROMPTS[1]] * 2 + [greeting] * 2
    completions = [[{"role": "assistant", "content": c}] for c in ("13", TOO_LONG, "", "Blue waves.", "Grey.", "Hi")]
    completions.append([{"role": "assistant", "content": None}])  # malformed (422): its group is left out
    scores = asyncio.run(reward(prompts=prompts, completions=completions))

    assert scores[1] is None and scores[5] is None and scores[6] is None
    kept = [0, 2, 3, 4]
    expected = reference.scores([prompts[i] + completions[i] for i in kept])
    assert [scores[i] for i in kept] == pytest.approx(expected, abs=1e-4)
