"""Train tab, part 2: the runs — list, live charts, log tail, stop / resume, export, overlay.

Everything shown is read from the run folders on every tick of a `gr.Timer`, so the view comes
back unchanged after a page refresh or an app restart.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from core import children
from core.errors import LongCtxError
from core.train import export, figures, runs
from core.train.config import TrainConfig
from ui import access, theme
from ui.common import user_errors


@dataclass
class RunsMonitor:
    run: gr.Dropdown
    status: gr.HTML
    chart: gr.Plot
    log: gr.Textbox
    to_evaluate: gr.Button
    """Opens the Evaluate tab with the picked run's adapter under test (wired by the shell)."""
    to_chat: gr.Button
    """Opens the Chat tab with the run's base beside its adapter (wired by the shell)."""

    @property
    def select_outputs(self) -> list:
        return [self.run, self.status, self.chart, self.log]


def _choices() -> list[tuple[str, str]]:
    return [(f"{r.id} — {r.state}", r.id) for r in runs.list_runs()]


def status_html(run_id: str | None) -> str:
    if not run_id:
        return "<p>No run selected. Launch one above, or pick one from the list.</p>"
    status = runs.read_status(runs.run_path(run_id))
    state = str(status.get("state", "unknown"))
    step, total = int(status.get("step") or 0), int(status.get("max_steps") or 0)
    if not total:  # before the trainer has counted its steps: a fixed count is known already
        total = max(0, _configured_steps(run_id))
    pct = 100 * step / total if total else 0
    eta = status.get("eta_s")
    eta_text = f" · ETA {_duration(eta)}" if eta and state == "running" else ""
    loss, held = status.get("loss"), status.get("eval_loss")
    reason = status.get("reason")
    return (
        f'<div class="run-status">{theme.badge(state)} '
        f"<b>{html.escape(run_id)}</b> · step {step}/{total or '?'}"
        + (f" · loss {loss:.4f}" if isinstance(loss, float) else "")
        + (
            f" · held-out loss {held:.4f} (step {status.get('eval_step')})"
            if isinstance(held, float)
            else ""
        )
        + eta_text
        + (f" · CPU threads: {status['threads']}" if status.get("threads") else "")
        + f'<div class="run-progress"><div style="width:{pct:.1f}%"></div></div>'
        + (f'<p class="run-reason">{html.escape(str(reason))}</p>' if reason else "")
        + (
            f"<p>Adapter: <code>{html.escape(runs.short_path(status['adapter']))}</code></p>"
            if status.get("adapter")
            else ""
        )
        + "</div>"
    )


def _configured_steps(run_id: str) -> int:
    try:
        return TrainConfig.from_yaml(runs.run_path(run_id) / "config.yaml").max_steps
    except LongCtxError:
        return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def select(run_id: str | None, choices: list[tuple[str, str]] | None = None) -> list:
    """Updates for (run dropdown, status, chart, log) showing `run_id` (default: the newest)."""
    if choices is None:
        children.reap()
        choices = _choices()
    if run_id is None and choices:
        run_id = choices[0][1]
    if not run_id:
        return [gr.update(choices=choices, value=None), status_html(None), None, ""]
    run_dir = runs.run_path(run_id)
    figure = figures.run_figure(runs.read_metrics(run_dir), title=run_id)
    return [
        gr.update(choices=choices, value=run_id),
        status_html(run_id),
        figure,
        runs.tail_log(run_dir),
    ]


def poll(run_id: str | None, seen: tuple | None) -> list:
    """The timer's refresh: `select`'s updates plus what they show, or skips while nothing has
    changed, so a chart being zoomed or hovered is not redrawn under the pointer."""
    children.reap()
    choices = _choices()
    ids = [c[1] for c in choices]
    picked = run_id in ids
    if not picked:  # none picked yet, or its folder was deleted: show the newest
        run_id = ids[0] if ids else None
    files = ()
    if run_id:
        run_dir = runs.run_path(run_id)
        files = tuple(
            _stamp(run_dir / name) for name in ("status.json", "metrics.jsonl", "log.txt")
        )
    signature = (tuple(choices), run_id, files)
    if signature == seen:
        return [gr.skip()] * 4 + [seen]
    updates = select(run_id, choices)
    if picked:
        # The pick is the user's (or Launch's): a tick that started before a Launch carries the
        # old pick and must not put it back. The next tick draws whatever the list shows.
        updates[0] = gr.update(choices=choices)
    return [*updates, signature]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


SCROLL_LOG_TO_END = """() => requestAnimationFrame(() => {
  const box = document.querySelector('#run-log textarea');
  if (box) box.scrollTop = box.scrollHeight;
})"""


