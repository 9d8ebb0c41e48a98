"""Context-extension methods side by side: a setting of each method for a target length, and what
each does to the wavelength of every rotated dimension pair.

The base change (the paper's method) gets its number from `advisor` (NTK-aware base); the
scalings get their factor from the length ratio, with their papers' defaults for the rest. The
wavelengths come from transformers' own RoPE initialisation functions applied to the model's
config with each setting written in (`core.models.rope.apply_setting`), so the figure shows what
the model will compute, not our re-derivation of it. LongRoPE's per-dimension factors come from
a search we do not run: it is listed as needing a factors file.

This module knows nothing about gradio, training or weights (only a model's config is read).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.models import rope
from core.models.rope import RopeSetting
from core.rope import advisor


@dataclass(frozen=True)
class MethodSuggestion:
    """One method's setting for a target length, with its reason and its source."""

    setting: RopeSetting | None
    """None where this method needs more than the advisor can compute (LongRoPE's factors)."""
    method: str
    why: str
    source: str


def suggest(shape: advisor.RopeShape, target: int) -> list[MethodSuggestion]:
    """A setting of every method that takes `shape`'s window to `target` tokens."""
    target = advisor.check_target(shape, target)
    s = target / shape.window
    factor = float(f"{s:.4g}")
    ntk = advisor.round_up(advisor.ntk_base(shape, target))
    return [
        MethodSuggestion(
            RopeSetting(method="base", theta=ntk),
            "base",
            f"a larger base, NTK-aware (x{ntk / shape.base:.3g}): the slowest pair stretches by "
            f"{s:.3g}, the fastest stay as trained; the paper's method, meant to be fine-tuned",
            "bloc97 2023; Zhang et al. 2024 (the paper)",
        ),
        MethodSuggestion(
            RopeSetting(method="linear", factor=factor),
            "linear",
            f"position interpolation: every position divided by {factor:g}, so the target maps "
            "into the trained window; needs fine-tuning to recover short-range detail",
            "Chen et al. 2023, Extending Context Window via Positional Interpolation",
        ),
        MethodSuggestion(
            RopeSetting(method="dynamic", factor=factor),
            "dynamic",
            "the base raised with the sequence length once it passes the window, nothing "
            f"changed inside it; at the target the base is x{_dynamic_ratio(shape, factor, target):.3g} "
            f"(NTK-aware: x{ntk / shape.base:.3g}), as transformers computes it; no training",
            "emozilla 2023, Dynamically Scaled RoPE",
        ),
        MethodSuggestion(
            RopeSetting(method="yarn", factor=factor, original_window=shape.window),
            "yarn",
            "NTK-by-parts: fast pairs kept, slow pairs interpolated, a ramp between "
            "(beta_fast 32, beta_slow 1), and attention logits scaled by 0.1 ln(s) + 1",
            "Peng et al. 2023, YaRN",
        ),
        MethodSuggestion(
            RopeSetting(method="llama3", factor=factor, original_window=shape.window),
            "llama3",
            "Llama-3.1's NTK-by-parts: wavelengths over the window divided by the factor, under "
            "a quarter of it kept, a smooth ramp between (Llama-3.1 used 8 for 8K -> 128K)",
            "Meta 2024, The Llama 3 Herd of Models",
        ),
        MethodSuggestion(
            None,
            "longrope",
            "per-dimension factors found by an evolutionary search on the model; import them "
            "from a file (longrope:factor=S,factors_file=F.json), e.g. from a Phi-3 config",
            "Ding et al. 2024, LongRoPE",
        ),
    ]


def _dynamic_ratio(shape: advisor.RopeShape, factor: float, length: int) -> float:
    """How much dynamic NTK multiplies the base at `length` tokens (transformers' formula)."""
    d = shape.head_dim
    return (factor * length / shape.window - (factor - 1)) ** (d / (d - 2))


def wavelengths(config: Any, setting: RopeSetting | None, seq_len: int) -> np.ndarray:
    """Tokens per turn of each rotated pair when the model reads `seq_len` tokens under
    `setting` (None: as it is), from transformers' own RoPE initialisation."""
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = copy.deepcopy(config)
    if setting is not None:
        rope.apply_setting(config, setting)
    params = rope.get_rope_parameters(config)
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type == "default":
        dim = rope.head_dim(config) or 2
        inv = 1.0 / rope.get_rope_theta(config) ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
        return 2 * math.pi / inv
    kwargs = {"seq_len": seq_len} if rope_type in ("dynamic", "longrope") else {}
    inv_freq, _ = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"), **kwargs)
    return 2 * math.pi / inv_freq.double().numpy()
