"""RoPE settings in a model config: read the base and the scaling, and change them in place.

`RopeSetting` is the one typed way to extend a model's positions, wherever a model is loaded
(train, evaluate, chat, serve, export): a new base (the paper: 500K -> 200M), or one of the
scalings transformers implements (`linear` position interpolation, `dynamic` NTK, `yarn`,
`llama3` NTK-by-parts, `longrope` per-dimension factors). It is validated with every problem
listed, and written into the config before the weights load, so whatever is saved from the model
(an adapter's metadata, a merged model's config.json) carries it. transformers itself only logs
a warning for most bad values; we refuse them.

transformers v5 keeps the base in `config.rope_parameters["rope_theta"]`; older configs (and some
remote-code models) use a top-level `rope_theta` and `rope_scaling`. Everything here handles both,
so callers never look at those attributes themselves.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from core.errors import ConfigError, LongCtxError


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
    config: Any, setting: RopeSetting | None, max_position_embeddings: int | None
) -> dict[str, dict[str, Any]]:
    """Change the config in place (the RoPE setting, then an explicit window); return what
    changed as {key: {"from": old, "to": new}}."""
    changed = apply_setting(config, setting) if setting is not None else {}
    if max_position_embeddings is not None:
        old = getattr(config, "max_position_embeddings", None)
        if old != max_position_embeddings:
            config.max_position_embeddings = int(max_position_embeddings)
            first = changed.get("max_position_embeddings", {}).get("from", old)
            changed["max_position_embeddings"] = {"from": first, "to": int(max_position_embeddings)}
    return changed


METHODS = ("base", "linear", "dynamic", "yarn", "llama3", "longrope")
"""`base` changes only the base; the others are transformers' `rope_type`s of the same name."""
_NEEDS_FACTOR = ("linear", "dynamic", "yarn", "llama3")
_OWN_KEYS = {
    "base": set(),
    "linear": {"factor"},
    "dynamic": {"factor"},
    "yarn": {"factor", "original_window", "beta_fast", "beta_slow", "attention_factor"},
    "llama3": {"factor", "original_window", "low_freq_factor", "high_freq_factor"},
    "longrope": {
        "factor",
        "original_window",
        "attention_factor",
        "short_factor",
        "long_factor",
        "factors_file",
    },
}


