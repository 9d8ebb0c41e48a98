"""Load causal LMs: a `ModelSpec` -> weights and tokenizer, with RoPE overrides, 4-bit and an
adapter applied, on the best device; a small cache so the chat, the server and evaluations share
weights.

Names are resolved by `core.models.names`; the RoPE overrides are written into the config by
`core.models.rope` before the weights load, so whatever is saved from the model carries them.
This module knows nothing about chat, training or serving; it hands out (model, tokenizer).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from core import workspace
from core.errors import ConfigError, LongCtxError, first_line
from core.models.names import EMBEDDED, adapter_config, adapter_overrides, resolve
from core.models.rope import RopeSetting, apply_overrides, get_rope_theta
from core.models.tokenizers import explain_load_failure, load_tokenizer

log = logging.getLogger(__name__)

QUANTIZATIONS = ("auto", "4bit", "none")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ModelSpec:
    """What to load. Every field has a UI control and a CLI flag of the same name."""

    name: str = EMBEDDED
    """`embedded`, a local folder (full model or LoRA adapter), or a Hub id `org/name`."""
    adapter: str | None = None
    """Optional LoRA adapter (folder or Hub id) applied on top of `name`."""
    rope_theta: float | None = None
    """New RoPE base (the paper: 500K -> 200M). None keeps the model's own."""
    rope: RopeSetting | None = None
    """A RoPE scaling (`yarn:factor=4`, `llama3:factor=8`, ...) or a new base; also read from a
    dict or that one-line spelling. `rope_theta` alone means `base:theta=...`."""
    max_position_embeddings: int | None = None
    """New context window recorded in the config. None keeps the model's own (or the one the
    RoPE scaling gives)."""
    quantization: str = "auto"
    """`4bit` (NF4, bitsandbytes on CUDA), `none`, or `auto` (4-bit on CUDA for models > 3B)."""
    dtype: str = "auto"
    """Compute dtype: `auto` picks bfloat16 on recent GPUs, float32 on CPU."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps`."""

    def __post_init__(self) -> None:
        problems = []
        if not str(self.name or "").strip():
            problems.append("model name is empty; use 'embedded', a folder or a Hub id")
        if self.rope_theta is not None and not float(self.rope_theta) > 0:
            problems.append(f"rope_theta must be positive, got {self.rope_theta}")
        if isinstance(self.rope, str):
            self.rope = RopeSetting.parse(self.rope) if self.rope.strip() else None
        elif isinstance(self.rope, dict):
            self.rope = RopeSetting.from_dict(self.rope)
        if self.rope is not None:
            problems += self.rope.problems()
            theta = self.rope.theta
            if (
                theta is not None
                and self.rope_theta is not None
                and theta != float(self.rope_theta)
            ):
                problems.append(
                    f"rope_theta {float(self.rope_theta):g} and the rope setting's "
                    f"theta {theta:g} disagree; give one"
                )
        if self.max_position_embeddings is not None and int(self.max_position_embeddings) < 16:
            problems.append(
                f"max_position_embeddings must be at least 16, got {self.max_position_embeddings}"
            )
        if self.quantization not in QUANTIZATIONS:
            problems.append(
                f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}"
            )
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if problems:
            raise ConfigError(problems)
        self.name = str(self.name).strip()
        self.adapter = (self.adapter or "").strip() or None
        if self.rope_theta is not None:
            self.rope_theta = float(self.rope_theta)
        if self.max_position_embeddings is not None:
            self.max_position_embeddings = int(self.max_position_embeddings)

    def rope_setting(self) -> RopeSetting | None:
        """The RoPE change asked for: the setting (with `rope_theta` as its base when it has
        none), a new base alone, or None."""
        if self.rope is not None:
            if self.rope.theta is None and self.rope_theta is not None:
                return replace(self.rope, theta=self.rope_theta)
            return self.rope
        return RopeSetting(method="base", theta=self.rope_theta) if self.rope_theta else None

    @property
    def label(self) -> str:
        """How pages and logs name it: `name + adapter (yarn x4)`, folders from their root."""
        label = workspace.shown(self.name)
        label += f" + {workspace.shown(self.adapter)}" if self.adapter else ""
        setting = self.rope_setting()
        if setting is None:
            return label
        if setting.method == "base":
            return label + f" (rope_theta={setting.theta:g})"
        return label + f" (rope {setting.label})"

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class LoadedModel:
    """A model ready for inference or training, with what was done to it on the way."""

    spec: ModelSpec
    model: Any
    tokenizer: Any
    source: str
    """Where the base weights came from: a local folder or a Hub id."""
    device: str
    dtype: str
    quantized: bool
    adapter: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{"rope_theta": {"from": 1e5, "to": 1e6}, ...} for every changed config value."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Held while generating: one forward pass at a time per loaded model."""

    @property
    def window(self) -> int:
        """The context window in tokens, after overrides."""
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 0)

    @property
    def rope_theta(self) -> float | None:
        return get_rope_theta(self.model.config)

    @property
    def label(self) -> str:
        """The spec's label for what was loaded: the adapter found and the RoPE change applied."""
        rope = self.overrides.get("rope", {}).get("to")
        theta = self.overrides.get("rope_theta", {}).get("to")
        setting = RopeSetting.from_dict(rope) if rope else None
        if setting is not None:
            theta = None  # the setting carries its base
        return replace(self.spec, adapter=self.adapter, rope_theta=theta, rope=setting).label

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for the UI and logs."""
        return {
            "name": self.spec.name,
            "source": self.source,
            "adapter": self.adapter,
            "device": self.device,
            "dtype": self.dtype,
            "quantized": self.quantized,
            "window": self.window,
            "rope_theta": self.rope_theta,
            "overrides": self.overrides,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise LongCtxError(f"device {device!r} was asked for but no CUDA GPU is available")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> str:
    import torch

    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


def bnb_4bit_available(device: str) -> bool:
    """bitsandbytes NF4 is used on CUDA only: its CPU kernels are far slower than float32 here."""
    return device.startswith("cuda") and importlib.util.find_spec("bitsandbytes") is not None


@dataclass
class ResolvedModel:
    """A spec resolved to files, with the config (overrides applied) but no weights."""

    config: Any
    source: str
    adapter: str | None
    overrides: dict[str, dict[str, Any]]


def load_config(spec: ModelSpec) -> ResolvedModel:
    """Resolve `spec` and read its base config with the RoPE/window overrides applied.

    A name that is itself an adapter resolves to its base with `adapter` set; an adapter we
    trained (or the paper's) brings the RoPE base it was trained with unless the spec says
    otherwise.
    """
    from transformers import AutoConfig

    source = resolve(spec.name)
    adapter = spec.adapter
    adapter_cfg = adapter_config(source)
    if adapter_cfg is not None:
        adapter, source = source, resolve(adapter_cfg["base_model_name_or_path"])
    setting, window = spec.rope_setting(), spec.max_position_embeddings
    if adapter and setting is None and window is None:
        known = adapter_overrides(adapter)
        window = known.get("max_position_embeddings")
        if known.get("rope"):
            setting = RopeSetting.from_dict(known["rope"])
        elif known.get("rope_theta"):
            setting = RopeSetting(method="base", theta=known["rope_theta"])
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:
        raise explain_load_failure(spec.name, source, exc) from exc
    overrides = apply_overrides(config, setting, window)
    return ResolvedModel(config=config, source=source, adapter=adapter, overrides=overrides)


def load_model(spec: ModelSpec, *, for_training: bool = False) -> LoadedModel:
    """Load weights and tokenizer with overrides, quantization and adapter applied.

    Args:
        spec: what to load.
        for_training: leave the model in train mode and the adapter trainable.
    """
    import torch
    from transformers import AutoModelForCausalLM

    resolved = load_config(spec)
    config, source, adapter, overrides = (
        resolved.config,
        resolved.source,
        resolved.adapter,
        resolved.overrides,
    )
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    quantize = wants_4bit(spec.quantization, config, device)
    if quantize and not bnb_4bit_available(device):
        raise LongCtxError(
            f"4-bit loading needs bitsandbytes on a CUDA GPU; this machine runs on {device}. "
            "Set quantization to 'none' (or 'auto')."
        )
    kwargs: dict[str, Any] = {"config": config, "dtype": getattr(torch, dtype)}
    if quantize:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, dtype),
            # Sharded by FSDP (under `accelerate launch`): the packed 4-bit weights are stored in
            # the compute dtype, as FSDP shards and gathers parameters of that dtype.
            **(
                {"bnb_4bit_quant_storage": getattr(torch, dtype)}
                if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
                else {}
            ),
        )
        kwargs["device_map"] = {"": device if ":" in device else f"{device}:0"}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise explain_load_failure(spec.name, source, exc) from exc
    if not quantize:
        model.to(device)
    tokenizer = load_tokenizer(adapter or spec.name)
    if "max_position_embeddings" in overrides:
        tokenizer.model_max_length = config.max_position_embeddings
    if adapter:
        model = _attach_adapter(model, adapter, trainable=for_training)
    if not for_training:
        model.eval()
    log.info("loaded %s from %s on %s (%s)", spec.name, source, device, dtype)
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        source=source,
        device=device,
        dtype=dtype,
        quantized=quantize,
        adapter=adapter,
        overrides=overrides,
    )


def wants_4bit(quantization: str, config: Any, device: str) -> bool:
    """Whether to load in 4-bit: asked for, or `auto` with a model over ~3B on a CUDA device."""
    if quantization == "4bit":
        return True
    hidden = getattr(config, "hidden_size", 0) or 0
    layers = getattr(config, "num_hidden_layers", 0) or 0
    big = hidden * hidden * layers * 12 > 3e9
    return quantization == "auto" and big and bnb_4bit_available(device)


def _attach_adapter(model: Any, adapter: str, *, trainable: bool) -> Any:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    except Exception as exc:
        raise LongCtxError(f"cannot apply adapter {adapter!r}: {first_line(exc)}") from exc


def add_spec_args(parser: Any) -> None:
    """The ModelSpec flags that follow `--model` on every command that loads a model."""
    parser.add_argument(
        "--adapter", help="LoRA adapter (folder or Hub id) applied on top of --model"
    )
    parser.add_argument("--rope-theta", type=float, help="new RoPE base (e.g. 2e8); default: own")
    parser.add_argument(
        "--rope",
        help="RoPE scaling, e.g. yarn:factor=4 (linear, dynamic, yarn, "
        "llama3, longrope:factors_file=F.json) or base:theta=1e6",
    )
    parser.add_argument("--max-position-embeddings", type=int, help="new context window in tokens")
    parser.add_argument("--quantization", default="auto", choices=QUANTIZATIONS)
    parser.add_argument("--dtype", default="auto", choices=DTYPES)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def spec_from_args(args: Any) -> ModelSpec:
    """The ModelSpec that `--model` and the `add_spec_args` flags describe."""
    return ModelSpec(
        name=args.model,
        adapter=args.adapter,
        rope_theta=args.rope_theta,
        rope=getattr(args, "rope", None),
        max_position_embeddings=args.max_position_embeddings,
        quantization=args.quantization,
        dtype=args.dtype,
        device=args.device,
    )


class ModelCache:
    """Keeps the last few loaded models, so the chat, the server and evaluations share weights.

    Loading is serialized: two callbacks asking for the same model load it once.
    """

    def __init__(self, max_items: int = 2):
        self.max_items = max_items
        self._items: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: ModelSpec) -> LoadedModel:
        key = spec.key()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            loaded = load_model(spec)
            self._items[key] = loaded
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
            return loaded

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


default_cache = ModelCache()
