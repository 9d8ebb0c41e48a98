"""The unsloth engine: unsloth's kernels and offloaded checkpointing under the same recipe.

unsloth does two things on its own that the recipe must not get, so this module steers around them:

- When `max_seq_length` exceeds the config's `max_position_embeddings`, unsloth stacks a linear
  RoPE factor on the model (position interpolation). The recipe raises the RoPE base instead,
  and the two together would train a different model. So unsloth loads from a staged folder
  whose config.json already carries the new base and a window >= max_length, with every other
  file a symlink to the original (nothing is copied).
- Its patched causal-LM forward treats an index tensor in `logits_to_keep` as "keep everything"
  and would build the full sequence x vocabulary logit table. With
  `UNSLOTH_RETURN_HIDDEN_STATES=1` it returns the final hidden states instead, and the trainer
  applies `lm_head` to the labelled rows only (`hidden_states_only`).

Everything else (data, Trainer, loss, checkpoints, saving) is the transformers engine's.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import LongCtxError, first_line
from core.models import loader, rope, tokenizers

# Logit transforms some families apply after lm_head; with hidden states we would skip them.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
# The RoPE settings that must come out of unsloth's loader as they went in (with defaults).
_ROPE_KEYS = {"rope_type": "default", "factor": None, "rope_theta": None}
# Big files a Hub snapshot does not need for transformers/unsloth (Llama-3's original/*.pth).
_SNAPSHOT_SKIP = ["original/*", "*.pth", "*.gguf"]


def unavailable_reason(try_import: bool = True) -> str | None:
    """Why the unsloth engine cannot run in this process, or None when it can.

    Args:
        try_import: also import unsloth. The app and a launching CLI check without importing,
            since unsloth patches transformers in the process that imports it.
    """
    if importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed (pip install unsloth)"
    import torch

    if not torch.cuda.is_available():
        return "unsloth needs a CUDA GPU and this machine has none"
    if try_import:
        try:
            import unsloth  # noqa: F401
        except Exception as exc:  # unsloth raises many kinds on unsupported set-ups
            return f"unsloth does not import here ({type(exc).__name__}: {first_line(exc)})"
    return None


def require(try_import: bool = True) -> None:
    """Raise a LongCtxError saying why, when the unsloth engine cannot run here."""
    reason = unavailable_reason(try_import)
    if reason:
        raise LongCtxError(f"engine unsloth: {reason}; use engine: transformers")


def stage_model(source: str | Path, config: Any, folder: Path) -> Path:
    """A model folder whose config.json is `config` and whose other files link to `source`.

    Args:
        source: a local model folder.
        config: the model's config with the RoPE base and window already overridden.
        folder: an empty folder to fill.
    """
    source = Path(source)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name != "config.json":
            (folder / entry.name).symlink_to(entry.resolve())
    config.save_pretrained(folder)
    return folder


def local_folder(source: str) -> Path:
    """`source` as a local folder: a Hub id is downloaded (weights, config, tokenizer)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, ignore_patterns=_SNAPSHOT_SKIP))


def _scratch() -> Path:
    """A folder for this process (staged model, unsloth's offloaded embeddings), removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="longctx-unsloth-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def load_for_training(config: Any, dtype: str, window: int, device: str) -> loader.LoadedModel:
    """The base through unsloth's FastLanguageModel with the RoPE override and LoRA attached.

    Args:
        config: the TrainConfig.
        dtype: compute dtype name (`bfloat16`, ...).
        window: max_position_embeddings to record (>= config.max_length).
        device: this process's GPU (`cuda:LOCAL_RANK`); the whole model goes there.
    """
    import torch
    from unsloth import FastLanguageModel

    resolved = loader.load_config(
        loader.ModelSpec(
            name=config.model, rope=config.rope_setting(), max_position_embeddings=window
        )
    )
    transforms = [k for k in _LOGIT_TRANSFORMS if getattr(resolved.config, k, None)]
    if transforms:
        raise LongCtxError(
            f"the unsloth engine does not support models with {', '.join(transforms)}; "
            "use engine: transformers"
        )
    quantize = loader.wants_4bit(config.quantization, resolved.config, "cuda")
    scratch = _scratch()
    staged = stage_model(local_folder(resolved.source), resolved.config, scratch / "model")
    # max_seq_length == the staged window's lower bound, so unsloth adds no RoPE scaling.
    model, _ = FastLanguageModel.from_pretrained(
        model_name=str(staged),
        max_seq_length=config.max_length,
        dtype=getattr(torch, dtype),
        load_in_4bit=quantize,
        device_map={"": device},  # one whole copy per process, as DDP expects
    )
    # The model's own scaling (Llama-3.1's llama3 type) is kept; only a change by unsloth counts.
    before, after = (rope.get_rope_parameters(c) for c in (resolved.config, model.config))
    if any(before.get(k, d) != after.get(k, d) for k, d in _ROPE_KEYS.items()):
        raise LongCtxError(
            f"unsloth changed the RoPE settings from {before} to {after}; use engine: transformers"
        )
    checkpointing: bool | str = config.gradient_checkpointing
    if checkpointing and config.offload_checkpoints:
        checkpointing = "unsloth"  # unsloth's own CPU-offloaded checkpointing
    from core.train.config import lora_settings

    model = FastLanguageModel.get_peft_model(
        model,
        **lora_settings(config),
        bias="none",
        use_gradient_checkpointing=checkpointing,
        random_state=config.seed,
        temporary_location=str(scratch / "buffers"),
    )
    tokenizer = tokenizers.load_tokenizer(config.model)  # ours, so labels match the Data tab's
    tokenizer.model_max_length = window
    return loader.LoadedModel(
        spec=loader.ModelSpec(
            name=config.model,
            rope=config.rope_setting(),
            max_position_embeddings=window,
            quantization=config.quantization,
            dtype=dtype,
        ),
        model=model,
        tokenizer=tokenizer,
        source=resolved.source,
        device=str(next(model.parameters()).device),
        dtype=dtype,
        quantized=quantize,
        overrides=resolved.overrides,
    )


@contextlib.contextmanager
def hidden_states_only() -> Iterator[None]:
    """Make unsloth's forward return final hidden states in `.logits` (no lm_head)."""
    prior = os.environ.get("UNSLOTH_RETURN_HIDDEN_STATES")
    os.environ["UNSLOTH_RETURN_HIDDEN_STATES"] = "1"
    try:
        yield
    finally:
        if prior is None:
            os.environ.pop("UNSLOTH_RETURN_HIDDEN_STATES", None)
        else:
            os.environ["UNSLOTH_RETURN_HIDDEN_STATES"] = prior
