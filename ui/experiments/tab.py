"""Experiments tab: one file runs data -> train -> evaluate -> report (core.experiments).

The experiment runs as `longctx experiment run` in a child process, so it survives a page reload
and an app restart and can run overnight; a timer redraws the picked experiment's steps, loss,
heatmaps and scorecard from its folder while it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from core import children, workspace
from core.errors import ConfigError, LongCtxError
from core.experiments import report, runner, spec
from ui import access, theme
from ui.common import user_errors

STEP_COLUMNS = ["step", "state", "progress", "time", "peak memory"]
_PRESET = "preset: "


@dataclass
class ExperimentsTab:
    """The tab's parts other code (tests, the shell) reaches for."""

    source: gr.Dropdown
    text: gr.Code
    pick: gr.Dropdown
    steps: gr.Dataframe


def build() -> ExperimentsTab:
    """Lay out the Experiments tab inside the current Blocks and wire its events."""
    gr.Markdown(
        "An experiment names its data steps, its trainings and the evaluations of the base "
        "model, of the base with only the RoPE change and of each tuned run. Each step is the "
        "`longctx` command its tab runs, writing into its own folder of "
        "`workspace/experiments/<name>/`; running it again skips the finished steps, so a "
        "stopped or killed experiment resumes where it stopped."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=360):
            source = gr.Dropdown(
                _sources(),
                value=_PRESET + "miniature-cpu",
                label="Start from",
                info="a preset, or an experiment of this workspace",
                elem_id="exp-source",
            )
            text = gr.Code(
                _source_text(_PRESET + "miniature-cpu"),
                language="yaml",
                label="Experiment file",
                lines=18,
                max_lines=40,
                interactive=True,
                elem_id="exp-yaml",
            )
            with gr.Row():
                check = gr.Button("Check", elem_id="exp-check")
                start = gr.Button("Run", variant="primary", elem_id="exp-run")
                stop = gr.Button("Stop", variant="stop", elem_id="exp-stop")
            plan = gr.Markdown(elem_id="exp-plan")
        with gr.Column(scale=3, min_width=420):
            pick = gr.Dropdown(_folders(), label="Experiment", elem_id="exp-pick")
            status = gr.HTML(elem_id="exp-status")
            steps = gr.Dataframe(
                headers=STEP_COLUMNS,
                interactive=False,
                label="Steps",
                elem_id="exp-steps",
            )
            loss = gr.Plot(label="Training loss", elem_id="exp-loss")
            grids = gr.Plot(label="Retrieval by length and depth", elem_id="exp-grids")
            card = gr.Markdown(elem_id="exp-scorecard")
            download = gr.File(label="Report", interactive=False, elem_id="exp-report")
    timer = gr.Timer(3.0)
    seen = gr.State(None)  # what was last drawn: the timer redraws only when it changes

    source.change(user_errors(_source_text), source, text)
    source.focus(lambda: gr.update(choices=_sources()), None, source, show_progress="hidden")
    check.click(user_errors(check_plan), text, plan)

    def run(request: gr.Request, profile: gr.OAuthProfile | None, yaml_text: str):
        access.require_owner(request, profile, "running experiments")
        check_plan(yaml_text)
        folder = runner.launch(yaml_text)
        return gr.Dropdown(choices=_folders(), value=str(folder)), _started(folder)

    outputs = [status, steps, loss, grids, card, download, seen]
    start.click(user_errors(run), text, [pick, plan])
    stop.click(user_errors(_stop), pick, plan)
    pick.change(user_errors(show), pick, outputs)
    pick.focus(lambda: gr.update(choices=_folders()), None, pick, show_progress="hidden")
    timer.tick(poll, [pick, seen], outputs, show_progress="hidden")
    return ExperimentsTab(source, text, pick, steps)


# -- the form ------------------------------------------------------------------------------


def _sources() -> list[str]:
    return [_PRESET + p for p in spec.list_presets()] + [p.name for p in runner.list_experiments()]


def _source_text(choice: str | None) -> str:
    if not choice:
        return ""
    if choice.startswith(_PRESET):
        return spec.preset_path(choice[len(_PRESET) :]).read_text()
    return (runner.experiments_dir() / choice / runner.SPEC_FILE).read_text()


def _parse(yaml_text: str) -> spec.Experiment:
    if not (yaml_text or "").strip():
        raise LongCtxError("the experiment file is empty: start from a preset")
    return spec.load(yaml_text if "\n" in yaml_text else yaml_text + "\n")


