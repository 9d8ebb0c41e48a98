"""RoPE settings in a model config: read the base and the scaling, and override them in place.

transformers v5 keeps the base in `config.rope_parameters["rope_theta"]`; older configs (and some
remote-code models) use a top-level `rope_theta` and `rope_scaling`. Everything here handles both,
so callers never look at those attributes themselves. Applied before the weights load
(`core.models.loader`), and so recorded in whatever is saved from the model.
"""

from __future__ import annotations

from typing import Any

from core.errors import LongCtxError


def get_rope_theta(config: Any) -> float | None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    return float(theta) if theta is not None else None


def get_rope_parameters(config: Any) -> dict[str, Any]:
    """The RoPE settings as one dict: v5's `rope_parameters`, or the older `rope_scaling`
    (which on v5 is the same dict, with `rope_type: default` when nothing is scaled)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if isinstance(params, dict):
        return dict(params)
    return dict(vars(params)) if params is not None else {}


def set_rope_theta(config: Any, theta: float) -> None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        params["rope_theta"] = float(theta)
    if hasattr(config, "rope_theta") or not isinstance(params, dict):
        config.rope_theta = float(theta)


def apply_overrides(
    config: Any, rope_theta: float | None, max_position_embeddings: int | None
) -> dict[str, dict[str, Any]]:
    """Change the config in place; return what changed as {key: {"from": old, "to": new}}."""
    changed: dict[str, dict[str, Any]] = {}
    if rope_theta is not None:
        old = get_rope_theta(config)
        if old is None:
            raise LongCtxError(
                f"this model ({getattr(config, 'model_type', '?')}) has no RoPE base to override"
            )
        if old != rope_theta:
            set_rope_theta(config, rope_theta)
            changed["rope_theta"] = {"from": old, "to": float(rope_theta)}
    if max_position_embeddings is not None:
        old = getattr(config, "max_position_embeddings", None)
        if old != max_position_embeddings:
            config.max_position_embeddings = int(max_position_embeddings)
            changed["max_position_embeddings"] = {"from": old, "to": int(max_position_embeddings)}
    return changed
