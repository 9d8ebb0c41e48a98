"""Evaluate tab: Needle-in-a-Haystack grids, topic and passkey retrieval, perplexity against
context length, base-vs-tuned comparisons.

Left: the model under test (ui/targets.py) and the task, grid and scorer (ui/evaluate/form.py).
Right: Run / Stop, the live heatmap that fills in as cells finish, and the equivalent
`longctx` command. Below: past evaluations, comparison and export (ui/evaluate/results.py), and
the scorecard of a base model and its tuned runs (ui/evaluate/scorecard.py).
The run goes on a thread (core/evals/jobs.py) that a `gr.Timer` polls through the evaluation
folder; the browser remembers its job, so a reload finds it again. The work is `core.evals`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.cli import evals as evals_cli
from core.errors import LongCtxError
from core.evals import jobs, results
from core.evals.backends import Target
from core.evals.harness import HarnessRun
from core.evals.niah import NiahConfig
from core.evals.runner import Evaluation
from core.hosting import space
from core.models.loader import ModelSpec
from ui import access, targets
from ui.common import user_errors
from ui.data.common import dataset_files
from ui.evaluate import form, progress, scorecard
from ui.evaluate import methods as compare_methods
from ui.evaluate import results as past


@dataclass
class EvaluateTab:
    target: targets.TargetControls
    """The model-under-test controls."""
    task: gr.Radio
    dataset: gr.Dropdown
    """The held-out samples to ask (task `samples`)."""


def build() -> EvaluateTab:
    """Lay out the Evaluate tab inside the current Blocks and wire its events."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=380):
            gr.Markdown("**Model under test**")
            target = targets.target_controls("eval")
            c = form.build()
        with gr.Column(scale=3, min_width=420):
            with gr.Row():
                run = gr.Button("Run", variant="primary", elem_id="eval-run")
                stop = gr.Button("Stop", variant="stop", elem_id="eval-stop")
            status = gr.HTML(progress.status_html(None), elem_id="eval-status")
            live = gr.Plot(label="Live figure (fills in as cells finish)", elem_id="eval-live")
            first = NiahConfig()  # what the form shows before any change
            command = gr.Textbox(
                shlex.join(evals_cli.command_for(first, Target(ModelSpec()))),
                label="The same evaluation from the command line",
                interactive=False,
                lines=2,
                elem_id="eval-command",
                buttons=["copy"],
            )
            plan = gr.Markdown(f"{len(first.cell_keys())} cells", elem_id="eval-plan")
    gr.Markdown("### Evaluations")
    panel = past.build()
    scorecard.build()
    compare_methods.build()
    owner = gr.BrowserState(None, storage_key="longctx-evaluate-job")
    shown = gr.State(None)
    listed = gr.State(None)
    timer = gr.Timer(1.0)
    _wire(target, c, run, stop, status, live, command, plan, panel, owner, shown, listed, timer)
    return EvaluateTab(target, c["task"], c["dataset"])


