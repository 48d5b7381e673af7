"""Step 3 of bench/gpu_check.sh: torch's varlen FlashAttention against per-segment SDPA, as the packed path
uses them, at the Llama-3.1-8B attention shape (32 heads, 8 KV heads, head dim 128), bf16.

Checks a pack of plain sequences, shared-prompt tails (queries shorter than keys: bottom-right causal)
and a sliding window, then times both kernels on a 32k-token pack.
"""

from __future__ import annotations

import sys
import time

import torch

from rmcluster.packing import PackLayout, PackUnit


def _layout(device: torch.device, lengths: list[int], prompt: int = 0, tails: int = 0) -> PackLayout:
    gen = torch.Generator().manual_seed(0)
    units = [PackUnit.single(torch.randint(0, 1000, (n,), generator=gen).tolist(), i) for i, n in enumerate(lengths)]
    if prompt:
        units.append(PackUnit(list(range(prompt)), [list(range(50 + 7 * k)) for k in range(tails)],
                              list(range(len(units), len(units) + tails))))
    return PackLayout(units, device)


def main() -> None:
    from rmcluster import segment_attention as sa

    dry = "--dry-run" in sys.argv
    kernel = sa.torch_varlen_fn()
    print(f"torch varlen kernel: {'available' if kernel else 'absent'}")
    if dry:
        print("dry run: stopping before the first CUDA call")
        return
    device = torch.device("cuda")
    heads, kv_heads, dim = 32, 8, 128
    for name, layout, window in (("plain", _layout(device, [300, 1200, 77, 513]), None),
                                 ("shared prefix", _layout(device, [400], prompt=700, tails=5), None),
                                 ("sliding window 256", _layout(device, [900, 1300]), 256)):
        t = layout.num_tokens
        q = torch.randn(1, heads, t, dim, device=device, dtype=torch.bfloat16)
        k = torch.randn(1, kv_heads, t, dim, device=device, dtype=torch.bfloat16)
        v = torch.randn(1, kv_heads, t, dim, device=device, dtype=torch.bfloat16)
        ref = sa._per_segment(layout, q, k, v, None, window)
        got = sa._varlen(kernel, layout, q, k, v, None, window, None)
        print(f"{name}: {t} tokens, max |varlen - sdpa| = {(got.float() - ref.float()).abs().max().item():.3e}")
    layout = _layout(device, [512] * 64)  # 32k tokens
    t = layout.num_tokens
    q = torch.randn(1, heads, t, dim, device=device, dtype=torch.bfloat16)
    k = torch.randn(1, kv_heads, t, dim, device=device, dtype=torch.bfloat16)
    v = torch.randn(1, kv_heads, t, dim, device=device, dtype=torch.bfloat16)
    for name, fn in (("per-segment sdpa", lambda: sa._per_segment(layout, q, k, v, None, None)),
                     ("torch varlen", lambda: sa._varlen(kernel, layout, q, k, v, None, None, None))):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        print(f"{name}: {(time.perf_counter() - start) / 10 * 1e3:.2f} ms per 32k-token layer")


if __name__ == "__main__":
    main()
