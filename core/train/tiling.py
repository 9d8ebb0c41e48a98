"""A sequence-tiled MLP: each decoder layer's MLP run over the sequence a tile at a time.

Under gradient checkpointing a layer is recomputed in the backward pass with its intermediates
kept for its own backward; at long lengths the largest of them are the MLP's (gate, up, their
product: three tensors of tokens x intermediate size, e.g. 3 x 80K x 14,336 floats per layer for
Llama-3-8B). The MLP acts on each token on its own, so it can run tile by tile, each tile under
its own (nested) checkpoint: only one tile's intermediates are alive at a time, and the result is
the same to the last bit of each tile. This is the idea of ALST's tiled MLP (Snowflake's Arctic
Long Sequence Training); transformers and peft have no such option, hence this wrapper.

Knows nothing about runs or configs: `core.train.engine` applies it when `mlp_tile` is set.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


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
