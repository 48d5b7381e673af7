"""Segment attention for packed rows, registered in transformers' AttentionInterface.

transformers' own packed path on sdpa/eager derives a dense block-causal mask of T x T from the
position ids: O(T^2) memory, and a masked kernel over the whole row. Here each segment attends on
its own instead:

- `sdpa` kernel (CPU, and CUDA without flash-attn): one `scaled_dot_product_attention` call per
  segment, `is_causal` for plain segments and a small bottom-right causal mask for tails that
  continue a shared prompt. Work is the sum of per-segment attention, as in per-sequence scoring.
- `varlen` kernel (CUDA with flash-attn): one `flash_attn_varlen_func` call over the whole pack, with
  keys gathered per segment (prompt rows, from the pack or a prefix-cache entry, then own rows) and
  flash-attn's bottom-right causal mask.

A layer's sliding window (Mistral-style: the last `sliding_window` keys) is applied per segment.
Anything else the function cannot honour (a mask, attention sinks, position bias, logit softcapping on
sdpa) raises, so the scorer's load-time probe turns packing off for that model.

The model's attention implementation is switched to this function only inside `segment_forward`,
and the mask builder is not registered for it, so transformers builds no mask at all there. Outside
`segment_forward` the model is untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from .last_layer_rows import QUERY_STARTS
from .packing import PackLayout

ATTN_NAME = "rmcluster_segments"

VarlenFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class _Active:
    layout: PackLayout
    varlen_fn: Optional[VarlenFn]
    # Prefix-cache entries the pack's cached segments read, per slot, per layer: (keys, values).
    cached: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]] = ()
    # Row spans [start, end) whose keys and values each layer appends to `captured[span]` (for the cache).
    captured: Optional[dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]]] = None


_ACTIVE: contextvars.ContextVar[Optional[_Active]] = contextvars.ContextVar("rmcluster_segments", default=None)


def flash_varlen_fn() -> Optional[VarlenFn]:
    """flash-attn's varlen kernel when it imports, else None."""
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception:  # absent, or a broken build (ABI mismatch)
        return None
    fn: VarlenFn = flash_attn_varlen_func
    return fn


