"""Tokenizers by model name, loaded once per process, and the one explanation of a load failure.

The Data tab, Generate, Chat, the evaluations and the data commands all count tokens with the
tokenizer of a model they name; loading one takes a second, so one cache serves them all. A
failure (an unknown name, no network) is raised and not cached, so the next call tries again.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from core.errors import LongCtxError, first_line
from core.models.names import adapter_config, resolve


def explain_load_failure(name: str, source: str, exc: Exception) -> LongCtxError:
    reason = first_line(exc)
    if Path(source).is_dir():
        return LongCtxError(f"cannot load model from folder {source!r}: {reason}")
    return LongCtxError(
        f"cannot load model {name!r}: not 'embedded', not a local folder, and the Hugging Face "
        f"Hub could not provide it (offline, private or misspelled?): {reason[:200]}"
    )


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a model name (adapters resolve to their base unless they carry one)."""
    from transformers import AutoTokenizer

    source = resolve(name)
    adapter_cfg = adapter_config(source)
    if adapter_cfg is not None and not (Path(source) / "tokenizer_config.json").exists():
        source = resolve(adapter_cfg["base_model_name_or_path"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise explain_load_failure(name, source, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


_cache: dict[str, Any] = {}
_cache_lock = threading.Lock()


def cached_tokenizer(name: str) -> Any:
    """`load_tokenizer(name)`, loaded once per process (only successes are kept)."""
    with _cache_lock:
        if name not in _cache:
            _cache[name] = load_tokenizer(name)
        return _cache[name]
