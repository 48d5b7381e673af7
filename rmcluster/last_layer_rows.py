"""The last decoder layer computed only at the rows a scorer reads.

Every layer but the last feeds keys and values to later tokens, so it runs on every row. The last
layer's output is read only at the scorer's positions (a classifier's last token, a PRM's step
separators), so in packed forwards it runs attention for those queries alone and its MLP on those
rows alone: with L layers about 1/L of the forward's work is skipped (a fifth of the 4-layer demo
model's, about 3% of a 32-layer 8B model's), with the same numbers, since no row depends on
another row's output in that layer.

It applies to pre-norm decoder layers made of exactly `input_layernorm`, `self_attn`,
`post_attention_layernorm` and `mlp` (Llama, Mistral, Qwen2/3, and remote-code heads built on
them). `DecoderRunner` probes at load time that pruned hidden states equal full ones before it
uses this; a layer of another shape, or one that fails the probe, runs whole.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Optional, Sequence

import torch

_PARTS = frozenset({"input_layernorm", "self_attn", "post_attention_layernorm", "mlp"})

# While the last layer's attention runs: per segment of the active pack, the first row whose attention
# output is read (None: no row of it is). Segment attention then computes only those queries.
QUERY_STARTS: contextvars.ContextVar[Optional[Sequence[Optional[int]]]] = contextvars.ContextVar(
    "rmcluster_query_starts", default=None)


def last_layer(backbone: torch.nn.Module) -> Optional[torch.nn.Module]:
    """The backbone's last decoder layer when it has the pre-norm shape pruning assumes, else None."""
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return None
    config = getattr(backbone, "config", None)
    count = getattr(config, "num_hidden_layers", len(layers))
    if count != len(layers):  # the loop runs layers[:num_hidden_layers]: the last one run must be the one patched
        return None
    layer = layers[-1]
    return layer if {name for name, _ in layer.named_children()} == _PARTS else None


def _pruned_forward(layer: Any, rows: torch.Tensor, query_starts: Sequence[Optional[int]],
                    hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The pre-norm layer (norm, attention, residual, norm, MLP, residual) at `rows` only: [1, len(rows), H]."""
    if args:  # called in a way this forward does not know: run the layer whole (and the probe fails)
        raise TypeError("pruned last layer takes keyword arguments only")
    normed = layer.input_layernorm(hidden_states)
    token = QUERY_STARTS.set(query_starts)
    try:
        out = layer.self_attn(hidden_states=normed, **kwargs)
    finally:
        QUERY_STARTS.reset(token)
    attn = out[0] if isinstance(out, tuple) else out
    hidden = hidden_states[:, rows] + attn[:, rows]
    pruned: torch.Tensor = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return pruned


@contextlib.contextmanager
def rows_only(layer: torch.nn.Module, rows: torch.Tensor, query_starts: Sequence[Optional[int]]) -> Iterator[None]:
    """Inside, `layer` (the backbone's last) returns its output at `rows` of the packed row only, so the
    backbone's last_hidden_state is [1, len(rows), H] in the order of `rows`. `query_starts`: per segment,
    the first of `rows` in it (or None), for the attention function."""
    layer.forward = lambda hidden_states, *args, **kwargs: _pruned_forward(layer, rows, query_starts, hidden_states,
                                                                           *args, **kwargs)
    try:
        yield
    finally:
        del layer.forward  # the class's forward again