def check_plan(yaml_text: str) -> str:
    """The steps the file plans, each with its command; every command line is checked by the
    CLI's own parser, so a misspelled option shows here rather than an hour in."""
    from core.cli.experiment import check_commands
    from core.cli.main import build_parser

    experiment = _parse(yaml_text)
    try:
        check_commands(experiment, build_parser())
    except ConfigError as exc:
        raise LongCtxError("; ".join(exc.problems)) from exc
    folder = runner.folder_of(experiment)
    done = runner.read_state(folder).get("steps", {})
    lines = [
        f"**{experiment.name}**: {len(experiment.steps)} steps, in `{workspace.shown(folder)}`"
    ]
    for step in experiment.steps:
        again = done.get(step.id, {})
        mark = (
            " (done: skipped)"
            if again.get("state") == "done" and again.get("digest") == experiment.digest(step)
            else ""
        )
        command = " ".join(step.command("EXPERIMENT"))
        lines.append(f"- `{step.id}`{mark}: `longctx {command}`")
    return "\n".join(lines)


def _started(folder: Path) -> str:
    return (
        f"Started **{folder.name}** in the background. It keeps running if you close the page; "
        f"from a terminal: `longctx experiment status {folder.name}`."
    )


def _stop(folder: Any) -> str:
    path = _folder(folder)
    runner.stop(path)
    return f"Asked **{path.name}** to stop; the finished steps stay. Run it again to resume."


# -- the picked experiment ------------------------------------------------------------------


def _folders() -> list[tuple[str, str]]:
    return [(p.name, str(p)) for p in runner.list_experiments()]


def _folder(value: Any) -> Path:
    if not value:
        raise LongCtxError("pick an experiment first")
    return workspace.resolve_inside(str(value))


def step_table(folder: Path, experiment: spec.Experiment, state: dict[str, Any]) -> list[list]:
    """One row per step: its state, how far it is, its time and peak memory."""

    def progress(step: spec.Step, record: dict[str, Any]) -> str:
        now = record.get("state", "pending")
        if now == "failed" and record.get("reason"):
            return record["reason"]
        if now in ("running", "interrupted", "stopped", "failed"):
            return runner.step_progress(folder, step)[2]
        return ""

    return report.step_rows(state, experiment, progress)[1:]


def show(folder: Any) -> list[Any]:
    """Status, steps, figures, scorecard and report of the picked experiment."""
    if not folder:
        return ["", None, None, None, "", None, None]
    path = _folder(folder)
    experiment = runner.load_folder(path)
    state = runner.read_state(path)
    now = state.get("state", "created")
    line = f"{theme.badge(now)} <b>{experiment.name}</b>"
    done = sum(1 for r in state.get("steps", {}).values() if r.get("state") == "done")
    line += f" · {done}/{len(experiment.steps)} steps done"
    if state.get("reason"):
        line += f" · {state['reason']}"
    grid = None
    for task in report.GRID_TASKS:
        grid = report.grids_figure(path, experiment, task)
        if grid is not None:
            break
    scorecard = report.build_scorecard(path, experiment)
    report_file = path / runner.REPORT_FILE
    return [
        f'<div class="run-status">{line}</div>',
        step_table(path, experiment, state),
        report.loss_figure(path, experiment),
        grid,
        scorecard.markdown() if scorecard else "",
        str(report_file) if report_file.exists() else None,
        _fingerprint(path, state),
    ]


def _fingerprint(folder: Path, state: dict[str, Any]) -> str:
    """Changes whenever something on the page would: a step's state, or a running step's
    files."""
    running = [s for s, r in state.get("steps", {}).items() if r.get("state") == "running"]
    stamp = ""
    for step_id in running:
        for name in ("metrics.jsonl", "cells.jsonl", "status.json"):
            path = folder / step_id / name
            if path.exists():
                stamp += f"{name}:{path.stat().st_mtime_ns}"
    steps = {s: r.get("state") for s, r in state.get("steps", {}).items()}
    return f"{state.get('state')}|{steps}|{stamp}|{int(time.time() // 30) if running else ''}"


def poll(folder: Any, seen: Any) -> list[Any]:
    """Redraw when the picked experiment changed since the last draw; leave the page alone
    otherwise."""
    children.reap()
    if not folder:
        return [gr.skip()] * 7
    try:
        path = _folder(folder)
    except LongCtxError:
        return [gr.skip()] * 7
    if _fingerprint(path, runner.read_state(path)) == seen:
        return [gr.skip()] * 7
    return show(folder)


if __name__ == "__main__":  # quick work on this tab alone: python -m ui.experiments.tab
    with gr.Blocks(title="LongCtx Studio — Experiments") as demo:
        build()
    demo.launch(**theme.style_kwargs())
