"""Engine benchmark: the reference loop vs HF padded batches vs the rmcluster engine, in one run.

    python bench/engine.py                          # CPU: hidden-256, 4-layer random Llama, fp32
    python bench/engine.py --shape llama-3.1-8b     # GPU: the exact Llama-3.1-8B shape, bf16
    python bench/engine.py --mixes realistic --profile "engine packed"   # where the time goes

Methods: the reference loop (one conversation at a time), HF fixed-size padded batches of 16, the
engine with right-padded batches, the engine with padding-free packs, and (on the best-of-8 mix)
packs with shared-prompt reuse. Every method scores the same conversations on the same model
object, tokenization included, and is timed in interleaved rounds (median reported), so drift on a
shared machine hits all methods alike.

FLOPs count useful work only: 2*N_nonembedding*L + 2*n_layers*d_model*L^2 per sequence (causal).
With a shared prompt of P tokens and tails R_i, the work done is 2*N*(P + sum R_i) +
2*n_layers*d_model*(P^2 + sum(2*P*R_i + R_i^2)); `saved` is the share of per-sequence FLOPs skipped.
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
from rmcluster.demo_model import DemoModelSpec, demo_model_path  # noqa: E402
from rmcluster.engine import ScoringEngine  # noqa: E402
from rmcluster.packing import PackUnit  # noqa: E402
from rmcluster.records import conversation_items  # noqa: E402
from rmcluster.scorers.sequence_classifier import SequenceClassifierScorer  # noqa: E402
from rmcluster.templating import ChatEncoder  # noqa: E402

from bench.workload import long_tail, words  # noqa: E402

SHAPES = {
    # CPU: big enough that compute dominates (hidden >= 256, >= 4 layers), GQA like Llama-3.
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=2048),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128257),
}
BF16_DENSE_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}


# -- data ---------------------------------------------------------------------------------------
def make_mix(name: str, n: int, seed: int = 0) -> list[list[dict]]:
    """'realistic': prompts 20-400 and responses 20-1,500 tokens, long-tailed. 'short': ~100 tokens in all.
    'best-of-8': n/8 prompts of 500 tokens, each with 8 responses of 200 tokens, in record order."""
    rng = random.Random(seed)
    convs = []
    prompt = ""
    for i in range(n):
        if name == "realistic":
            p, r = long_tail(rng, 90, 0.8, 20, 400), long_tail(rng, 220, 1.0, 20, 1500)
        elif name == "short":
            p, r = rng.randint(20, 40), rng.randint(25, 55)  # + 16 template tokens
        elif name == "best-of-8":
            prompt = words(rng, 500) if i % 8 == 0 else prompt
            convs.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": words(rng, 200)}])
            continue
        else:
            raise ValueError(name)
        convs.append([{"role": "user", "content": words(rng, p)}, {"role": "assistant", "content": words(rng, r)}])
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


@dataclass(frozen=True)
class FlopModel:
    """FLOPs of a model's forward, from its shape (counted once: never inside a timed region)."""

    non_embedding_params: int
    attention_per_token_pair: int  # 2 * n_layers * d_model

    @classmethod
    def of(cls, model) -> "FlopModel":
        n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
        return cls(n, 2 * model.config.num_hidden_layers * model.config.hidden_size)

    def sequence(self, length: int) -> float:
        return self.unit(PackUnit.single(range(length), 0))

    def unit(self, unit: PackUnit) -> float:
        """Useful FLOPs of one pack unit: the prompt once, each tail against the prompt and itself."""
        p = len(unit.prompt)
        return (2 * self.non_embedding_params * unit.num_tokens
                + self.attention_per_token_pair * (p * p + sum(2 * p * len(t) + len(t) ** 2 for t in unit.tails)))


def matmul_peak(device: torch.device, dtype: torch.dtype, clock: Callable[[], float] = time.perf_counter) -> float:
    """Measured dense matmul rate (FLOP/s) of this machine, for the FLOP-rate column (best of 3)."""
    size = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 10 if device.type == "cpu" else 50
    best = math.inf
    for _ in range(3):
        start = clock()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = min(best, clock() - start)
    return 2 * size**3 * reps / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- methods ----------------------------------------------------------------------------------
