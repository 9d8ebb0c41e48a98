"""Sequence tiling: a decoder layer's MLP, or the whole layer, run over the sequence a tile at a
time, so that one layer's working set is one tile's and not the whole sequence's.

Under gradient checkpointing a layer is recomputed in the backward pass with its intermediates
kept for its own backward; at long lengths the largest of them are the MLP's (gate, up, their
product: three tensors of tokens x intermediate size, e.g. 3 x 80K x 14,336 floats per layer for
Llama-3-8B). The MLP acts on each token on its own, so it can run tile by tile, each tile under
its own (nested) checkpoint: only one tile's intermediates are alive at a time, and the result is
the same to the last bit of each tile. This is the idea of ALST's tiled MLP (Snowflake's Arctic
Long Sequence Training); transformers and peft have no such option, hence this wrapper.

A tiled layer (`tile_layers`) goes further, for the attention half as well. Its keys and
values are computed tile by tile into one buffer each (grouped-query models have few of them);
then each tile of queries attends to the keys up to its own end (causal, aligned to the bottom
right), and goes through o_proj, the residual and the MLP. The layer is one autograd function
that saves its input only (it is its own gradient checkpoint); its backward recomputes the
tiles last to first and accumulates the keys' and values' gradients in place (see
`TiledLayer.backward`). What a layer's backward holds for the whole sequence is then the keys,
the values, their gradients and the gradient into the layer; the gradient out of it is written
over its own saved input, tile by tile as each is done with, when that input is another tiled
layer's output (nothing else keeps it); everything else is one tile's. No tile makes an
n x length causal mask either (`causal_attention`). Attention computed tile by tile is the same
sum in another order (equal to float rounding).

Knows nothing about runs or configs: `core.train.engine` applies them when `mlp_tile` or
`layer_tile` is set.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention.bias import causal_lower_right
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


def keep_instance_forwards(model: nn.Module) -> None:
    """Turn transformers' hub kernels off in `model`, so that forwards set on its instances stay.

    From transformers 5.25 a model loads with hub kernels on (`use_kernels` defaults to true and
    the `kernels` package is now one of its requirements), and each `train()` or `eval()` that
    changes the mode kernelizes it again. Kernelizing resets the forward of every instance of a
    kernel-decorated class (RMSNorm, rotary embeddings, some MLPs) to its class's, dropping any
    forward set on the instance. The engine sets forwards on instances (tiled MLPs and layers,
    the final norm moved in front of the head) and the Trainer switches modes, so they would be
    undone silently. Measured on the embedded model: the moved final norm ran twice in training
    and the training loss was 20.2 where the model's is 13.2. Turning kernels off runs one last
    kernelize (to the torch forwards), so it must come before any forward is set; it is a no-op
    when they are off already, and on transformers without hub kernels."""
    for module in model.modules():
        if getattr(module, "use_kernels", False) is True:
            module.use_kernels = False


def tile_mlps(model: nn.Module, tile: int) -> int:
    """Run the MLP of every decoder layer of `model` (under any wrapper: peft, DDP) tile by
    tile; returns how many MLPs that is. The module tree is not changed (the MLP's forward is
    replaced on the instance), so parameter names, adapters and checkpoints stay as they are."""
    keep_instance_forwards(model)
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
    keep_instance_forwards(model)
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
        # The backward recomputes tiles in another order than the forward: no random masks.
        and not any(isinstance(m, nn.Dropout) and m.p for m in layer.modules())
        and hasattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb")
    )


def causal_attention(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int, scale: float
) -> torch.Tensor:
    """Queries at positions start .. start + n attending to the keys 0 .. start + n: causal,
    aligned to the bottom right (query i sees keys up to start + i).

    A dense mask of n x (start + n) would be the largest tensor of a tile (SDPA turns a boolean
    mask into floats: 268 MB for a tile of 2,048 queries at 32K tokens). On a GPU, torch's
    flash and memory-efficient kernels take `causal_lower_right` as it is. On CPU, where it would
    be materialised, the queries go in reversed order: query n - 1 - r then sees the keys up to
    start + n - 1 - r, and row r of the mask is the window r .. r + start + n of one vector of
    start + 2n floats (start + n zeros, then n -inf); SDPA reads a mask through its strides, so
    the mask is that vector seen with strides (1, 1), and nothing of n x (start + n) is stored."""
    n, seen = queries.shape[2], keys.shape[2]
    gqa = queries.shape[1] != keys.shape[1]
    if start == 0:
        return F.scaled_dot_product_attention(
            queries, keys, values, is_causal=True, scale=scale, enable_gqa=gqa
        )
    if queries.device.type != "cpu":
        mask = causal_lower_right(n, seen)
        return F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=mask, scale=scale, enable_gqa=gqa
        )
    window = torch.zeros(seen + n, dtype=queries.dtype, device=queries.device)
    window[seen:] = float("-inf")
    mask = window.as_strided((n, seen), (1, 1))
    mixed = F.scaled_dot_product_attention(
        queries.flip(2), keys, values, attn_mask=mask, scale=scale, enable_gqa=gqa
    )
    return mixed.flip(2)


class TiledLayer:
    """One decoder layer of Llama's layout, computed `tile` tokens at a time (see the module
    docstring): the forward without the autograd graph, the backward recomputing tile by tile."""

    def __init__(self, layer: nn.Module, tile: int):
        self.layer, self.tile = layer, tile
        self.attn: Any = layer.self_attn
        self.rotate = sys.modules[type(self.attn).__module__].apply_rotary_pos_emb

    def _heads(self, x: torch.Tensor, proj: nn.Module) -> torch.Tensor:
        return proj(x).view(*x.shape[:2], -1, self.attn.head_dim).transpose(1, 2)

    def keys_values(self, x, cos, sin):
        normed = self.layer.input_layernorm(x)
        keys = self._heads(normed, self.attn.k_proj)
        return self.rotate(keys, keys, cos, sin)[1], self._heads(normed, self.attn.v_proj)

    def part(self, x, keys, values, cos, sin, start: int):
        """Tokens start .. start + len(x) of the layer's output, from the keys before them."""
        layer, attn = self.layer, self.attn
        queries = self._heads(layer.input_layernorm(x), attn.q_proj)
        queries = self.rotate(queries, queries, cos, sin)[0]
        mixed = causal_attention(queries, keys, values, start, attn.scaling)
        x = x + attn.o_proj(mixed.transpose(1, 2).reshape(*x.shape[:2], -1))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def spans(self, length: int) -> list[tuple[int, int]]:
        return [(a, min(a + self.tile, length)) for a in range(0, length, self.tile)]

    def all_keys_values(self, hidden, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the whole sequence, computed tile by tile into one buffer each."""
        keys = values = None
        for a, b in self.spans(hidden.shape[1]):
            k, v = self.keys_values(hidden[:, a:b], *_at(a, b, cos, sin))
            if keys is None:
                keys = k.new_empty(*k.shape[:2], hidden.shape[1], k.shape[3])
                values = v.new_empty(*v.shape[:2], hidden.shape[1], v.shape[3])
            keys[:, :, a:b], values[:, :, a:b] = k, v
        return keys, values

    def forward(self, hidden, cos, sin) -> torch.Tensor:
        keys, values = self.all_keys_values(hidden, cos, sin)
        out = None
        for a, b in self.spans(hidden.shape[1]):
            y = self.part(hidden[:, a:b], keys[:, :, :b], values[:, :, :b], *_at(a, b, cos, sin), a)
            out = y.new_empty(*hidden.shape[:2], y.shape[2]) if out is None else out
            out[:, a:b] = y
        return out

    def backward(self, hidden, cos, sin, grad, params, over_input: bool = False):
        """The gradients of the layer's input and of `params` given the output's `grad`;
        with `over_input`, the input's gradient is written over `hidden` itself.

        Tiles are taken last to first. A tile's queries, attention, o_proj and MLP are
        recomputed and differentiated against their input, the keys and values up to the tile's
        end, and the parameters; the key and value gradients accumulate in place in one buffer
        each. Once a tile is done no later tile adds to its own keys' gradients, so its keys and
        values are differentiated back to its input right away. Nothing the size of the sequence
        is made besides the keys, the values, their gradients and the input's gradient: slicing
        the input in an autograd graph would instead give every tile a whole-sequence gradient
        of zeros to add up. A tile's input rows are read for the last time by its own keys
        and values, so once they are done the rows can take the input's gradient: `over_input`
        spares one whole-sequence buffer, for callers that own `hidden`."""
        with torch.no_grad():
            keys, values = self.all_keys_values(hidden, cos, sin)
        # Summed over up to length / tile tiles: in fp32 even when the keys are bf16.
        d_keys = torch.zeros_like(keys, dtype=torch.float32)
        d_values = torch.zeros_like(values, dtype=torch.float32)
        d_hidden = hidden if over_input else torch.empty_like(hidden)
        d_params: list[torch.Tensor | None] = [None] * len(params)

        def add(grads) -> None:
            for i, g in enumerate(grads):
                if g is not None:
                    d_params[i] = g if d_params[i] is None else d_params[i].add_(g)

        for a, b in reversed(self.spans(hidden.shape[1])):
            rope = _at(a, b, cos, sin)
            with torch.enable_grad():
                x = hidden[:, a:b].detach().requires_grad_()
                k = keys[:, :, :b].detach().requires_grad_()
                v = values[:, :, :b].detach().requires_grad_()
                y = self.part(x, k, v, *rope, a)
                d_x, d_k, d_v, *d_p = torch.autograd.grad(
                    y, [x, k, v, *params], grad[:, a:b], allow_unused=True
                )
            del x, k, v, y
            d_keys[:, :, :b] += d_k
            d_values[:, :, :b] += d_v
            del d_k, d_v
            add(d_p)
            with torch.enable_grad():
                x = hidden[:, a:b].detach().requires_grad_()
                k, v = self.keys_values(x, *rope)
                d_kv = (d_keys[:, :, a:b].to(k.dtype), d_values[:, :, a:b].to(v.dtype))
                d_x2, *d_p = torch.autograd.grad((k, v), [x, *params], d_kv, allow_unused=True)
            d_hidden[:, a:b] = d_x + d_x2
            add(d_p)
        return d_hidden, d_params


def _at(a: int, b: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t[:, a:b] for t in tensors]


# Marks the outputs of tiled layers (an attribute on the tensor): the next tiled layer is the
# only node that saves such an output, so its backward may write its gradient over it.
_OWN_OUTPUT = "_longctx_tiled_output"


class _TiledLayerFunction(torch.autograd.Function):
    """A tiled layer in the autograd graph: it saves its input (and the rotary tables) only, so
    it is its own gradient checkpoint, and its backward is `TiledLayer.backward`. The layer's
    trained parameters are inputs, so their gradients arrive the way any module's do (once per
    backward, which is what DDP's and FSDP's hooks count on).

    When the input is the previous tiled layer's output, the backward returns the input's
    gradient in the input's own buffer. That saved tensor is then spent: a second backward
    through the same graph (`retain_graph`) fails with PyTorch's error for a tensor modified in
    place, and anything else keeping a layer's output (a hook recording hidden states) reads
    gradients once the backward has passed it."""

    @staticmethod
    def forward(ctx, tiled: TiledLayer, hidden, cos, sin, *params):
        ctx.tiled, ctx.params = tiled, params
        ctx.over_input = getattr(hidden, _OWN_OUTPUT, False)
        # The backward recomputes under the autocast the forward ran under.
        ctx.autocast = [
            (device, torch.get_autocast_dtype(device))
            for device in ("cpu", "cuda")
            if torch.is_autocast_enabled(device)
        ]
        ctx.save_for_backward(hidden, cos, sin)
        out = tiled.forward(hidden, cos, sin)
        setattr(out, _OWN_OUTPUT, True)
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, cos, sin = ctx.saved_tensors
        with contextlib.ExitStack() as stack:
            for device, dtype in ctx.autocast:
                stack.enter_context(torch.autocast(device, dtype=dtype))
            d_hidden, d_params = ctx.tiled.backward(
                hidden, cos, sin, grad, ctx.params, over_input=ctx.over_input
            )
        return (None, d_hidden if ctx.needs_input_grad[1] else None, None, None, *d_params)


def tiled_layer_forward(layer: nn.Module, tile: int):
    """`layer.forward`, computed tile by tile over the sequence (see the module docstring).

    Falls back to the layer's own forward wherever tiling has nothing to bound or cannot keep
    the result: a sequence of one tile, a KV cache (generation), an explicit attention mask
    (padding; training batches of one sample have none under SDPA)."""
    whole = layer.forward
    tiled = TiledLayer(layer, tile)

    @functools.wraps(whole)
    def run(hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        length = hidden_states.shape[1]
        mask = args[0] if args else kwargs.get("attention_mask")
        rope = kwargs.get("position_embeddings")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if length <= tile or mask is not None or cache is not None or rope is None or args:
            return whole(hidden_states, *args, **kwargs)
        cos, sin = rope
        params = [p for p in layer.parameters() if p.requires_grad]
        if not torch.is_grad_enabled() or not (hidden_states.requires_grad or params):
            return tiled.forward(hidden_states, cos, sin)
        # Under gradient checkpointing or not, the function recomputes the layer in its
        # backward: transformers' own checkpoint sits in the class's forward, which this
        # replaces, and would only recompute the tiles' forward a second time.
        return _TiledLayerFunction.apply(tiled, hidden_states, cos, sin, *params)

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
