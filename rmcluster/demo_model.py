"""The embedded demo reward model: a small Llama-architecture sequence classifier built offline.

It has a real byte-level BPE tokenizer trained in-process, a Llama-3-style chat template
(BOS, header ids, eot) and random weights, so every code path a real checkpoint takes is taken.
ITS SCORES ARE MEANINGLESS: the weights are random. Build is deterministic and takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

DEMO_MODEL_NAME = "demo"
MEANINGLESS = "demo model: random weights, scores are meaningless (for wiring and tests only)"

BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
HEADER_START, HEADER_END, PAD = "<|start_header_id|>", "<|end_header_id|>", "<|finetune_right_pad_id|>"

# Llama-3 style: BOS once, then a header and an eot per message.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

_WORDS = (
    "the a an and or but if then because so of to in on at by for with from about as into over after "
    "is are was were be been has have had do does did will would can could should may might must "
    "I you he she it we they me him her us them my your his its our their this that these those "
    "what which who how why when where each every some many more most few all both any no not "
    "apple apples Jane Mark friend friends sibling siblings gives buys splits equally person people "
    "number numbers even odd square sum total answer question step steps first second finally "
    "model reward score response prompt assistant user helpful harmless honest correct wrong "
    "time day year work world life hand part place case point group problem fact water city "
    "good new old great high small large long little own other right big different important "
    "say get make go know take see come think look want give use find tell ask seem feel try "
    "leave call keep let begin show hear play run move live believe bring happen write provide"
).split()

SEED_TEXT = (
    "Jane has 12 apples. She gives 4 apples to her friend Mark, then buys 1 more apple, and finally "
    "splits all her apples equally among herself and her 2 siblings. How many apples does each person get?"
)
# The preference pair from the Skywork-Reward model cards. Published bf16 scores for it:
# Skywork-Reward-Llama-3.1-8B-v0.2 gives 13.6875 (chosen) / -9.1875 (rejected).
SEED_PAIR = {
    "id": "jane-apples",
    "prompt": SEED_TEXT,
    "chosen": "1. Jane starts with 12 apples and gives 4 to Mark. 12 - 4 = 8. Jane now has 8 apples.\n"
    "2. Jane buys 1 more apple. 8 + 1 = 9. Jane now has 9 apples.\n"
    "3. Jane splits the 9 apples equally among herself and her 2 siblings (3 people in total). "
    "9 \u00f7 3 = 3 apples each. Each person gets 3 apples.",
    "rejected": "1. Jane starts with 12 apples and gives 4 to Mark. 12 - 4 = 8. Jane now has 8 apples.\n"
    "2. Jane buys 1 more apple. 8 + 1 = 9. Jane now has 9 apples.\n"
    "3. Jane splits the 9 apples equally among her 2 siblings (2 people in total). "
    "9 \u00f7 2 = 4.5 apples each. Each person gets 4 apples.",
}


@dataclass(frozen=True)
class DemoModelSpec:
    """Shape of a demo model. The default is small enough to build and score in seconds on CPU."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 2048
    max_position_embeddings: int = 4096
    num_labels: int = 1
    pad_token: bool = False  # Llama-3 has none; Skywork-style checkpoints add one
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def _corpus(rng: random.Random, n: int = 3000) -> list[str]:
    lines = [SEED_TEXT] * 20
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 30))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2000)))
        lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ","]))
    return lines


def build_tokenizer(spec: DemoModelSpec) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [BOS, EOS, HEADER_START, HEADER_END, EOT] + ([PAD] if spec.pad_token else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(random.Random(spec.seed)), trainer)
    # Like Llama-3, plain tokenizer calls add BOS: the double-BOS pitfall is real here.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD if spec.pad_token else None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=spec.max_position_embeddings,
    )


def build_demo_model(out_dir: str | Path, spec: DemoModelSpec = DemoModelSpec()) -> Path:
    """Write tokenizer + random-weight LlamaForSequenceClassification to out_dir."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(spec)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        num_labels=spec.num_labels,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Larger than Llama's 0.02 so attention mixes context and scores vary across inputs.
        initializer_range=0.1,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = LlamaForSequenceClassification(config).eval()
        # Reward-model-like range (a few units) for the score head.
        torch.nn.init.normal_(model.score.weight, std=0.5)
    out_dir.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per tiny shard is noise
    try:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        hf_logging.enable_progress_bar()
    (out_dir / "README.md").write_text(f"# rmcluster demo reward model\n\n{MEANINGLESS}\n\nspec: {asdict(spec)}\n")
    return out_dir


def cache_dir() -> Path:
    env = os.environ.get("RMCLUSTER_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rmcluster"))


def demo_model_path(spec: DemoModelSpec = DemoModelSpec(), root: Optional[Path] = None) -> Path:
    """The cached demo model for this spec, built on first use (safe under concurrent builders)."""
    return cached_build(f"demo-{spec.key()}", lambda out: build_demo_model(out, spec), root)


def cached_build(name: str, build: Callable[[Path], object], root: Optional[Path] = None) -> Path:
    """`root/name`, built by `build(tmp_dir)` on first use and renamed into place atomically.

    Readers see a whole checkpoint or none; concurrent builders race safely (the loser's copy is dropped).
    A build must write README.md last: its presence marks a complete checkpoint.
    """
    root = Path(root) if root else cache_dir()
    final = root / name
    if (final / "config.json").is_file() and (final / "README.md").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-build-", dir=root))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)  # atomic: readers see a whole model or none
        except OSError:
            if not (final / "README.md").is_file():  # lost the race to a complete build: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
