"""Export a trained adapter: merge it into its base (saved with the new RoPE base) and push to the Hub.

The model card states the recipe (base, RoPE base before/after, LoRA settings, data, steps) and
a table of the workspace's evaluations of the adapter (or of a model merged from it) next to
those of its base, so a reader sees base vs. tuned. Knows nothing about the UI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from core.errors import LongCtxError, first_line
from core.models import loader, names
from core.models.rope import RopeSetting
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
    loaded = loader.load_model(loader.ModelSpec(name=str(adapter), quantization="none"))
    merged = loaded.model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    write_model_card(out, adapter, merged=True)
    return out


def _recipe(adapter: Path) -> dict[str, Any]:
    meta_file = adapter / names.ADAPTER_META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    lora = json.loads((adapter / "adapter_config.json").read_text())
    config_file = adapter.parent / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    status = runs.read_status(adapter.parent) if (adapter.parent / "status.json").exists() else {}
    return {"meta": meta, "lora": lora, "config": config or {}, "status": status}


CARD_TAG = "longctx-studio"  # in the front matter of every card written here
STUDIO = "LongCtx Studio"
_NO_EVALS = (
    "No evaluation yet: run a Needle-in-a-Haystack grid on the base and on this model in "
    "LongCtx Studio's Evaluate tab, then export again."
)


def _rope_line(meta: dict[str, Any], base_change: dict[str, Any]) -> str:
    """The recipe's RoPE line: the scaling trained with, or the base change."""
    setting = meta.get("rope") or {}
    if setting.get("method", "base") != "base":
        label = RopeSetting.from_dict(setting).label
        return f"- RoPE: {label} (`{RopeSetting.from_dict(setting).spelled()}`)"
    return f"- RoPE base: {base_change.get('from', '?')} -> {meta.get('rope_theta', '?')}"


def write_model_card(folder: Path, adapter: Path, merged: bool) -> Path:
    r = _recipe(adapter)
    meta, lora, cfg, status = r["meta"], r["lora"], r["config"], r["status"]
    base = lora.get("base_model_name_or_path", meta.get("base_model", "?"))
    rope = meta.get("overrides", {}).get("rope_theta", {})
    data = ", ".join(
        d.get("path") or f"{d.get('procedural')} x{d.get('n')} @ {d.get('length')} tokens"
        for d in cfg.get("data", [])
    )
    evals = evaluations_of(adapter, base)
    title = adapter.resolve().parent.name if folder.name in ("adapter", "merged") else folder.name
    full = sorted({m.split(".")[-1] for m in lora.get("modules_to_save") or []})
    quantized = " on a 4-bit base (QLoRA)" if cfg.get("quantization") == "4bit" else ""
    lines = [
        "---",
        "library_name: " + ("transformers" if merged else "peft"),
        *([f"base_model: {base}"] if names.looks_like_hub_id(base) else []),  # the Hub wants ids
        f"tags: [long-context, lora, {CARD_TAG}]",
        "---",
        f"# {title}",
        "",
        f"{'Merged model' if merged else 'LoRA adapter'} that extends the context window of "
        f"`{base}`, trained with {STUDIO} following *Extending Llama-3's Context Ten-Fold "
        f"Overnight*: LoRA{quantized} on long-context samples, with a larger RoPE base.",
        "",
        "## Recipe",
        "",
        _rope_line(meta, rope),
        f"- Window: {meta.get('max_position_embeddings', '?')} tokens; trained at max length "
        f"{meta.get('max_length', cfg.get('max_length', '?'))}",
        f"- LoRA: r={lora.get('r')}, alpha={lora.get('lora_alpha')}, dropout="
        f"{lora.get('lora_dropout')}, targets={sorted(lora.get('target_modules') or [])}, "
        f"fully trained: {full}",
        f"- Optimisation: lr {cfg.get('learning_rate')}, {cfg.get('lr_scheduler')} schedule, "
        f"global batch {cfg.get('global_batch_size')}, {cfg.get('epochs')} epoch(s), "
        f"{status.get('step', '?')} steps",
        f"- Data: {data or '?'}",
        *_held_out_line(adapter.parent, cfg, status),
        "",
        "## Evaluation",
        "",
        *(_eval_table(evals) if evals else [_NO_EVALS]),
        *scorecard_lines(evals),
        *experiment_lines(adapter.resolve().parent),
        "",
    ]
    card = folder / "README.md"
    card.write_text("\n".join(lines))
    return card


