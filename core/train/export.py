"""Export a trained adapter: merge it into its base (saved with the new RoPE base) and push to the Hub.

The model card states the recipe (base, RoPE base before/after, LoRA settings, data, steps) and
links the evaluation results of the run when there are any. Knows nothing about the UI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from core import models
from core.errors import LongCtxError
from core.train import runs


def find_adapter(run_or_path: str) -> Path:
    """A run id or an adapter folder -> the adapter folder."""
    path = Path(run_or_path)
    if (path / "adapter_config.json").exists():
        return path.resolve()
    run_dir = runs.run_path(run_or_path)
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise LongCtxError(
            f"run {run_or_path} has no adapter yet (it is {runs.read_status(run_dir).get('state')})"
        )
    return adapter


def merge(adapter: Path, out: Path) -> Path:
    """Fold the LoRA weights (and trained embeddings) into the base; save with the RoPE override.

    The base is loaded unquantized: merging into 4-bit weights would lose the LoRA update.
    """
    loaded = models.load_model(models.ModelSpec(name=str(adapter), quantization="none"))
    merged = loaded.model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    write_model_card(out, adapter, merged=True)
    return out


def _recipe(adapter: Path) -> dict[str, Any]:
    meta_file = adapter / models.ADAPTER_META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    lora = json.loads((adapter / "adapter_config.json").read_text())
    config_file = adapter.parent / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    status = runs.read_status(adapter.parent) if (adapter.parent / "status.json").exists() else {}
    return {"meta": meta, "lora": lora, "config": config or {}, "status": status}


def write_model_card(folder: Path, adapter: Path, merged: bool) -> Path:
    r = _recipe(adapter)
    meta, lora, cfg, status = r["meta"], r["lora"], r["config"], r["status"]
    base = lora.get("base_model_name_or_path", meta.get("base_model", "?"))
    rope = meta.get("overrides", {}).get("rope_theta", {})
    data = ", ".join(
        d.get("path") or f"{d.get('procedural')} x{d.get('n')} @ {d.get('length')} tokens"
        for d in cfg.get("data", [])
    )
    evals = (
        sorted(p.name for p in (adapter.parent / "evals").glob("*"))
        if (adapter.parent / "evals").exists()
        else []
    )
    lines = [
        "---",
        "library_name: " + ("transformers" if merged else "peft"),
        f"base_model: {base}",
        "tags: [long-context, lora, longctx-studio]",
        "---",
        f"# {folder.name}",
        "",
        f"{'Merged model' if merged else 'LoRA adapter'} that extends the context window of "
        f"`{base}`, trained with LongCtx Studio following *Extending Llama-3's Context Ten-Fold "
        "Overnight* (QLoRA on synthetic long-context samples, larger RoPE base).",
        "",
        "## Recipe",
        "",
        f"- RoPE base: {rope.get('from', '?')} -> {meta.get('rope_theta', '?')}",
        f"- Window: {meta.get('max_position_embeddings', '?')} tokens; trained at max length "
        f"{meta.get('max_length', cfg.get('max_length', '?'))}",
        f"- LoRA: r={lora.get('r')}, alpha={lora.get('lora_alpha')}, dropout="
        f"{lora.get('lora_dropout')}, targets={sorted(lora.get('target_modules') or [])}, "
        f"fully trained: {lora.get('modules_to_save') or []}",
        f"- Optimisation: lr {cfg.get('learning_rate')}, {cfg.get('lr_scheduler')} schedule, "
        f"global batch {cfg.get('global_batch_size')}, {cfg.get('epochs')} epoch(s), "
        f"{status.get('step', '?')} steps",
        f"- Data: {data or '?'}",
        "",
        "## Evaluation",
        "",
        ("Results: " + ", ".join(f"`evals/{e}`" for e in evals))
        if evals
        else "Run a Needle-in-a-Haystack grid in LongCtx Studio's Evaluate tab and link it here.",
        "",
    ]
    card = folder / "README.md"
    card.write_text("\n".join(lines))
    return card


def push(folder: Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload `folder` (adapter or merged model) to `repo_id`; the token comes from the caller or
    the environment (HF_TOKEN) and is never written anywhere."""
    from huggingface_hub import HfApi

    if not (folder / "README.md").exists():
        write_model_card(folder, folder if (folder / "adapter_config.json").exists() else folder.parent / "adapter",
                         merged=not (folder / "adapter_config.json").exists())  # fmt: skip
    api = HfApi(token=token or None)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                                   commit_message="Upload from LongCtx Studio")  # fmt: skip
    except Exception as exc:
        raise LongCtxError(f"push to {repo_id} failed: {str(exc).splitlines()[0]}") from exc
    return str(getattr(commit, "commit_url", f"https://huggingface.co/{repo_id}"))
