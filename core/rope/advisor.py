"""RoPE base advisor: what a new RoPE base does to a model's rotary embedding, and which base to
pick for a target context length.

Raising the RoPE base is the central decision of the recipe (Llama-3-8B-Instruct: 500K -> 200M
to go from 8K to 80K tokens). This module reads a model's RoPE shape from its config, computes
the classic suggestions for a target length (NTK-aware scaling, the critical-dimension rule of
Liu et al. 2023, the lower bound of Men et al. 2024) and checks a chosen base: its
wavelengths and the long-range attention bias B(m), which `core.rope.figures` draws.

Plain RoPE only: every formula here treats the base alone. Configs with an extra RoPE scaling
(llama3, yarn, linear...) are reported as such and the numbers ignore that scaling; the other
extension methods are `core.rope.methods`. This module
knows nothing about gradio, training or loading weights (only a model's config is read).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import LongCtxError

MAX_TARGET = 2_097_152
"""Longest target the advisor computes for (2M tokens): B(m) is evaluated at every distance."""

# The paper's own choice, quoted as a fact about Llama-3-8B-Instruct: it is not a rule that
# carries over to other models (their head_dim and base differ).
PAPER = {
    "name": "paper",
    "base": 2e8,
    "why": "the paper's choice for Llama-3-8B-Instruct (head_dim 128): base 500K -> 200M for "
    "8K -> 80K tokens, x400 base for x10 length; quoted for reference, not fitted to this model",
    "source": "Zhang et al. 2024, Extending Llama-3's Context Ten-Fold Overnight",
}


def compact(x: float) -> str:
    """A base or a wavelength in three significant digits: 200M, 5.19M, 500K, 8.19K, 1.5e+15."""
    v = float(f"{x:.3g}")
    if abs(v) >= 1e15 or (v != 0 and abs(v) < 1e-3):
        return f"{v:.3g}"
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def compact_hides(x: float) -> bool:
    """Whether `compact(x)` rounds `x`: then the exact value is what to type (a narrow bound's
    rounding can fail the check)."""
    return float(f"{x:.3g}") != x


def tokens(n: int) -> str:
    """A token count, exact: 81,920."""
    return f"{int(n):,}"


# -- the model's RoPE -----------------------------------------------------------------------


@dataclass(frozen=True)
class RopeShape:
    """What the rotary embedding of a model looks like."""

    base: float
    """RoPE base (rope_theta)."""
    head_dim: int
    """Dimensions per attention head; RoPE rotates head_dim / 2 pairs."""
    window: int
    """Context window the model was trained for (max_position_embeddings)."""
    scaling: str | None = None
    """rope_type of an extra RoPE scaling (llama3, yarn, linear...), None for plain RoPE."""

    def __post_init__(self) -> None:
        problems = []
        if not self.base > 1:
            problems.append(f"RoPE base must be above 1, got {self.base}")
        if self.head_dim < 2 or self.head_dim % 2:
            problems.append(f"head_dim must be an even number >= 2, got {self.head_dim}")
        if self.window < 1:
            problems.append(f"window must be positive, got {self.window}")
        if problems:
            raise LongCtxError("; ".join(problems))

    @property
    def pairs(self) -> int:
        return self.head_dim // 2


def rope_shape(config: Any) -> RopeShape:
    """The RoPE shape of a transformers config.

    Raises:
        LongCtxError: the config has no RoPE base (the model does not use rotary embeddings).
    """
    from core.models import rope

    base = rope.get_rope_theta(config)
    if base is None:
        raise LongCtxError(
            f"this model ({getattr(config, 'model_type', '?')}) has no RoPE base (rope_theta) in "
            "its config: the advisor only applies to models with rotary position embeddings"
        )
    params = rope.get_rope_parameters(config)
    rope_type = params.get("rope_type") or params.get("type")
    head_dim = getattr(config, "head_dim", None) or (
        config.hidden_size // config.num_attention_heads
    )
    window = getattr(config, "max_position_embeddings", None)
    if not window:
        raise LongCtxError("this model's config has no max_position_embeddings (its window)")
    return RopeShape(
        base=float(base),
        head_dim=int(head_dim),
        window=int(window),
        scaling=None if rope_type in (None, "default") else str(rope_type),
    )


# -- pure math ------------------------------------------------------------------------------


def frequencies(base: float, head_dim: int) -> np.ndarray:
    """theta_i = base**(-2i/head_dim) for each rotated pair i = 0..head_dim/2-1 (radians/token)."""
    return float(base) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


def wavelengths(base: float, head_dim: int) -> np.ndarray:
    """Tokens per full turn of each rotated pair: 2*pi*base**(2i/head_dim)."""
    return 2 * math.pi / frequencies(base, head_dim)


def critical_dimension(base: float, head_dim: int, window: int) -> int:
    """How many dimensions see a full turn within `window` tokens (Liu et al. 2023, "Scaling Laws
    of RoPE-based Extrapolation"): d_c = 2*ceil((head_dim/2) * log_base(window / (2*pi))),
    clipped to [0, head_dim]. The dimensions beyond d_c never complete a period in training.
    """
    x = (head_dim / 2) * math.log(window / (2 * math.pi)) / math.log(base)
    # A value a rounding error above an integer (e.g. from critical_base) is that integer.
    return int(min(max(2 * math.ceil(x - 1e-9), 0), head_dim))


def attention_bias(base: float, head_dim: int, start: int, stop: int) -> np.ndarray:
    """B(m) = sum_i cos(m * theta_i) for the integer distances m = start..stop (both included).

    Men et al. 2024 ("Base of RoPE Bounds Context Length"): B(m) >= 0 is what lets attention
    still favour a similar token at distance m.
    """
    th = frequencies(base, head_dim)
    # cos((s + j) t) = cos(s t) cos(j t) - sin(s t) sin(j t): with blocks of `block` distances,
    # one matrix product replaces a cosine per (m, i), ~20x faster than np.cos on the full grid.
    block = 256
    j = np.outer(np.arange(block, dtype=np.float64), th)
    starts = np.outer(np.arange(start, stop + 1, block, dtype=np.float64), th)
    b = np.cos(starts) @ np.cos(j).T - np.sin(starts) @ np.sin(j).T
    return b.ravel()[: stop - start + 1]


def blas_one_thread() -> Any:
    # These matrix products are small; on a shared machine OpenBLAS threads mostly wait on each
    # other (measured 3-10x slower under load). threadpoolctl comes with scikit-learn.
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def negative_bias_at(base: float, head_dim: int, target: int) -> int | None:
    """The first distance m in 0..target where B(m) < 0, or None when B stays >= 0."""
    with blas_one_thread():
        return _first_negative(base, head_dim, target, first=True)


def _first_negative(base: float, head_dim: int, target: int, first: bool) -> int | None:
    """A distance with B(m) < 0 (the first one when `first`), or None. Without `first` the
    distances are scanned from the far end, where a base close to the bound fails soonest."""
    chunk = 8192
    starts = list(range(0, target + 1, chunk))
    for start in starts if first else starts[::-1]:
        bias = attention_bias(base, head_dim, start, min(target, start + chunk - 1))
        negative = np.flatnonzero(bias < 0)
        if negative.size:
            return start + int(negative[0] if first else negative[-1])
    return None


@functools.lru_cache(maxsize=256)
def bound_base(head_dim: int, target: int) -> float:
    """The smallest RoPE base with B(m) >= 0 for every distance m in 0..target (Men et al. 2024,
    "Base of RoPE Bounds Context Length": below it the model loses the ability to attend more to
    similar tokens far away). A necessary condition, not a sufficient one.

    B(m) >= 0 is not monotone in the base: above the first passing base some bases fail again,
    and passing stretches can be a fraction of a percent wide. So rather than a bisection over
    the whole range, the search walks a 0.5% log grid up from target/(2*pi) (where even the
    slowest pair turns within the target) to the first passing grid point, then bisects between
    it and the failing point before. The result passes; a pocket narrower than the grid below it
    may be missed, so it is an estimate from above of the true lower bound.

    Raises:
        LongCtxError: no base up to 1e15 passes (head_dim too small to outweigh cos(m)).
    """
    step, limit, base = 1.005, 1e15, max(target / (2 * math.pi), 2.0)
    witness: int | None = None  # the last failing distance: neighbouring bases tend to fail there
    with blas_one_thread():
        while base <= limit:
            if witness is not None and _fails_near(base, head_dim, witness, target):
                base *= step
                continue
            witness = _first_negative(base, head_dim, target, first=False)
            if witness is None:
                break
            base *= step
        else:
            raise LongCtxError(
                f"no RoPE base up to {compact(limit)} keeps B(m) >= 0 up to {tokens(target)} "
                f"tokens with head_dim {head_dim}"
            )
        lo, hi = base / step, base
        for _ in range(16):  # to ~1e-7 of the base
            mid = math.sqrt(lo * hi)
            if _first_negative(mid, head_dim, target, first=False) is None:
                hi = mid
            else:
                lo = mid
        if _first_negative(hi, head_dim, target, first=True) is not None:  # hi only ever passed
            raise RuntimeError(f"bound_base({head_dim}, {target}) returned a failing base {hi}")
    return hi


def _fails_near(base: float, head_dim: int, m: int, target: int, width: int = 64) -> bool:
    ms = np.arange(max(0, m - width), min(target, m + width) + 1, dtype=np.float64)
    return bool((np.cos(np.outer(ms, frequencies(base, head_dim))).sum(axis=1) < 0).any())


# -- suggestions and checks -----------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    """One way to pick the new base, with its reason and where it comes from."""

    name: str
    base: float
    why: str
    source: str


def check_target(shape: RopeShape, target: int) -> int:
    """The target as an int, refused unless it extends the window (and stays computable)."""
    target = int(target)
    if target <= shape.window:
        raise LongCtxError(
            f"target {tokens(target)} tokens does not extend the model's window "
            f"({tokens(shape.window)}); set a longer target length (the paper: 8K -> 80K)"
        )
    if target > MAX_TARGET:
        raise LongCtxError(
            f"target {tokens(target)} tokens is beyond what the advisor computes "
            f"({tokens(MAX_TARGET)}); pick a shorter target"
        )
    return target


def ntk_base(shape: RopeShape, target: int) -> float:
    """NTK-aware scaling (bloc97, 2023): base * s**(head_dim / (head_dim - 2)), s = target/window.

    It keeps the slowest pair's wavelength scaled by s while the fastest pairs stay as trained.
    """
    s = target / shape.window
    return shape.base * s ** (shape.head_dim / (shape.head_dim - 2))


def critical_base(shape: RopeShape, target: int) -> float:
    """The base that stretches the critical dimension's wavelength to the target (Liu et al.
    2023): (target / (2*pi)) ** (head_dim / d_c), d_c from the original base and window."""
    d_c = critical_dimension(shape.base, shape.head_dim, shape.window)
    if d_c == 0:
        raise LongCtxError(
            "no dimension of this model turns fully within its window (critical dimension 0); "
            "the critical-dimension rule does not apply"
        )
    return (target / (2 * math.pi)) ** (shape.head_dim / d_c)


def round_up(x: float, digits: int = 3) -> float:
    """`x` rounded up to `digits` significant digits: a base a user can type and read."""
    scale = 10 ** (math.floor(math.log10(x)) - digits + 1)
    return math.ceil(x / scale - 1e-9) * scale


def suggestions(shape: RopeShape, target: int) -> list[Suggestion]:
    """The bases the literature suggests for `target` tokens, rounded up to 3 digits."""
    target = check_target(shape, target)
    bound = bound_base(shape.head_dim, target)
    # Rounding the bound up may step out of a narrow passing stretch: keep the first rounding
    # that still passes.
    for digits in (3, 4, 5, 6):
        if negative_bias_at(round_up(bound, digits), shape.head_dim, target) is None:
            bound = round_up(bound, digits)
            break
    s = target / shape.window
    return [
        Suggestion(
            "ntk",
            round_up(ntk_base(shape, target)),
            f"NTK-aware: base x s^(d/(d-2)) with s = {s:.3g}; the slowest pair stretches by s, "
            "the fastest stay as trained",
            "bloc97 2023, NTK-Aware Scaled RoPE",
        ),
        Suggestion(
            "critical",
            round_up(critical_base(shape, target)),
            "stretches the critical dimension's wavelength to the target, so the dimensions "
            "that never turned fully in training still do not within it (Liu et al.'s "
            "extrapolation bound)",
            "Liu et al. 2023, Scaling Laws of RoPE-based Extrapolation",
        ),
        Suggestion(
            "bound",
            bound,
            "smallest base keeping B(m) >= 0 up to the target (below it attention cannot favour "
            "similar tokens far away); a floor, not a recommendation",
            "Men et al. 2024, Base of RoPE Bounds Context Length",
        ),
    ]


@dataclass(frozen=True)
class BaseCheck:
    """What a chosen base gives at the target length."""

    base: float
    target: int
    longest_wavelength: float
    """Tokens per turn of the slowest pair; above the target it never completes a turn."""
    critical_dim: int
    """Dimensions that turn fully within the target with this base (training at the target)."""
    original_critical_dim: int
    """The same for the original base within the original window."""
    head_dim: int
    first_negative: int | None
    """First distance up to the target where B(m) < 0; None when B stays >= 0."""

    @property
    def bias_ok(self) -> bool:
        return self.first_negative is None

    def summary(self) -> list[str]:
        """The check in plain words, one line per fact."""
        ratio = self.longest_wavelength / self.target
        times = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"
        bias = (
            f"B(m) stays >= 0 up to {tokens(self.target)} tokens (Men et al.'s condition holds)"
            if self.bias_ok
            else f"B(m) goes negative at distance {tokens(self.first_negative)}: there, similar "
            "tokens lose their attention advantage (the condition is not monotone in the base: "
            "a larger base can fail where a smaller one passes, so check the one you pick)"
        )
        return [
            f"longest wavelength {compact(self.longest_wavelength)} tokens, {times}x the target",
            f"critical dimension at the target {self.critical_dim} of {self.head_dim} "
            f"(originally {self.original_critical_dim} within the window)",
            bias,
        ]


def check_base(shape: RopeShape, new_base: float, target: int) -> BaseCheck:
    """What `new_base` gives at `target` tokens: wavelength, critical dimension, B(m) sign."""
    if not new_base > 1:
        raise LongCtxError(f"the new RoPE base must be above 1, got {new_base}")
    target = int(target)
    return BaseCheck(
        base=float(new_base),
        target=target,
        longest_wavelength=float(wavelengths(new_base, shape.head_dim)[-1]),
        critical_dim=critical_dimension(new_base, shape.head_dim, target),
        original_critical_dim=critical_dimension(shape.base, shape.head_dim, shape.window),
        head_dim=shape.head_dim,
        first_negative=negative_bias_at(new_base, shape.head_dim, target),
    )


@dataclass(frozen=True)
class Advice:
    """Everything the advisor says about one model and target."""

    model: str
    shape: RopeShape
    target: int
    critical_dim: int
    suggestions: list[Suggestion]
    check: BaseCheck
    reference: Suggestion = field(default_factory=lambda: Suggestion(**PAPER))

    def shape_line(self) -> str:
        s = self.shape
        line = (
            f"RoPE base {compact(s.base)}, head_dim {s.head_dim}, window {tokens(s.window)} "
            f"tokens; critical dimension {self.critical_dim} of {s.head_dim}"
        )
        if s.scaling:
            line += (
                f"; this model also scales RoPE ({s.scaling}): the numbers below treat the base "
                "alone, and that scaling must not stack on top of a new base"
            )
        return line


def advise(shape: RopeShape, target: int, new_base: float | None = None, model: str = "") -> Advice:
    """Suggestions for `target` tokens and the check of `new_base` (default: the model's own)."""
    target = check_target(shape, target)
    return Advice(
        model=model,
        shape=shape,
        target=target,
        critical_dim=critical_dimension(shape.base, shape.head_dim, shape.window),
        suggestions=suggestions(shape, target),
        check=check_base(shape, new_base or shape.base, target),
    )


def advise_model(name: str, target: int, new_base: float | None = None) -> Advice:
    """`advise` for a model named as everywhere else (`embedded`, a folder, a Hub id).

    The config is read as training would read it with no RoPE override, so an adapter named
    here brings the base it was trained with.
    """
    from core.models import loader

    shape = rope_shape(loader.load_config(loader.ModelSpec(name=name)).config)
    return advise(shape, target, new_base, model=name)