def torch_varlen_fn() -> Optional[VarlenFn]:
    """torch's own varlen FlashAttention (CUDA, bf16/fp16, sm80+), behind flash-attn's calling convention;
    None where this torch has none. Without it, CUDA without flash-attn would run one attention call
    per segment per layer (thousands of kernel launches per pack)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    takes_gqa = "enable_gqa" in inspect.signature(varlen_attn).parameters

    def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor, max_q: int,
             max_k: int, dropout_p: float = 0.0, softmax_scale: Optional[float] = None, causal: bool = True,
             window_size: tuple[int, int] = (-1, 0), softcap: Optional[float] = None) -> torch.Tensor:
        if softcap is not None:
            raise NotImplementedError("torch varlen attention has no logit softcap; install flash-attn")
        if not causal:
            raise NotImplementedError("segment attention is causal only")
        extra: dict[str, Any] = {}
        if q.shape[1] != k.shape[1]:
            if takes_gqa:
                extra["enable_gqa"] = True
            else:  # an older torch: give every query head its own copy of its key/value head
                group = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        # A tuple: (left, 0) is causal (a list would be read as no window at all).
        left = window_size[0] if window_size[0] >= 0 else -1
        out = varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=softmax_scale, window_size=(int(left), 0), **extra)
        return out[0] if isinstance(out, tuple) else out

    return call


def varlen_kernel(model: torch.nn.Module, device: torch.device) -> Optional[VarlenFn]:
    """The whole-pack kernel for a model's packed forwards, or None for sdpa per segment (CPU, fp32, old GPUs):
    flash-attn's for flash_attention_2 models, else torch's own on CUDA sm80+ in half precision."""
    if device.type != "cuda" or getattr(model, "dtype", None) not in (torch.float16, torch.bfloat16):
        return None
    if getattr(model.config, "_attn_implementation", None) == "flash_attention_2":
        fn = flash_varlen_fn()
        if fn is not None:
            return fn
    if torch.cuda.get_device_capability(device) < (8, 0):
        return None
    return torch_varlen_fn()


def segment_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """AttentionInterface signature: query [1, H, T, D], key/value [1, KV, T, D] -> ([1, T, H, D], None)."""
    active = _ACTIVE.get()
    if active is None:
        raise RuntimeError(f"{ATTN_NAME} attention runs only inside rmcluster.segment_attention.segment_forward")
    if attention_mask is not None:  # transformers builds none for this name; a model that does is unknown ground
        raise NotImplementedError("segment attention takes no attention mask")
    for name in ("s_aux", "position_bias"):
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"segment attention does not support {name}")
    if kwargs.get("is_causal") is False or not getattr(module, "is_causal", True):
        raise NotImplementedError("segment attention is causal only")
    if query.shape[0] != 1:
        raise ValueError(f"a packed forward has one row, got {query.shape[0]}")
    layout = active.layout
    window = sliding_window if sliding_window is not None and sliding_window < layout.max_kv_len else None
    layer = getattr(module, "layer_idx", None)
    if (active.cached or active.captured) and layer is None:
        raise NotImplementedError("the prefix cache needs attention modules that know their layer_idx")
    if active.captured:
        for span, kv in active.captured.items():  # layers run in order: entry `layer` of each list is this layer's
            kv.append((key[:, :, span[0]:span[1]].clone(), value[:, :, span[0]:span[1]].clone()))
    cached = [slot[layer] for slot in active.cached] if layer is not None and active.cached else []
    if active.varlen_fn is not None:
        return _varlen(active.varlen_fn, layout, query, key, value, scaling, window, softcap, cached), None
    if softcap is not None:
        raise NotImplementedError("sdpa has no attention-logit softcap; use flash_attention_2")
    return _per_segment(layout, query, key, value, scaling, window, QUERY_STARTS.get(), cached), None


def _per_segment(layout: PackLayout, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: Optional[float],
                 window: Optional[int], query_starts: Optional[Sequence[Optional[int]]] = None,
                 cached: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> torch.Tensor:
    """`query_starts` (the pruned last layer): per segment, the first row whose output is read; the rows
    before it (and segments marked None) are left zero, since no one reads them. `cached`: this layer's
    (keys, values) of each prefix-cache slot."""
    gqa = q.shape[1] != k.shape[1]
    group = q.shape[1] // k.shape[1]
    shape = (1, q.shape[2], q.shape[1], v.shape[-1])
    out = q.new_empty(shape) if query_starts is None else q.new_zeros(shape)
    for n, s in enumerate(layout.segments):
        q0 = s.start if query_starts is None else query_starts[n]
        if q0 is None:
            continue
        q_s = q[:, :, q0:s.end]
        if s.cache_slot >= 0:
            k_p, v_p = cached[s.cache_slot]
            k_s = torch.cat((k_p[:, :, s.prefix_start:s.prefix_end], k[:, :, s.start:s.end]), dim=2)
            v_s = torch.cat((v_p[:, :, s.prefix_start:s.prefix_end], v[:, :, s.start:s.end]), dim=2)
        elif s.prefix_len:
            k_s = torch.cat((k[:, :, s.prefix_start:s.prefix_end], k[:, :, s.start:s.end]), dim=2)
            v_s = torch.cat((v[:, :, s.prefix_start:s.prefix_end], v[:, :, s.start:s.end]), dim=2)
        else:
            k_s, v_s = k[:, :, s.start:s.end], v[:, :, s.start:s.end]
        q_len, kv_len = q_s.shape[2], k_s.shape[2]
        windowed = window is not None and kv_len > window
        if q_len == kv_len and not windowed:  # the fast, maskless causal kernel
            o = F.scaled_dot_product_attention(q_s, k_s, v_s, is_causal=True, scale=scaling, enable_gqa=gqa)
        elif q_len == 1 and not windowed:  # one query, the segment's last row: it sees every key
            o = F.scaled_dot_product_attention(q_s, k_s, v_s, scale=scaling, enable_gqa=gqa)
        else:
            mask = layout.causal_mask(q_len, kv_len, window, q.device)
            if gqa:  # masked SDPA with enable_gqa falls off the fast kernels: expand K/V to the query heads
                k_s, v_s = k_s.repeat_interleave(group, dim=1), v_s.repeat_interleave(group, dim=1)
            o = F.scaled_dot_product_attention(q_s, k_s, v_s, attn_mask=mask, scale=scaling)
        out[0, q0:s.end] = o[0].transpose(0, 1)
    return out


def _varlen(fn: VarlenFn, layout: PackLayout, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            scaling: Optional[float], window: Optional[int], softcap: Optional[float],
            cached: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> torch.Tensor:
    """`cached`: this layer's (keys, values) of each prefix-cache slot, gathered after the pack's own rows."""
    kv_index, cu_q, cu_k, max_q, max_k = layout.varlen_args(q.device)
    q_rows = q[0].transpose(0, 1).contiguous()  # [T, H, D]
    k_rows = k[0].transpose(0, 1)
    v_rows = v[0].transpose(0, 1)
    if layout.cached_rows:  # then the rows of each prefix-cache slot the pack reads, as kv_index counts them
        if len(cached) != len(layout.cached_rows):
            raise ValueError(f"the pack reads {len(layout.cached_rows)} prefix-cache slots, {len(cached)} given")
        slots = list(zip(cached, layout.cached_rows))
        k_rows = torch.cat([k_rows, *(k_p[0, :, :n].transpose(0, 1) for (k_p, _), n in slots)])
        v_rows = torch.cat([v_rows, *(v_p[0, :, :n].transpose(0, 1) for (_, v_p), n in slots)])
    if kv_index is not None:  # each segment's keys: its shared prompt's rows, then its own
        k_rows, v_rows = k_rows.index_select(0, kv_index), v_rows.index_select(0, kv_index)
    extra: dict[str, Any] = {}
    if window is not None:
        extra["window_size"] = (window - 1, 0)  # the last `window` keys, itself included
    if softcap is not None:
        extra["softcap"] = softcap
    out = fn(q_rows, k_rows.contiguous(), v_rows.contiguous(), cu_q, cu_k, max_q, max_k,
             dropout_p=0.0, softmax_scale=scaling, causal=True, **extra)
    return out.unsqueeze(0)


# Kept out of torch.compile graphs: the segment loop depends on each pack's layout, which would
# otherwise be traced into a new graph per pack.
AttentionInterface.register(ATTN_NAME, torch.compiler.disable(segment_attention_forward))  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def segment_forward(model: torch.nn.Module, layout: PackLayout, varlen_fn: Optional[VarlenFn] = None,
                    cached: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]] = (),
                    captured: Optional[dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]]] = None,
                    ) -> Iterator[None]:
    """Route `model`'s attention through the segment plan of `layout` for the forward passes inside.

    `cached`: per prefix-cache slot the layout's cached segments read, per layer, (keys, values).
    `captured`: row spans to keep; each layer appends the spans' (keys, values) to its list.

    Not re-entrant across threads on one model: callers serialize forwards per model (the scorer
    holds a lock), since the attention implementation is a per-model setting.
    """
    config: Any = model.config
    previous = config._attn_implementation
    token = _ACTIVE.set(_Active(layout, varlen_fn, cached, captured))
    config._attn_implementation = ATTN_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
        _ACTIVE.reset(token)
