"""Train tab, part 1: the run form (grouped settings, presets), YAML/command preview, fit, launch.

The form is a TrainConfig laid out in groups; every change re-renders the YAML the run will use,
the exact command, and the memory estimate. Launch writes the YAML into a new run folder and
starts `longctx train` as a child process (core.train.runs). Part 2 (ui/train/runs.py) watches
runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import workspace
from core.configs import field_help
from core.errors import LongCtxError
from core.models import names
from core.train import config as cfg
from core.train import datacheck, figures, memory, runs
from ui import access
from ui.common import user_errors
from ui.data.common import resolve_spec
from ui.train import rope as train_rope
from ui.train import runs as train_runs

HELP = field_help(cfg.TrainConfig)
FIELDS = [f for f in cfg.TrainConfig.__dataclass_fields__]
DATA_COLUMNS = ["path", "procedural", "n", "length", "overflow"]


def _help(name: str) -> str | None:
    return HELP.get(name)


def _form(start: cfg.TrainConfig) -> dict[str, gr.components.Component]:
    """The settings, grouped as a user thinks about them; keys are TrainConfig field names."""
    c: dict[str, Any] = {}
    v = dict(zip(FIELDS, form_values(start, FIELDS), strict=True))

    def field(widget: type, name: str, label: str, *choices: Any, **kwargs: Any) -> None:
        """One setting: its widget holds the start value, is found by `#train-<name>` and
        carries the field's help from core.train.config where there is one."""
        c[name] = widget(
            *choices,
            value=v[name],
            elem_id=f"train-{name}",
            label=label,
            info=_help(name),
            **kwargs,
        )

    with gr.Accordion("Model", open=True):
        field(gr.Textbox, "name", "Run name")
        base_models = names.known_models()[:1] + names.known_models()[3:4]
        field(gr.Dropdown, "model", "Base model", base_models, allow_custom_value=True)
        with gr.Row():
            field(gr.Radio, "quantization", "Quantization", ["auto", "4bit", "none"])
            field(gr.Radio, "engine", "Engine", list(cfg.ENGINES))
    with gr.Accordion("Data", open=True):
        # A table takes no help line: its label says what a row is.
        c["data"] = gr.Dataframe(
            v["data"],
            headers=DATA_COLUMNS,
            column_count=5,
            datatype=["str", "str", "number", "number", "str"],
            interactive=True,
            elem_id="train-data",
            label="Sources: a file "
            "path, or a procedural task (passkey, keys, topics) with n "
            "samples of length tokens; overflow: this source's longer "
            "samples (drop, head, truncate_middle; empty: Longer samples "
            "below)",
        )
        with gr.Row():
            field(
                gr.Textbox,
                "eval_data",
                "Held-out samples (loss measured, not trained on)",
                placeholder="e.g. datasets/longctx-mix.eval.jsonl (Data → Mix & push → Hold out)",
                scale=3,
            )
            field(gr.Number, "eval_steps", "Measure every (steps)", precision=0, minimum=0)
    with gr.Accordion("Long context", open=True):
        with gr.Row():
            field(gr.Number, "rope_theta", "RoPE base")
            field(gr.Number, "max_length", "Max length (tokens)", precision=0)
            field(gr.Radio, "overflow", "Longer samples", list(cfg.OVERFLOW))
        field(
            gr.Textbox,
            "rope",
            "RoPE scaling (instead of, or beside, a new base)",
            placeholder="e.g. yarn:factor=4 (empty: none; the paper changes the base only)",
        )
        train_rope.build(c["model"], c["max_length"], c["rope_theta"], c["rope"])
    with gr.Accordion("LoRA", open=False):
        with gr.Row():
            field(gr.Number, "lora_r", "r", precision=0)
            field(gr.Number, "lora_alpha", "alpha", precision=0)
            field(gr.Number, "lora_dropout", "dropout")
        field(
            gr.CheckboxGroup,
            "lora_targets",
            "Target modules",
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        )
        field(gr.Checkbox, "train_embeddings", "Train embeddings fully")
    with gr.Accordion("Optimisation", open=False):
        with gr.Row():
            field(gr.Number, "learning_rate", "Learning rate")
            field(gr.Dropdown, "lr_scheduler", "Schedule", list(cfg.SCHEDULERS))
            field(gr.Number, "warmup_steps", "Warmup steps", precision=0)
            field(gr.Number, "weight_decay", "Weight decay")
        with gr.Row():
            field(gr.Number, "global_batch_size", "Global batch", precision=0)
            field(gr.Number, "per_device_batch_size", "Per-device batch", precision=0)
            field(gr.Number, "epochs", "Epochs")
            field(gr.Number, "max_steps", "Max steps", precision=0)
            field(gr.Number, "seed", "Seed", precision=0)
        # Its own row: the help text says why the paper weighs samples, not tokens.
        field(gr.Radio, "loss_weighting", "Loss weighs each", list(cfg.LOSS_WEIGHTINGS))
    with gr.Accordion("Hardware", open=False):
        with gr.Row():
            field(gr.Radio, "precision", "Precision", list(cfg.PRECISIONS))
            field(gr.Number, "num_gpus", "GPUs", precision=0)
            field(gr.Dropdown, "sharding", "Several GPUs", list(cfg.SHARDINGS))
            field(
                gr.Number, "sequence_parallel", "Sequence-parallel degree", precision=0, minimum=1
            )
            field(gr.Number, "threads", "CPU threads (0: the thread budget)", precision=0)
        with gr.Row():
            field(gr.Checkbox, "gradient_checkpointing", "Gradient checkpointing")
            field(gr.Checkbox, "offload_checkpoints", "Offload checkpoints to CPU")
            field(gr.Number, "mlp_tile", "MLP tile (tokens, 0: off)", precision=0, minimum=0)
            field(gr.Number, "layer_tile", "Layer tile (tokens, 0: off)", precision=0, minimum=0)
            field(gr.Checkbox, "bf16_residual", "bf16 residual stream (4-bit)")
            field(gr.Checkbox, "group_by_length", "Group by length")
        with gr.Row():
            field(gr.Number, "logging_steps", "Log every", precision=0)
            field(gr.Number, "save_steps", "Checkpoint every", precision=0)
            field(gr.Number, "save_total_limit", "Keep checkpoints", precision=0)
    return c