@dataclass
class Run:
    scores: list[float]
    occupied_tokens: int  # tokens the forward passes occupied, padding included (a shared prompt per tail)
    reused_tokens: int = 0  # shared-prompt tokens not recomputed (dense FLOPs scale with tokens)
    # Useful FLOPs actually computed (a shared prompt counts once); None: every sequence whole. A
    # function, so counting happens after the timer stops.
    flops: Callable[[], float] | None = None


ENGINE_MODES = {  # method name -> (batching overrides, torch.compile)
    "engine padded": (dict(packing="off", shared_prompt="off"), False),
    "engine packed": (dict(packing="on", shared_prompt="off"), False),
    "engine packed compiled": (dict(packing="on", shared_prompt="off"), True),
    "engine packed+shared": (dict(packing="on", shared_prompt="on"), False),
    "engine packed+shared compiled": (dict(packing="on", shared_prompt="on"), True),
}
SHARED_ONLY = ("engine packed+shared", "engine packed+shared compiled")  # rows for the best-of-8 mix only


@dataclass
class Bench:
    model: object
    tokenizer: object
    device: torch.device
    scorers: dict[bool, SequenceClassifierScorer]  # by compile
    flop_model: FlopModel
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    lengths: dict = field(default_factory=dict)

    def ids(self, conv) -> torch.Tensor:
        out = self.tokenizer.apply_chat_template(conv, tokenize=True, return_tensors="pt")
        return out["input_ids"] if hasattr(out, "keys") else out

    def full_flops(self, convs) -> float:
        return sum(self.flop_model.sequence(self.lengths[id(c)]) for c in convs)

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

    def engine(self, mode: str) -> Callable:
        overrides, compiled = ENGINE_MODES[mode]
        batching = self.batching.model_copy(update=overrides)
        engine = ScoringEngine(self.scorers[compiled], batching)

        def run(convs) -> Run:
            stats = []
            items = conversation_items(convs)
            encoded = engine.encode(items)
            results = engine.score_encoded(encoded, on_batch=stats.append)
            _sync(self.device)
            # The units the engine ran (same planner, same inputs), counted after the timer.
            flops = (lambda: sum(self.flop_model.unit(u) for u in engine.pack_units(encoded))) \
                if engine.shared_prompt else None
            return Run([r.score for r in results], sum(s.padded_tokens for s in stats),
                       sum(s.reused_tokens for s in stats), flops)

        return run