def _wire(
    target, c, run, stop, status, live, command, plan, panel, owner, shown, listed, timer
) -> None:
    inputs = [c[n] for n in form.INPUTS]
    n_form = len(inputs)

    def parts(vals: tuple) -> tuple[Any, Any, Any, Any]:
        v = dict(zip(form.INPUTS, vals[:n_form], strict=True))
        return form.task_config(v), targets.to_eval_target(*vals[n_form:]), form.scorer(v), v

    c["task"].change(
        form.pick_task, c["task"], [c[n] for n in form.TOGGLED], show_progress="hidden"
    )
    c["niah_preset"].change(
        form.pick_preset,
        c["niah_preset"],
        [c[n] for n in form.PRESET_FIELDS],
        show_progress="hidden",
    )
    c["topic_file"].change(
        form.pick_topic_file,
        [c["topic_file"], c["n_topics"], c["scorer"]],
        [c["n_topics"], c["scorer"]],
        show_progress="hidden",
    )
    # Files saved, split or mixed since the page loaded.
    c["dataset"].focus(
        lambda: gr.update(choices=dataset_files()), None, c["dataset"], show_progress="hidden"
    )
    c["haystack_kind"].change(
        lambda k: gr.update(visible=k == "folder"),
        c["haystack_kind"],
        c["haystack_folder"],
        show_progress="hidden",
    )
    for mode, boxes in (
        ("length_mode", ["lengths", "length_range"]),
        ("depth_mode", ["depths", "depth_range"]),
    ):
        c[mode].change(_list_or_range, c[mode], [c[b] for b in boxes], show_progress="hidden")
    c["scorer"].change(
        lambda k: (gr.update(info=form.SCORER_HELP[k]), gr.update(visible=k == "judge")),
        c["scorer"],
        [c["scorer"], c["judge_box"]],
        show_progress="hidden",
    )

    def preview(*vals):
        try:
            task, target_, scorer, v = parts(vals)
            out = form.output(v)
        except LongCtxError as exc:  # shown in place of the command, not as a toast per keystroke
            return "", f"**Not ready:** {exc}"
        cmd = shlex.join(evals_cli.command_for(task, target_, scorer, str(out) if out else None))
        keys = task.cell_keys()
        done = len(set(keys) & {cell["key"] for cell in results.read_cells(out)}) if out else 0
        note = f"{len(keys)} cells" + (f"; **{done} already done** in that folder" if done else "")
        return cmd, note

    all_inputs = [*inputs, *target.inputs()]
    for comp in all_inputs:
        comp.change(
            preview, all_inputs, [command, plan], show_progress="hidden", trigger_mode="always_last"
        )

    def started(request: gr.Request, job: jobs.Job) -> list[Any]:
        return [
            request.session_hash,
            progress.status_html(job),
            progress.figure(job),
            job.version(),
        ]

    @user_errors
    def start(request: gr.Request, profile: gr.OAuthProfile | None, key, *vals):
        task, target_, scorer, v = parts(vals)
        _check_visitor(request, profile, task, target_, scorer)  # before the folder is made
        evaluation = Evaluation(task, target_, scorer, form.output(v))
        return started(request, jobs.start([request.session_hash, key], evaluation))

    @user_errors
    def resume(
        request: gr.Request, profile: gr.OAuthProfile | None, key, eval_id, api_key, judge_key
    ):
        evaluation = jobs.reopen(
            past.folder(eval_id), api_key=api_key or None, judge_api_key=judge_key or None
        )
        if isinstance(evaluation, HarnessRun):  # an lm-eval suite: the owner's to resume
            _check_visitor(request, profile, None, evaluation.target, None)
        else:
            _check_visitor(request, profile, evaluation.task, evaluation.target, evaluation.scorer)
        return started(request, jobs.start([request.session_hash, key], evaluation))

    job_outputs = [owner, status, live, shown]
    run.click(start, [owner, *all_inputs], job_outputs)
    panel.resume.click(resume, [owner, panel.pick, target.api_key, c["judge_key"]], job_outputs)
    stop.click(jobs.stop, owner, None, show_progress="hidden")

    def poll(key, seen, seen_list, pick, x):
        job = jobs.get(key)
        # The version is read before drawing: a job that finishes while its page is drawn then
        # keeps an older version than the state shown, and the next tick draws it again.
        version = job.version() if job is not None else None
        if job is None or version == seen:
            updates = [gr.skip()] * 3
        else:
            updates = [progress.status_html(job), progress.figure(job), version]
        signature = past.signature()
        if signature == seen_list:
            return [*updates, gr.skip(), *[gr.skip()] * len(panel.list_outputs)]
        return [*updates, signature, *past.refresh(pick, x)]

    timer.tick(
        user_errors(poll),
        [owner, shown, listed, panel.pick, panel.x_axis],
        [status, live, shown, listed, *panel.list_outputs],
        show_progress="hidden",
    )


def _check_visitor(
    request: gr.Request, profile: gr.OAuthProfile | None, task: Any, target: Target, scorer: Any
) -> None:
    """On a public app, visitors other than the owner run small grids on local models only."""
    if access.visitor(request, profile).is_owner:
        return
    if task is None:
        raise gr.Error("lm-eval suites run for the app's owner only.", print_exception=False)
    paid = target.endpoint is not None or scorer.judge is not None
    why = space.PUBLIC_LIMITS.refusal(len(task.cell_keys()), task.longest(), paid)
    if why:
        raise gr.Error(why[0].upper() + why[1:] + ".", print_exception=False)


def _list_or_range(mode: str) -> tuple[Any, Any]:
    return gr.update(visible=mode == "list"), gr.update(visible=mode != "list")


if __name__ == "__main__":  # quick work on this tab alone: python -m ui.evaluate.tab
    from ui.theme import style_kwargs

    with gr.Blocks(title="LongCtx Studio — Evaluate") as demo:
        build()
    demo.launch(**style_kwargs())