def config_from_form(names: list[str], values: list[Any]) -> cfg.TrainConfig:
    """Widget values (in `names` order) -> TrainConfig; validation happens in core."""
    raw = dict(zip(names, values, strict=True))
    table = raw.pop("data")
    rows = table.values.tolist() if hasattr(table, "values") else (table or [])
    # An empty cell arrives as "", None or NaN (pandas), and means the field's default.
    raw["data"] = [
        {k: v for k, v in zip(DATA_COLUMNS, row, strict=False) if _filled(v)}
        for row in rows
        if any(_filled(v) for v in row)
    ]
    # Paths typed into the page are only read inside the allowed roots.
    raw["model"] = workspace.model_from_user(raw.get("model"))
    for source in raw["data"]:
        if source.get("path"):
            source["path"] = resolve_spec(source["path"])
    if (raw.get("eval_data") or "").strip():
        raw["eval_data"] = resolve_spec(raw["eval_data"])
    return cfg.TrainConfig.from_dict(raw)


def _filled(value: Any) -> bool:
    return value not in (None, "", 0) and str(value) != "nan"


def form_values(config: cfg.TrainConfig, names: list[str]) -> list[Any]:
    d = config.to_dict()
    text_columns = ("path", "procedural", "overflow")
    d["data"] = [
        [s.get(k, "" if k in text_columns else 0) for k in DATA_COLUMNS] for s in d["data"]
    ] or [["", "", 0, 0, ""]]
    return [d[n] for n in names]


@dataclass
class TrainTab:
    """What other tabs wire to: the picked run and the buttons that hand it on."""

    run: gr.Dropdown
    to_evaluate: gr.Button
    """Opens the Evaluate tab with the picked run's adapter under test (wired by the shell)."""
    to_chat: gr.Button
    """Opens the Chat tab with the run's base beside its adapter (wired by the shell)."""