def time_methods(bench: Bench, convs, methods: dict[str, Callable], rounds: int,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    for fn in methods.values():  # warm-up: allocator, kernels, tokenizer caches
        fn(convs[:8])
    times: dict[str, list[float]] = {name: [] for name in methods}
    runs: dict[str, Run] = {}
    for _ in range(rounds):
        for name, fn in methods.items():  # interleaved, so drift hits all methods alike
            start = clock()
            runs[name] = fn(convs)
            _sync(bench.device)
            times[name].append(clock() - start)
    real = sum(bench.lengths[id(c)] for c in convs)
    full = bench.full_flops(convs)
    ref = runs["reference loop"].scores
    out = {}
    for name, run in runs.items():
        t = statistics.median(times[name])
        flops = run.flops() if run.flops is not None else full
        out[name] = {
            "seconds": t,
            "tokens_per_s": real / t,
            "seqs_per_s": len(convs) / t,
            "padding_efficiency": real / run.occupied_tokens,
            "flops_per_s": flops / t,
            "flops_saved": 1 - flops / full,
            "dense_flops_saved": run.reused_tokens / real,
            "max_abs_diff_vs_reference": max(abs(a - b) for a, b in zip(run.scores, ref)),
        }
    return out


def profile_method(bench: Bench, convs, name: str, fn: Callable, top: int = 12) -> None:
    """Where one method's time goes: matmul, attention, element-wise and the rest (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn(convs[:8])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bench.device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        fn(convs)
        _sync(bench.device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    cuda = bench.device.type == "cuda"
    self_us = {e.key: (e.self_device_time_total if cuda else e.self_cpu_time_total) for e in events}
    total = sum(self_us.values()) or 1.0
    groups = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "gemm", "gemv"),
              "attention": ("attention", "flash", "fmha", "sdpa")}
    shares = {g: 0.0 for g in (*groups, "element-wise + other")}
    for key, us in self_us.items():
        group = next((g for g, marks in groups.items() if any(m in key.lower() for m in marks)), "element-wise + other")
        shares[group] += us
    print(f"\nprofile of '{name}' ({wall:.2f}s wall with profiler; self {'device' if cuda else 'CPU'} time):")
    print("  " + "  ".join(f"{g} {100 * v / total:.0f}%" for g, v in shares.items()))
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=top))


def print_table(mix: str, n: int, tokens: int, peak: float, peak_label: str, rows: dict[str, dict]) -> None:
    ref = rows["reference loop"]["tokens_per_s"]
    hf = rows.get("hf padded 16", {}).get("tokens_per_s")
    print(f"\nmix={mix}: {n} conversations, {tokens:,} tokens; {peak_label}")
    print(f"{'method':<30}{'tok/s':>10}{'seq/s':>9}{'pad-eff':>9}{'saved':>7}{'GFLOP/s':>10}{'%peak':>7}"
          f"{'x ref':>7}{'x hf16':>8}{'max|d ref|':>12}")
    for name, r in rows.items():
        print(f"{name:<30}{r['tokens_per_s']:>10,.0f}{r['seqs_per_s']:>9.1f}{r['padding_efficiency']:>9.2f}"
              f"{100 * r['flops_saved']:>6.0f}%{r['flops_per_s'] / 1e9:>10.1f}{100 * r['flops_per_s'] / peak:>6.0f}%"
              f"{r['tokens_per_s'] / ref:>7.2f}{(r['tokens_per_s'] / hf if hf else float('nan')):>8.2f}"
              f"{r['max_abs_diff_vs_reference']:>12.1e}")
    speed = {name: r["tokens_per_s"] for name, r in rows.items()}
    checks = [("engine packed", "engine padded"), ("engine packed", "reference loop"),
              ("engine packed compiled", "engine packed"), ("engine packed compiled", "reference loop"),
              ("engine packed+shared", "engine packed"), ("engine packed+shared compiled", "engine packed compiled"),
              ("engine padded", "reference loop")]
    print("  " + "   ".join(f"{a} / {b} = {speed[a] / speed[b]:.2f}x" for a, b in checks if a in speed and b in speed))
    for name, r in rows.items():
        if r["dense_flops_saved"]:
            print(f"  {name}: shared prompts skip {100 * r['dense_flops_saved']:.0f}% of the dense FLOPs "
                  f"and {100 * r['flops_saved']:.0f}% of all useful FLOPs")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: small on CPU, llama-3.1-8b on CUDA")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--mixes", default="realistic,short,best-of-8")
    ap.add_argument("--n", type=int, default=None,
                    help="conversations per mix (default on CPU: 96 realistic, 400 short, 64 best-of-8; x2 on GPU)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="engine budget (default: per device and mode)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                    help="also time the engine with torch.compile (model.compile: true); compiling takes minutes "
                    "on a first run")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="'cpu': process CPU time; with --threads 1 it compares methods fairly on a busy machine, "
                    "where other processes preempt the threads of a parallel op and wall times mean little")
    ap.add_argument("--profile", metavar="METHOD", help="profile one method per mix instead of timing all")
    ap.add_argument("--kinds", default="custom,judge,pairwise,dpo",
                    help="comma-separated kind rows, each against its own loop (bench/kinds.py: custom on the "
                    "realistic mix; judge, pairwise, dpo on best-of-8); '' for none")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    shape = args.shape or ("llama-3.1-8b" if gpu else "small")
    dtype = torch.bfloat16 if gpu else torch.float32
    from rmcluster.model_loading import flash_attn_available

    attn = "flash_attention_2" if gpu and flash_attn_available() else "sdpa"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model_path(DemoModelSpec()))
    tokenizer.pad_token = "<|end_of_text|>"  # for the HF baseline only: a pad id the template never emits
    model = build_model(shape, device, dtype, attn)
    model.config.pad_token_id = tokenizer.pad_token_id
    start = time.perf_counter()
    max_length = model.config.max_position_embeddings
    scorers = {compiled: SequenceClassifierScorer(model, ChatEncoder(tokenizer, max_length), f"random-{shape}",
                                                  compile=compiled)
               for compiled in {False, args.compile}}
    compile_s = time.perf_counter() - start  # the compiled scorers compile in their load-time probe
    scorer = scorers[False]
    batching = BatchingConfig(max_batch_tokens=args.max_batch_tokens)
    bench = Bench(model, tokenizer, device, scorers, FlopModel.of(model), batching)
    methods = {"reference loop": bench.reference_loop, "hf padded 16": bench.hf_padded_16}
    methods.update({mode: bench.engine(mode) for mode, (_, compiled) in ENGINE_MODES.items()
                    if args.compile or not compiled})

    peak = matmul_peak(device, dtype, clock)
    if gpu:
        name = torch.cuda.get_device_name(device)
        spec = next((v for k, v in BF16_DENSE_PEAK_TFLOPS.items() if k in name), None)
        peak_label = f"{name}; measured bf16 matmul {peak / 1e12:.0f} TFLOP/s" + (
            f", %peak vs dense spec {spec:.0f} TFLOP/s" if spec else "")
        peak = spec * 1e12 if spec else peak
    else:
        peak_label = (f"CPU, {torch.get_num_threads()} threads; measured fp32 matmul peak {peak / 1e9:.0f} GFLOP/s"
                      f" ({args.clock} time)")
    padded, packed = (ScoringEngine(scorer, batching.model_copy(update=ENGINE_MODES[m][0])) for m in
                      ("engine padded", "engine packed"))
    auto = ScoringEngine(scorer, batching)
    print(f"model: random {shape} ({dtype}, {attn}) on {device}; budgets: padded {padded.max_batch_tokens}, "
          f"packed {packed.max_batch_tokens} tokens, {batching.max_batch_size} items; packing "
          f"{'supported' if scorer.supports_packing else 'UNSUPPORTED'} "
          f"({'flash-attn varlen' if scorer.runner.varlen_fn else 'sdpa per segment'}); the default (auto) runs "
          f"{'packed' if auto.packing else 'padded'}; {args.rounds} interleaved rounds, median {args.clock} time"
          + (f"; scorers built in {compile_s:.0f}s including torch.compile" if args.compile else ""))
    report = {"shape": shape, "device": str(device), "dtype": str(dtype), "peak_flops_per_s": peak, "mixes": {}}
    for mix in filter(None, args.mixes.split(",")):
        n = args.n or {"realistic": 96, "short": 400, "best-of-8": 64}[mix] * (2 if gpu else 1)
        convs = make_mix(mix, n)
        bench.lengths = {id(c): bench.ids(c).shape[-1] for c in convs}
        chosen = {k: f for k, f in methods.items() if mix == "best-of-8" or k not in SHARED_ONLY}
        if args.profile:
            profile_method(bench, convs, args.profile, chosen[args.profile])
            continue
        rows = time_methods(bench, convs, chosen, args.rounds, clock)
        print_table(mix, n, sum(bench.lengths.values()), peak, peak_label, rows)
        report["mixes"][mix] = rows
    if args.kinds and not args.profile:
        from bench.kinds import run_kinds

        scale = 2 if gpu else 1
        report["kinds"] = run_kinds(args.kinds.split(","), "small", make_mix("realistic", 96 * scale),
                                    make_mix("best-of-8", 64 * scale), args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
