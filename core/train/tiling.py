"""Sequence tiling: a decoder layer's MLP, or the whole layer, run over the sequence a tile at a
time, so that one layer's working set is one tile's and not the whole sequence's.

Under gradient checkpointing a layer is recomputed in the backward pass with its intermediates
kept for its own backward; at long lengths the largest of them are the MLP's (gate, up, their
product: three tensors of tokens x intermediate size, e.g. 3 x 80K x 14,336 floats per layer for
Llama-3-8B). The MLP acts on each token on its own, so it can run tile by tile, each tile under
its own (nested) checkpoint: only one tile's intermediates are alive at a time, and the result is
the same to the last bit of each tile. This is the idea of ALST's tiled MLP (Snowflake's Arctic
Long Sequence Training); transformers and peft have no such option, hence this wrapper.

A tiled layer (`tile_layers`) goes further, for the attention half as well: the keys and values
are computed once for the whole sequence (under their own checkpoint: grouped-query models keep
few of them), then each tile of queries attends to the keys up to its own end (a causal mask
aligned to the bottom right), goes through o_proj, the residual and the MLP, under its own
checkpoint. What stays alive through a layer's backward is then the keys and values, the layer's
input and output, and one tile's intermediates. Attention computed tile by tile is the same sum
in another order (equal to float rounding); on CPU it is about 1.3x slower than one causal call.

Knows nothing about runs or configs: `core.train.engine` applies them when `mlp_tile` or
`layer_tile` is set.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)
# Decoder layers laid out as Llama's (pre-norm attention with q/k/v/o projections and
# rotary embeddings from the model, then a pre-norm MLP): the tiled forward below rebuilds that
# order. Others (query/key norms, sliding windows, parallel blocks) are left whole.
TILED_LAYERS = ("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer")


def tiled_forward(forward: Callable[[torch.Tensor], torch.Tensor], tile: int):
    """`forward` (a token-wise MLP) run on tiles of at most `tile` tokens of dimension 1."""
    if tile < 1:
        raise ValueError(f"tile must be at least 1 token, got {tile}")

    @functools.wraps(forward)
    def run(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() < 2 or hidden.shape[1] <= tile:
            return forward(hidden)
        tiles = hidden.split(tile, dim=1)
        if not torch.is_grad_enabled():  # inference: nothing is saved, tiles only bound the peak
            return torch.cat([forward(t) for t in tiles], dim=1)
        return torch.cat([checkpoint(forward, t, use_reentrant=False) for t in tiles], dim=1)

    run.tile = tile  # type: ignore[attr-defined]
    return run


def tile_mlps(model: nn.Module, tile: int) -> int:
    """Run the MLP of every decoder layer of `model` (under any wrapper: peft, DDP) tile by
    tile; returns how many MLPs that is. The module tree is not changed (the MLP's forward is
    replaced on the instance), so parameter names, adapters and checkpoints stay as they are."""
    count = 0
    for module in list(model.modules()):
        mlp: Any = getattr(module, "mlp", None)
        if not isinstance(mlp, nn.Module) or not _is_layer(module):
            continue
        if getattr(mlp.forward, "tile", None) is None:
            mlp.forward = tiled_forward(mlp.forward, tile)
        count += 1
    return count


def _is_layer(module: nn.Module) -> bool:
    """A decoder layer: it holds both an attention block and an MLP."""
    return any(hasattr(module, name) for name in ("self_attn", "attention", "attn"))


def tile_layers(model: nn.Module, tile: int) -> int:
    """Run every decoder layer of `model` whose layout is Llama's (see TILED_LAYERS) tile by
    tile over the sequence; returns how many layers that is. Like `tile_mlps`, the module tree
    and parameter names are unchanged."""
    if tile < 1:
        raise ValueError(f"tile must be at least 1 token, got {tile}")
    count, skipped = 0, set()
    for module in list(model.modules()):
        if not _is_layer(module):
            continue
        if not _tileable(module):
            skipped.add(type(module).__name__)
            continue
        if getattr(module.forward, "tile", None) is None:
            module.forward = tiled_layer_forward(module, tile)
        count += 1
    if skipped:
        log.warning(
            "layers not tiled (their layout is not Llama's): %s", ", ".join(sorted(skipped))
        )
    return count


def _tileable(layer: nn.Module) -> bool:
    attn = getattr(layer, "self_attn", None)
    parts = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")
    return (
        type(layer).__name__ in TILED_LAYERS
        and attn is not None
        and all(hasattr(attn, name) for name in parts)
        and not any(hasattr(attn, name) for name in ("q_norm", "k_norm", "sliding_window"))
        and not getattr(attn, "attention_dropout", 0.0)
        and hasattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb")
    )


def tiled_layer_forward(layer: nn.Module, tile: int):
    """`layer.forward`, computed tile by tile over the sequence (see the module docstring).

    Falls back to the layer's own forward wherever tiling has nothing to bound or cannot keep
    the result: a sequence of one tile, a KV cache (generation), an explicit attention mask
    (padding; training batches of one sample have none under SDPA)."""
    whole = layer.forward
    attn: Any = layer.self_attn
    rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb

    def heads(x: torch.Tensor, proj: nn.Module) -> torch.Tensor:
        return proj(x).view(*x.shape[:2], -1, attn.head_dim).transpose(1, 2)

    def keys_values(x, cos, sin):
        normed = layer.input_layernorm(x)
        keys = heads(normed, attn.k_proj)
        return rotate(keys, keys, cos, sin)[1], heads(normed, attn.v_proj)

    def part(x, keys, values, cos, sin, start: int):
        """Tokens start .. start + len(x) of the layer's output, from the keys before them."""
        queries = heads(layer.input_layernorm(x), attn.q_proj)
        queries = rotate(queries, queries, cos, sin)[0]
        n, seen = x.shape[1], keys.shape[2]
        # Query i (at start + i) sees the keys up to start + i: causal, bottom-right aligned.
        mask = None if start == 0 else torch.ones(n, seen, dtype=torch.bool, device=x.device)
        mixed = F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            attn_mask=None if mask is None else mask.tril(diagonal=start),
            is_causal=mask is None,
            scale=attn.scaling,
            enable_gqa=queries.shape[1] != keys.shape[1],
        )
        x = x + attn.o_proj(mixed.transpose(1, 2).reshape(*x.shape[:2], -1))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def step(function, *args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(function, *args, use_reentrant=False, **kwargs)
        return function(*args, **kwargs)

    @functools.wraps(whole)
    def run(hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        length = hidden_states.shape[1]
        mask = args[0] if args else kwargs.get("attention_mask")
        rope = kwargs.get("position_embeddings")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if length <= tile or mask is not None or cache is not None or rope is None or args:
            return whole(hidden_states, *args, **kwargs)
        if getattr(layer, "gradient_checkpointing", False) and layer.training:
            # transformers checkpoints a layer in its class's forward, which this one replaces:
            # the whole tiled layer goes under one checkpoint here, so that between the forward
            # and the backward a layer keeps its input only (the tiles' keys, values and inputs
            # live while the backward recomputes this layer).
            cos, sin = rope  # by keyword: held as they are (shared by every layer), not saved
            return step(tiled, hidden_states, cos=cos, sin=sin)
        return tiled(hidden_states, *rope)

    def tiled(hidden_states, cos, sin):
        length = hidden_states.shape[1]
        keys, values = step(keys_values, hidden_states, cos, sin)
        outs = []
        for start in range(0, length, tile):
            end = min(start + tile, length)
            outs.append(
                step(
                    part,
                    hidden_states[:, start:end],
                    keys[:, :, :end],
                    values[:, :, :end],
                    cos[:, start:end],
                    sin[:, start:end],
                    start,
                )
            )
        return torch.cat(outs, dim=1)

    run.tile = tile  # type: ignore[attr-defined]
    return run


def keep_residual_in(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast the input embeddings' output to `dtype`, so the residual stream (and with it every
    checkpointed layer input) is carried in `dtype`.

    peft's `prepare_model_for_kbit_training` upcasts the embeddings and norms of a 4-bit model
    to fp32, so the stream it feeds the layers is fp32: twice the bytes of every saved layer
    input. Under autocast the layers' projections return `dtype` anyway, and the norms upcast to
    fp32 inside; only the sums along the stream are then rounded to `dtype`, as in a bf16 model.
    The embeddings' own weights (trained, fp32 master copy) are untouched."""
    model.get_input_embeddings().register_forward_hook(lambda _m, _i, out: out.to(dtype))