def build() -> TrainTab:
    """Lay out the Train tab and wire its events."""
    presets = cfg.list_presets()
    first = "cpu-keys" if "cpu-keys" in presets else presets[0]
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            with gr.Row():
                preset = gr.Dropdown(presets, value=first, label="Preset", scale=3)
                load = gr.Button("Load preset", scale=1)
            preset_note = gr.Markdown(cfg.preset_header(first), elem_classes="preset-note")
            start_config = cfg.load_preset(first)
            form = _form(start_config)
        names = list(form)
        first_view = preview(names, *form_values(start_config, names))
        with gr.Column(scale=2, min_width=380):
            verdict = gr.Markdown(first_view[0], elem_id="fit-verdict")
            fit_plot = gr.Plot(first_view[1], label="Estimated peak memory")
            command = gr.Textbox(
                first_view[2],
                label="Command the app runs",
                interactive=False,
                elem_id="train-command",
            )
            yaml_box = gr.Code(
                first_view[3], language="yaml", label="config.yaml", interactive=False, max_lines=30
            )
            with gr.Row():
                launch = gr.Button("Launch", variant="primary", elem_id="train-launch", scale=2)
                check = gr.Button("Check the data against max length", elem_id="train-check")
            launched = gr.Markdown()
            checked = gr.Markdown(elem_id="train-data-check")
    gr.Markdown("### Runs")
    monitor = train_runs.build()

    inputs = [form[n] for n in names]

    def apply_preset(name):
        return [cfg.preset_header(name), *form_values(cfg.load_preset(name), names)]

    load.click(user_errors(apply_preset), preset, [preset_note, *inputs])

    outputs = [verdict, fit_plot, command, yaml_box]
    for comp in inputs:
        comp.change(
            lambda *vals: preview(names, *vals),
            inputs,
            outputs,
            show_progress="hidden",
            trigger_mode="always_last",
        )

    @user_errors
    def start(request: gr.Request, profile: gr.OAuthProfile | None, *values):
        access.require_owner(request, profile, "Launching training")
        config = config_from_form(names, list(values)).validate()
        run_dir = runs.launch(config)
        return f"Started run **{run_dir.name}**.", *train_runs.select(run_dir.name)

    launch.click(start, inputs, [launched, *monitor.select_outputs])

    @user_errors
    def check_data(*values, progress=gr.Progress()):
        config = config_from_form(names, list(values)).validate()
        fits = datacheck.check(config, lambda d, t: progress((d, t), desc="measuring", unit="rows"))
        return "\n".join(f"- {'⚠️' if f.over else '✅'} {f.line(config)}" for f in fits)

    check.click(check_data, inputs, checked, show_progress_on=checked)
    return TrainTab(monitor.run, monitor.to_evaluate, monitor.to_chat)


def preview(names: list[str], *values: Any) -> tuple[str, Any, str, str]:
    """Verdict, memory figure, command and YAML for the form as it stands."""
    try:
        config = config_from_form(names, list(values)).validate()
    except LongCtxError as exc:  # shown in place of the preview, not as a toast per keystroke
        return f"**Not ready:** {exc}", None, "", ""
    try:
        est = memory.estimate(config)
        verdict = f"{_ICONS.get(est.verdict, '')} **{est.summary()}**"
        if config.engine == "unsloth":  # its kernels and offloading are not modelled
            verdict += " (estimated for the transformers engine)"
        figure = figures.fit_figure(est)
    except LongCtxError as exc:
        verdict, figure = f"**Cannot estimate memory:** {exc}", None
    try:
        runs.check_engine(config)
    except LongCtxError as exc:  # Launch would refuse it; say so before the click
        verdict += f"\n\n⛔ **Cannot launch here:** {exc}"
    cmd = runs.command_for(runs.runs_dir() / "<run-id>", config)
    return verdict, figure, runs.display_command(cmd), config.to_yaml()


_ICONS = {"fits": "✅", "tight": "⚠️", "too big": "⛔"}
