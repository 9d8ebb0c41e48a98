"""Evaluate tab, "Compare extension methods": several RoPE settings (and trained runs) on one
model, side by side, with no training (core.evals.methods).

The comparison runs as `longctx compare-methods` in a child process, so it survives a reload
and can run for hours; a timer redraws the picked comparison's figures and table from its folder.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import gradio as gr

from core import workspace
from core.errors import LongCtxError
from core.evals import methods
from core.models import names
from core.train import runs
from ui import access, theme
from ui.common import user_errors

DEFAULT_METHODS = "none\nyarn:factor=4\nlinear:factor=4\ndynamic:factor=4\nbase:theta=1e6"


def build() -> None:
    """A closed accordion with the comparison's form, its progress, figures and table."""
    with gr.Accordion(
        "Compare extension methods (no training)", open=False, elem_id="methods-panel"
    ):
        gr.Markdown(
            "Perplexity of the last positions and a NIAH grid for each RoPE setting, at "
            "lengths past the model's window; `none` is the model as it is. Add trained "
            "runs to set a fine-tuned extension beside the untrained ones."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                model = gr.Dropdown(
                    names.known_models(),
                    value=names.EMBEDDED,
                    label="Model",
                    allow_custom_value=True,
                    elem_id="methods-model",
                )
                settings = gr.Textbox(
                    DEFAULT_METHODS, lines=5, label="Methods, one per line", elem_id="methods-list"
                )
                trained = gr.Dropdown(
                    _run_choices(), multiselect=True, label="Trained runs", elem_id="methods-runs"
                )
                with gr.Row():
                    lengths = gr.Textbox("4k,16k,32k", label="Lengths", elem_id="methods-lengths")
                    depths = gr.Textbox("10,50,90", label="NIAH depths (%)")
                with gr.Row():
                    niah = gr.Checkbox(True, label="NIAH grid too (slow on a CPU)")
                    windows = gr.Number(1, label="Perplexity windows", precision=0, minimum=1)
                form = [model, settings, trained, lengths, depths, niah, windows]
                command = gr.Textbox(
                    # Shown from the start, not only after the first change.
                    _preview(*(c.value for c in form)),
                    label="The same comparison from the command line",
                    lines=2,
                    interactive=False,
                    buttons=["copy"],
                    elem_id="methods-command",
                )
                with gr.Row():
                    start = gr.Button("Compare", variant="primary", elem_id="methods-run")
                    stop = gr.Button("Stop", variant="stop", elem_id="methods-stop")
            with gr.Column(scale=3, min_width=420):
                pick = gr.Dropdown(_folders(), label="Comparison", elem_id="methods-pick")
                status = gr.HTML(elem_id="methods-status")
                table = gr.Markdown(elem_id="methods-table")
                ppl_plot = gr.Plot(label="Perplexity", elem_id="methods-ppl")
                niah_plot = gr.Plot(label="Needle in a haystack", elem_id="methods-niah")
    timer = gr.Timer(3.0)
    seen = gr.State(None)  # the state last drawn: the timer redraws once more when it changes

    for comp in form:
        comp.change(_preview, form, command, show_progress="hidden", trigger_mode="always_last")

    def run(request: gr.Request, profile: gr.OAuthProfile | None, *values: Any):
        access.require_owner(request, profile, "comparing methods")
        folder = methods.launch(_config(*values))
        return gr.Dropdown(choices=_folders(), value=str(folder))

    start.click(user_errors(run), form, pick)
    stop.click(user_errors(lambda folder: methods.stop(_folder(folder))), pick, None)
    outputs = [status, table, ppl_plot, niah_plot, seen]
    pick.change(user_errors(show), pick, outputs)
    pick.focus(lambda: gr.update(choices=_folders()), None, pick, show_progress="hidden")
    timer.tick(poll, [pick, seen], outputs, show_progress="hidden")


def _config(model, settings, trained, lengths, depths, niah, windows) -> methods.MethodsConfig:
    return methods.MethodsConfig(
        model=workspace.model_from_user(model) or names.EMBEDDED,
        methods=[line for line in (settings or "").splitlines() if line.strip()],
        runs=list(trained or []),
        lengths=lengths or "",
        depths=depths or "",
        niah=bool(niah),
        windows=int(windows or 1),
    )


def _preview(*values: Any) -> str:
    """The command line the form stands for, or what keeps it from being one."""
    try:
        config = _config(*values)
    except LongCtxError as exc:  # in place of the command, not a toast per keystroke
        return f"Not ready: {exc}"
    return shlex.join(methods.command_for(config, "evals/methods-<date>"))


def _run_choices() -> list[tuple[str, str]]:
    return [(f"{r.id}", r.id) for r in runs.list_runs() if (r.path / "adapter").is_dir()]


def _folders() -> list[tuple[str, str]]:
    return [(p.name, str(p)) for p in methods.list_comparisons()]


def _folder(value: Any) -> Path:
    if not value:
        raise LongCtxError("pick a comparison first")
    return workspace.resolve_inside(str(value))


def show(folder: Any) -> list[Any]:
    """Status line, table and figures of the picked comparison, and the state drawn."""
    if not folder:
        return ["", "", None, None, None]
    path = _folder(folder)
    comparison = methods.Comparison.open(path)
    record = methods.state(path)
    figs = comparison.figures()
    return [
        _status_html(record),
        comparison.table_markdown(),
        figs["perplexity"],
        figs.get("niah"),
        record.get("state"),
    ]


def poll(folder: Any, seen: Any) -> list[Any]:
    """Redraw while the picked comparison runs, and once more when it ends; leave the page
    alone otherwise."""
    if not folder:
        return [gr.skip()] * 5
    now = methods.state(_folder(folder)).get("state")
    if now != "running" and now == seen:
        return [gr.skip()] * 5
    return show(folder)


def _status_html(record: dict[str, Any]) -> str:
    state = record.get("state", "created")
    parts = []
    if record.get("parts"):
        parts.append(f"evaluation {record.get('part', 0)}/{record['parts']}")
    if record.get("what"):
        parts.append(f"{record['what']}: {record.get('done', 0)}/{record.get('total', '?')} cells")
    if record.get("reason"):
        parts.append(f"failed: {record['reason']}")
    return f'<div class="run-status">{theme.badge(state)} ' + " · ".join(parts) + "</div>"