def build() -> RunsMonitor:
    """Lay out the runs panel (inside the Train tab) and wire it."""
    with gr.Row():
        run = gr.Dropdown(_choices(), value=None, label="Run", scale=4, elem_id="run-select")
        refresh = gr.Button("Refresh", scale=1)
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="run-stop")
        resume = gr.Button("Resume", scale=1, elem_id="run-resume")
    status = gr.HTML(status_html(None), elem_id="run-status")
    with gr.Row():
        to_evaluate = gr.Button("Evaluate this run →", size="sm", elem_id="run-to-evaluate")
        to_chat = gr.Button("Chat: base vs. this run →", size="sm", elem_id="run-to-chat")
    chart = gr.Plot(label="Live metrics", elem_id="run-chart")
    with gr.Accordion("Log", open=False) as log_box:
        log = gr.Textbox(
            lines=14, max_lines=14, show_label=False, elem_id="run-log", autoscroll=True
        )
    # autoscroll follows new lines only; a finished run's log opens at its end too.
    log_box.expand(None, js=SCROLL_LOG_TO_END)
    with gr.Accordion("Export", open=False):
        with gr.Row():
            merge = gr.Checkbox(label="Merge into the base (saved with the new RoPE base)")
            repo = gr.Textbox(label="Push to Hub repo (optional)", placeholder="user/model-80k")
            token = gr.Textbox(label="Hub token", type="password", placeholder="empty: $HF_TOKEN")
        export_btn = gr.Button("Export")
        export_out = gr.Markdown()
        with gr.Accordion("Model card (README.md, shown after Export)", open=False):
            card_out = gr.Markdown(elem_id="export-card")
    with gr.Accordion("Compare runs", open=False) as compare_box:
        pick = gr.CheckboxGroup(
            [c[1] for c in _choices()], label="Runs to overlay", elem_id="run-compare-pick"
        )
        overlay = gr.Plot(elem_id="run-compare")
    monitor = RunsMonitor(run, status, chart, log, to_evaluate, to_chat)
    timer = gr.Timer(2.0)

    outputs = monitor.select_outputs
    shown = gr.State(None)  # what the panel shows, as `poll` stamps it
    timer.tick(user_errors(poll), [run, shown], [*outputs, shown], show_progress="hidden")
    refresh.click(user_errors(select), run, outputs)
    run.input(user_errors(select), run, outputs, show_progress="hidden")

    @user_errors
    def do_stop(request: gr.Request, profile: gr.OAuthProfile | None, run_id):
        access.require_owner(request, profile, "Stopping a run")
        if not run_id:
            raise gr.Error("Pick a run first.")
        runs.stop(run_id)
        return select(run_id)

    @user_errors
    def do_resume(request: gr.Request, profile: gr.OAuthProfile | None, run_id):
        access.require_owner(request, profile, "Resuming a run")
        if not run_id:
            raise gr.Error("Pick a run first.")
        runs.resume(run_id)
        return select(run_id)

    stop.click(do_stop, run, outputs)
    resume.click(do_resume, run, outputs)

    @user_errors
    def do_export(
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        run_id,
        merge_,
        repo_,
        token_,
        progress=gr.Progress(),
    ):
        access.require_owner(request, profile, "Exporting a run")
        if not run_id:
            raise gr.Error("Pick a run first.")
        adapter = export.find_adapter(run_id)
        target, lines = adapter, []
        if merge_:
            progress(0.1, desc="merging")
            target = export.merge(adapter, adapter.parent / "merged")
            lines.append(f"Merged model: `{target}`")
        if repo_:
            progress(0.6, desc="uploading")
            lines.append(f"Pushed: {export.push(target, repo_, token=token_ or None)}")
        if not lines:
            lines.append(f"Adapter: `{adapter}` (tick Merge or give a repo to do more)")
        if not (merge_ or repo_):  # merge and push write the card themselves
            export.refresh_model_card(target)
        card = target / "README.md"
        card_text = _without_front_matter(card.read_text()) if card.exists() else ""
        token_box = gr.update(value="") if repo_ else gr.skip()  # token used: gone
        return "\n\n".join(lines), card_text, token_box

    export_btn.click(do_export, [run, merge, repo, token], [export_out, card_out, token])

    def do_overlay(ids):
        return figures.overlay_figure({i: runs.read_metrics(runs.run_path(i)) for i in ids or []})

    pick.change(do_overlay, pick, overlay)
    # Runs launched since the page loaded join the list when it is opened or refreshed.
    for event in (compare_box.expand, refresh.click):
        event(
            lambda: gr.update(choices=[c[1] for c in _choices()]),
            None,
            pick,
            show_progress="hidden",
        )
    return monitor


def _without_front_matter(card: str) -> str:
    """A model card's text without its YAML header (the Hub reads it; people need not)."""
    if card.startswith("---\n") and "\n---\n" in card[4:]:
        return card[4:].split("\n---\n", 1)[1]
    return card