def _held_out_line(run_dir: Path, cfg: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """`- Held-out loss: before -> after` where the run measured one (else nothing)."""
    held = [m for m in runs.read_metrics(run_dir) if m.get("eval_loss") is not None]
    if not held:
        return []
    samples = (status.get("eval_data") or {}).get("samples", "?")
    return [
        f"- Held-out loss ({samples} samples of `{Path(cfg.get('eval_data', '?')).name}`): "
        f"{held[0]['eval_loss']:.4f} at step {held[0]['step']} -> {held[-1]['eval_loss']:.4f} "
        f"at step {held[-1]['step']}"
    ]


def evaluations_of(adapter: Path, base: str) -> list[dict[str, Any]]:
    """The workspace's evaluations of this adapter's run (adapter or merged model: `tuned`) and
    of its base with no adapter (`base`), each with its id, task, lengths and mean score."""
    from core import workspace
    from core.evals import results

    run_dir = adapter.resolve().parent
    bases = {base, names.EMBEDDED} if base == names.EMBEDDED_HUB_ID else {base}

    def in_run(name: str) -> bool:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else workspace.home() / path
        return path.exists() and path.resolve().is_relative_to(run_dir)

    found = []
    for summary in results.list_evals():
        spec = summary["target"].get("model") or {}
        if any(in_run(n) for n in (spec.get("name"), spec.get("adapter")) if n):
            which = "tuned"
        elif not spec.get("adapter") and spec.get("name") in bases:
            which = "base"
        else:
            continue
        if summary["done"]:
            found.append(
                {
                    **summary,
                    "which": which,
                    "lengths": summary["task"].get("lengths") or [],
                    "rope_theta": spec.get("rope_theta"),
                }
            )
    return sorted(found, key=lambda e: (e["which"] != "tuned", e.get("created") or ""))


def _eval_table(evals: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: one per evaluation, tuned ones first."""
    rows = [
        "| model | evaluation | task | context lengths | cells | result |",
        "|---|---|---|---|---:|---:|",
    ]
    for e in evals:
        who = e["which"] + (f" (RoPE base {e['rope_theta']:g})" if e.get("rope_theta") else "")
        lengths = ", ".join(f"{n:,}" for n in e["lengths"]) or "-"
        score = "-" if e["mean_score"] is None else f"mean score {e['mean_score']:.3f}"
        if e.get("perplexity"):
            score = f"perplexity {e['perplexity'][1]:.2f} at {e['perplexity'][0]:,} tokens"
        rows.append(
            f"| {who} | `{e['id']}` | {e['kind']} | {lengths} | "
            f"{e['done']}/{e['total']} | {score} |"
        )
    rows += [
        "",
        "Scores are between 0 and 1 (the evaluation's own scorer); perplexity is at the "
        "longest length measured (lower is better). The folders are under `evals/` in the "
        "LongCtx Studio workspace that trained this model.",
    ]
    return rows


def scorecard_lines(evals: list[dict[str, Any]]) -> list[str]:
    """Markdown: the scorecard of these evaluations beside published numbers (none without a
    scorecard row, e.g. only NIAH grids of other kinds)."""
    from core.evals import scorecard

    try:
        card = scorecard.build([e["path"] for e in evals]) if evals else None
    except LongCtxError:
        return []
    return ["", "### Scorecard", "", card.markdown().rstrip()] if card else []


def experiment_lines(run_dir: Path) -> list[str]:
    """Markdown: the report of the experiment this run is a step of (its scorecard of base,
    RoPE change only and tuned, and its steps' time and memory); nothing for a run of its own."""
    from core.experiments import report, runner

    folder = run_dir.parent
    if not (folder / runner.SPEC_FILE).exists() or not (folder / runner.STATE_FILE).exists():
        return []
    try:
        experiment = runner.load_folder(folder)
        summary = report.summary_markdown(folder, experiment, runner.read_state(folder))
    except LongCtxError:
        return []
    return ["", "## Experiment", "", summary.rstrip()]


def refresh_model_card(folder: Path) -> Path | None:
    """(Re)write the card of an adapter folder or of a model merged from one, so it lists the
    evaluations made since. A README.md someone else wrote is left alone (returns None)."""
    card = folder / "README.md"
    if card.exists() and not _replaceable(card.read_text(errors="replace")):
        return None
    is_adapter = (folder / "adapter_config.json").exists()
    adapter = folder if is_adapter else folder.parent / "adapter"
    if not (adapter / "adapter_config.json").exists():
        return None  # a merged model moved away from its run: nothing to state the recipe from
    return write_model_card(folder, adapter, merged=not is_adapter)


def _replaceable(card: str) -> bool:
    """Ours, or the blank template peft's save_pretrained writes (which names a local path).

    A save_pretrained that finds our card rewrites its front matter (our tag goes), so ours is
    also known by its first sentence."""
    ours = CARD_TAG in card[:500] or f", trained with {STUDIO} following" in card
    return ours or "# Model Card for Model ID" in card


def push(folder: Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload `folder` (adapter or merged model) to `repo_id`; the token comes from the caller or
    the environment (HF_TOKEN) and is never written anywhere."""
    from huggingface_hub import HfApi

    refresh_model_card(folder)
    api = HfApi(token=token or None)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, commit_message="Upload from LongCtx Studio"
        )
    except Exception as exc:
        raise LongCtxError(f"push to {repo_id} failed: {first_line(exc)}") from exc
    return str(getattr(commit, "commit_url", f"https://huggingface.co/{repo_id}"))
