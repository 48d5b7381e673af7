"""Engine benchmark: the reference loop vs HF padded batches vs the rmcluster engine, in one run.

    python bench/engine.py                          # CPU: hidden-256, 4-layer random Llama, fp32
    python bench/engine.py --shape llama-3.1-8b     # GPU: the exact Llama-3.1-8B shape, bf16

Every method scores the same conversations on the same model object, tokenization included, and is
timed in interleaved rounds (median reported), so drift on a shared machine hits all methods alike.
FLOPs count useful work only: 2*N_nonembedding*L + 2*n_layers*d_model*L^2 per sequence (causal).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rmcluster.config import BatchingConfig  # noqa: E402
from rmcluster.demo_model import _WORDS, DemoModelSpec, demo_model_path  # noqa: E402
from rmcluster.engine import ScoringEngine  # noqa: E402
from rmcluster.records import ScoreItem  # noqa: E402
from rmcluster.scorers.sequence_classifier import SequenceClassifierScorer  # noqa: E402

SHAPES = {
    # CPU: big enough that compute dominates (hidden >= 256, >= 4 layers), GQA like Llama-3.
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=2048),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128257),
}
BF16_DENSE_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}


# -- data ---------------------------------------------------------------------------------------
def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))  # ~1 token per word with the demo tokenizer


def _long_tail(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, rng.lognormvariate(math.log(median), sigma))))


def make_mix(name: str, n: int, seed: int = 0) -> list[list[dict]]:
    """'realistic': prompts 20-400 and responses 20-1,500 tokens, long-tailed. 'short': ~100 tokens in all."""
    rng = random.Random(seed)
    convs = []
    for _ in range(n):
        if name == "realistic":
            p, r = _long_tail(rng, 90, 0.8, 20, 400), _long_tail(rng, 220, 1.0, 20, 1500)
        elif name == "short":
            p, r = rng.randint(20, 40), rng.randint(25, 55)  # + 16 template tokens
        else:
            raise ValueError(name)
        convs.append([{"role": "user", "content": _words(rng, p)}, {"role": "assistant", "content": _words(rng, r)}])
    return convs


# -- model --------------------------------------------------------------------------------------
def build_model(shape: str, device: torch.device, dtype: torch.dtype, attn: str):
    """A random-weight LlamaForSequenceClassification of the given shape, built in memory."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, num_labels=1, initializer_range=0.02,
                      bos_token_id=0, eos_token_id=4, tie_word_embeddings=False)
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise directly in the target dtype (8B in fp32 would not fit)
    try:
        with torch.device(device):
            model = LlamaForSequenceClassification(cfg)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def flops_per_sequence(model, length: int) -> float:
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    c = model.config
    return 2 * n * length + 2 * c.num_hidden_layers * c.hidden_size * length**2


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul rate (FLOP/s) of this machine, for the FLOP-rate column."""
    size = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 10 if device.type == "cpu" else 50
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * reps / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- methods ------------------------------------------------------------------------------------
@dataclass
class Run:
    scores: list[float]
    computed_tokens: int  # tokens the forward passes processed, padding included


@dataclass
class Bench:
    model: object
    tokenizer: object
    device: torch.device
    engine: ScoringEngine
    lengths: dict = field(default_factory=dict)

    def ids(self, conv) -> torch.Tensor:
        out = self.tokenizer.apply_chat_template(conv, tokenize=True, return_tensors="pt")
        return out["input_ids"] if hasattr(out, "keys") else out

    @torch.inference_mode()
    def reference_loop(self, convs) -> Run:
        scores = [self.model(self.ids(c).to(self.device)).logits[0][0].item() for c in convs]
        return Run(scores, sum(self.lengths[id(c)] for c in convs))

    @torch.inference_mode()
    def hf_padded_16(self, convs) -> Run:
        """The common batched baseline: fixed batches of 16 in input order, padded, with a mask."""
        scores, computed = [], 0
        for i in range(0, len(convs), 16):
            enc = self.tokenizer.apply_chat_template(convs[i:i + 16], tokenize=True, padding=True,
                                                     return_tensors="pt", return_dict=True)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            scores += self.model(**enc).logits[:, 0].float().tolist()
            computed += enc["input_ids"].numel()
        return Run(scores, computed)

    def rmcluster_engine(self, convs) -> Run:
        padded = []
        items = [ScoreItem(str(i), 0, messages=c, num_prompt_messages=1) for i, c in enumerate(convs)]
        results = self.engine.score_items(items, on_batch=lambda s: padded.append(s.padded_tokens))
        _sync(self.device)
        return Run([r.score for r in results], sum(padded))


def time_methods(bench: Bench, convs, methods: dict[str, Callable], rounds: int) -> dict[str, dict]:
    for fn in methods.values():  # warm-up: allocator, kernels, tokenizer caches
        fn(convs[:8])
    times: dict[str, list[float]] = {name: [] for name in methods}
    runs: dict[str, Run] = {}
    for _ in range(rounds):
        for name, fn in methods.items():  # interleaved, so drift hits all methods alike
            start = time.perf_counter()
            runs[name] = fn(convs)
            _sync(bench.device)
            times[name].append(time.perf_counter() - start)
    real = sum(bench.lengths[id(c)] for c in convs)
    useful = sum(flops_per_sequence(bench.model, bench.lengths[id(c)]) for c in convs)
    ref = runs["reference loop"].scores
    out = {}
    for name, run in runs.items():
        t = statistics.median(times[name])
        out[name] = {
            "seconds": t,
            "tokens_per_s": real / t,
            "seqs_per_s": len(convs) / t,
            "padding_efficiency": real / run.computed_tokens,
            "flops_per_s": useful / t,
            "max_abs_diff_vs_reference": max(abs(a - b) for a, b in zip(run.scores, ref)),
        }
    return out


def print_table(mix: str, n: int, tokens: int, peak: float, peak_label: str, rows: dict[str, dict]) -> None:
    ref = rows["reference loop"]["tokens_per_s"]
    hf = rows.get("hf padded 16", {}).get("tokens_per_s")
    print(f"\nmix={mix}: {n} conversations, {tokens:,} tokens; {peak_label}")
    print(f"{'method':<24}{'tok/s':>10}{'seq/s':>9}{'pad-eff':>9}{'GFLOP/s':>10}{'%peak':>7}"
          f"{'x ref':>7}{'x hf16':>8}{'max|d ref|':>12}")
    for name, r in rows.items():
        print(f"{name:<24}{r['tokens_per_s']:>10,.0f}{r['seqs_per_s']:>9.1f}{r['padding_efficiency']:>9.2f}"
              f"{r['flops_per_s'] / 1e9:>10.1f}{100 * r['flops_per_s'] / peak:>6.0f}%"
              f"{r['tokens_per_s'] / ref:>7.2f}{(r['tokens_per_s'] / hf if hf else float('nan')):>8.2f}"
              f"{r['max_abs_diff_vs_reference']:>12.1e}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: small on CPU, llama-3.1-8b on CUDA")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--mixes", default="realistic,short")
    ap.add_argument("--n", type=int, default=None, help="conversations per mix (default: 96 realistic / 400 short on CPU)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    shape = args.shape or ("llama-3.1-8b" if gpu else "small")
    dtype = torch.bfloat16 if gpu else torch.float32
    from rmcluster.model_loading import flash_attn_available

    attn = "flash_attention_2" if gpu and flash_attn_available() else "sdpa"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model_path(DemoModelSpec()))
    tokenizer.pad_token = "<|end_of_text|>"  # for the HF baseline only: a pad id the template never emits
    model = build_model(shape, device, dtype, attn)
    model.config.pad_token_id = tokenizer.pad_token_id
    engine = ScoringEngine(SequenceClassifierScorer(model, tokenizer, f"random-{shape}"), BatchingConfig())
    bench = Bench(model, tokenizer, device, engine)
    methods = {"reference loop": bench.reference_loop, "hf padded 16": bench.hf_padded_16,
               "rmcluster engine": bench.rmcluster_engine}

    peak = matmul_peak(device, dtype)
    if gpu:
        name = torch.cuda.get_device_name(device)
        spec = next((v for k, v in BF16_DENSE_PEAK_TFLOPS.items() if k in name), None)
        peak_label = f"{name}; measured bf16 matmul {peak / 1e12:.0f} TFLOP/s" + (
            f", %peak vs dense spec {spec:.0f} TFLOP/s" if spec else "")
        peak = spec * 1e12 if spec else peak
    else:
        peak_label = f"CPU, {torch.get_num_threads()} threads; measured fp32 matmul peak {peak / 1e9:.0f} GFLOP/s"
    print(f"model: random {shape} ({dtype}, {attn}) on {device}; engine budget {engine.max_batch_tokens} tokens, "
          f"{engine.batching.max_batch_size} items; {args.rounds} interleaved rounds, median")
    report = {"shape": shape, "device": str(device), "dtype": str(dtype), "peak_flops_per_s": peak, "mixes": {}}
    for mix in args.mixes.split(","):
        n = args.n or {"realistic": 96, "short": 400}[mix] * (2 if gpu else 1)
        convs = make_mix(mix, n)
        bench.lengths = {id(c): bench.ids(c).shape[-1] for c in convs}
        rows = time_methods(bench, convs, methods, args.rounds)
        print_table(mix, n, sum(bench.lengths.values()), peak, peak_label, rows)
        report["mixes"][mix] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