@dataclass
class RopeSetting:
    """How to change a model's rotary position embedding. Every field but `method` is optional;
    the scalings' defaults are those of their papers (and of transformers)."""

    method: str = "base"
    """base (new base only), linear, dynamic, yarn, llama3 or longrope."""
    theta: float | None = None
    """New RoPE base (the paper: 500K -> 200M); None keeps the model's own. Any method."""
    factor: float | None = None
    """Scaling factor: the new window over the original one (4 takes 8K to 32K)."""
    original_window: int | None = None
    """yarn, llama3, longrope: the window the model was trained at (default: its config's)."""
    beta_fast: float | None = None
    """yarn: rotations per window above which a dimension is left as it is (default 32)."""
    beta_slow: float | None = None
    """yarn: rotations per window below which a dimension is fully interpolated (default 1)."""
    attention_factor: float | None = None
    """yarn, longrope: scale of the attention logits (default: from the factor)."""
    low_freq_factor: float | None = None
    """llama3: wavelengths longer than original_window / this are divided by factor (default 1)."""
    high_freq_factor: float | None = None
    """llama3: wavelengths shorter than original_window / this are kept (default 4)."""
    short_factor: list[float] | None = None
    """longrope: per-dimension factors used up to the original window (head_dim / 2 numbers)."""
    long_factor: list[float] | None = None
    """longrope: per-dimension factors used past the original window (head_dim / 2 numbers)."""
    factors_file: str | None = None
    """longrope: a JSON file with `short_factor` and `long_factor` (or a config.json holding them
    under `rope_scaling` / `rope_parameters`), read instead of typing the lists."""

    def __post_init__(self) -> None:
        self.method = str(self.method or "base").strip().lower()
        for name in (
            "theta",
            "factor",
            "beta_fast",
            "beta_slow",
            "attention_factor",
            "low_freq_factor",
            "high_freq_factor",
        ):
            value = getattr(self, name)
            if value in ("", None):
                setattr(self, name, None)
            else:
                try:
                    setattr(self, name, float(value))
                except (TypeError, ValueError):
                    raise ConfigError(f"rope {name} must be a number, got {value!r}") from None
        if self.original_window in ("", None):
            self.original_window = None
        else:
            self.original_window = int(float(self.original_window))
        if self.factors_file and self.short_factor is None and self.long_factor is None:
            self.short_factor, self.long_factor = _read_factors(self.factors_file)

    def problems(self, head_dim: int | None = None) -> list[str]:
        """Every fault of the setting at once (`head_dim` checks longrope's list lengths)."""
        if self.method not in METHODS:
            return [f"rope method must be one of {', '.join(METHODS)}, got {self.method!r}"]
        p = []
        given = {f.name for f in fields(self) if getattr(self, f.name) is not None} - {
            "method",
            "theta",
        }
        if stray := sorted(given - _OWN_KEYS[self.method]):
            p.append(f"rope method {self.method} does not take {', '.join(stray)}")
        if self.theta is not None and not self.theta > 0:
            p.append(f"rope theta must be positive, got {self.theta:g}")
        if self.method == "base" and self.theta is None:
            p.append("rope method base needs theta (the new base, e.g. 2e8)")
        if self.method in _NEEDS_FACTOR and self.factor is None:
            p.append(f"rope method {self.method} needs a factor (e.g. 4 to take 8K to 32K)")
        if self.factor is not None and not self.factor >= 1:
            p.append(f"rope factor must be at least 1, got {self.factor:g}")
        if self.original_window is not None and self.original_window < 16:
            p.append(f"rope original_window must be at least 16, got {self.original_window}")
        if self.method == "yarn" and (self.beta_fast or 32) <= (self.beta_slow or 1):
            p.append(
                f"rope beta_fast ({self.beta_fast or 32:g}) must exceed beta_slow "
                f"({self.beta_slow or 1:g})"
            )
        if self.attention_factor is not None and not self.attention_factor > 0:
            p.append(f"rope attention_factor must be positive, got {self.attention_factor:g}")
        if self.method == "llama3" and (self.high_freq_factor or 4) <= (self.low_freq_factor or 1):
            p.append(
                f"rope high_freq_factor ({self.high_freq_factor or 4:g}) must exceed "
                f"low_freq_factor ({self.low_freq_factor or 1:g})"
            )
        if self.method == "longrope":
            p += _longrope_problems(self.short_factor, self.long_factor, head_dim)
        return p

    def validate(self, head_dim: int | None = None) -> RopeSetting:
        if problems := self.problems(head_dim):
            raise ConfigError(problems)
        return self

    def parameters(self, config: Any) -> dict[str, Any]:
        """The `rope_parameters` dict this setting gives `config` (its current base kept unless
        `theta` says otherwise; its current window as the original one)."""
        theta = self.theta if self.theta is not None else get_rope_theta(config)
        if self.method == "base":
            return {"rope_type": "default", "rope_theta": theta}
        params: dict[str, Any] = {"rope_type": self.method, "rope_theta": theta}
        original = self.original_window or int(getattr(config, "max_position_embeddings", 0) or 0)
        if self.method in ("yarn", "llama3", "longrope"):
            params["original_max_position_embeddings"] = original
        if self.factor is not None:
            params["factor"] = self.factor
        if self.method == "yarn":
            params["beta_fast"] = self.beta_fast or 32.0
            params["beta_slow"] = self.beta_slow or 1.0
        if self.method == "llama3":
            params["low_freq_factor"] = self.low_freq_factor or 1.0
            params["high_freq_factor"] = self.high_freq_factor or 4.0
        if self.method == "longrope":
            params["short_factor"] = list(self.short_factor or [])
            params["long_factor"] = list(self.long_factor or [])
        if self.attention_factor is not None:
            params["attention_factor"] = self.attention_factor
        return params

    def window(self, config: Any) -> int | None:
        """The context window this setting gives `config`: the original one times the factor
        for the scalings that stretch positions; None where it leaves the window alone (a new
        base, and dynamic NTK, which measures its scaling against the configured window)."""
        if self.method in ("base", "dynamic") or self.factor is None:
            return None
        original = self.original_window or int(getattr(config, "max_position_embeddings", 0) or 0)
        return int(round(original * self.factor))

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (what YAML, run configs and adapter metadata record)."""
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "factors_file"}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RopeSetting:
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ConfigError(
                f"unknown rope setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def parse(cls, text: str) -> RopeSetting:
        """`yarn:factor=4,original_window=8192`, `base:theta=1e6`, `linear:factor=2` (the CLI's
        and the forms' one-line spelling; a bare number is a new base)."""
        text = (text or "").strip()
        try:
            return cls(method="base", theta=float(text))
        except ValueError:
            pass
        method, _, rest = text.partition(":")
        values: dict[str, Any] = {"method": method.strip()}
        for part in filter(None, (x.strip() for x in rest.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ConfigError(f"rope setting {part!r} must look like key=value, in {text!r}")
            values[key.strip()] = value.strip()
        return cls.from_dict(values)

    @property
    def label(self) -> str:
        """Short, for legends and folder names: `yarn x4`, `base 1e+06`, `llama3 x4 base 2e+08`."""
        label = self.method if self.method != "base" else "base"
        if self.factor is not None:
            label += f" x{self.factor:g}"
        if self.theta is not None:
            label += f" {self.theta:g}" if self.method == "base" else f" base {self.theta:g}"
        return label

    def spelled(self) -> str:
        """The one-line spelling `parse` reads back."""
        values = self.to_dict()
        method = values.pop("method")
        if method == "longrope":
            values.pop("short_factor", None), values.pop("long_factor", None)
            if self.factors_file:
                values["factors_file"] = self.factors_file
        return method + (
            ":"
            + ",".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
            )
            if values
            else ""
        )


def _read_factors(path: str) -> tuple[list[float] | None, list[float] | None]:
    try:
        data = json.loads(Path(path).expanduser().read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read longrope factors from {path}: {exc}") from None
    for key in ("rope_parameters", "rope_scaling"):
        if isinstance(data.get(key), dict) and "long_factor" in data[key]:
            data = data[key]
    return data.get("short_factor"), data.get("long_factor")


def _longrope_problems(short: Any, long: Any, head_dim: int | None) -> list[str]:
    p = []
    for name, values in (("short_factor", short), ("long_factor", long)):
        if not isinstance(values, list) or not values:
            p.append(f"rope method longrope needs {name}: a list of numbers (or factors_file)")
        elif not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values):
            p.append(f"rope {name} must hold positive numbers only")
        elif head_dim and len(values) != head_dim // 2:
            p.append(
                f"rope {name} has {len(values)} numbers; this model needs head_dim / 2 = "
                f"{head_dim // 2}"
            )
    return p


def head_dim(config: Any) -> int | None:
    """The rotary dimension of a config's attention heads (None when it cannot tell)."""
    dim = getattr(config, "head_dim", None)
    if (
        not dim
        and getattr(config, "hidden_size", None)
        and getattr(config, "num_attention_heads", None)
    ):
        dim = config.hidden_size // config.num_attention_heads
    return int(dim) if dim else None


def get_rope_setting(config: Any) -> RopeSetting:
    """The setting a config already has, as a `RopeSetting` (what a saved model carries)."""
    params = get_rope_parameters(config)
    rope_type = params.get("rope_type") or params.get("type") or "default"
    theta = get_rope_theta(config)
    if rope_type == "default":
        return RopeSetting(method="base", theta=theta)
    keys = {
        "factor": "factor",
        "original_max_position_embeddings": "original_window",
        "beta_fast": "beta_fast",
        "beta_slow": "beta_slow",
        "attention_factor": "attention_factor",
        "low_freq_factor": "low_freq_factor",
        "high_freq_factor": "high_freq_factor",
        "short_factor": "short_factor",
        "long_factor": "long_factor",
    }
    allowed = _OWN_KEYS.get(rope_type, set())
    values = {
        ours: params[theirs]
        for theirs, ours in keys.items()
        if params.get(theirs) is not None and ours in allowed
    }
    return RopeSetting(method=rope_type, theta=theta, **values)


def apply_setting(config: Any, setting: RopeSetting) -> dict[str, dict[str, Any]]:
    """Write `setting` into `config` (in place) before the weights load; returns what changed
    as {key: {"from": old, "to": new}}.

    Raises:
        LongCtxError: the model has no RoPE, or the setting does not fit it.
    """
    old_theta = get_rope_theta(config)
    if old_theta is None:
        raise LongCtxError(
            f"this model ({getattr(config, 'model_type', '?')}) has no RoPE base to change"
        )
    setting.validate(head_dim(config))
    before = get_rope_parameters(config)
    params = setting.parameters(config)
    changed: dict[str, dict[str, Any]] = {}
    if setting.method == "base":
        # A new base keeps the model's own scaling (Llama-3.1's llama3 type stays as it is).
        set_rope_theta(config, params["rope_theta"])
    else:
        existing = getattr(config, "rope_parameters", None)
        if isinstance(existing, dict):
            for key in [k for k in existing if k not in ("partial_rotary_factor",)]:
                del existing[key]
            existing.update(params)
        else:
            config.rope_scaling = {k: v for k, v in params.items() if k != "rope_theta"}
            config.rope_theta = params["rope_theta"]
        changed["rope"] = {
            "from": get_rope_setting_from(before, old_theta),
            "to": setting.to_dict(),
        }
    if get_rope_theta(config) != old_theta:
        changed["rope_theta"] = {"from": old_theta, "to": get_rope_theta(config)}
    window = setting.window(config)
    if window is not None and window != getattr(config, "max_position_embeddings", None):
        changed["max_position_embeddings"] = {"from": config.max_position_embeddings, "to": window}
        config.max_position_embeddings = window
    return changed


def get_rope_setting_from(params: dict[str, Any], theta: float | None) -> dict[str, Any]:
    """What a config's RoPE parameters were, as a setting's dict (for the record of a change)."""

    class _Config:
        rope_parameters = {**params, "rope_theta": theta}

    return get_rope_setting(_Config()).to_dict()
