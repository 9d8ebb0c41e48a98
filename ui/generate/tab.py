"""Generate tab: make training samples — the paper's LLM-written tasks or procedural ones.

Left: the task and its settings (ui/generate/form.py, read by ui/generate/values.py). Right: dry
run (requests, tokens and the most it can cost, nothing sent), Generate / Stop, live progress and
the last samples made, and the file written under workspace/datasets. The run goes on a thread
(core/synth/jobs.py) that a `gr.Timer` polls; the browser remembers its job, so a reload finds
it again. The work is done by `core.synth` (engine and procedural).
"""

from __future__ import annotations

import html
import shlex
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.cli import synth as synth_cli
from core.errors import LongCtxError
from core.models import tokenizers
from core.synth import jobs, prompts
from core.synth.job import SynthJob
from ui import access
from ui.common import user_errors
from ui.generate import form, progress
from ui.generate import values as form_values

TASKS = [
    ("Single-detail QA", "single-detail"),
    ("Multi-detail QA", "multi-detail"),
    ("Biography", "biography"),
    ("Passkey · no API", "passkey"),
    ("Multi-key · no API", "keys"),
    ("Topics · no API", "topics"),
    ("Text from documents · no API", "text"),
]
NOTES = {
    "single-detail": "Questions about one detail of one chunk each, asked over the whole long "
    "context (the paper's main task).",
    "multi-detail": "Questions that need several places of one document, or several similar "
    "documents (clusters), to answer.",
    "biography": "The main characters of a context are named first, then one biography each is "
    "written from the passages that mention them (the paper set: all in one request over the "
    "whole context).",
    "passkey": "A 5-digit pass key hidden in filler text at a chosen depth; exact answer, no API.",
    "keys": "Eight key/value lines among filler; the question asks for one; no API.",
    "topics": "A conversation over several topics; the last question asks for the first; no API.",
    "text": "Plain-text samples cut from your books, papers and reports, trained on every "
    "token: the paper mixes 5K such RedPajama samples into its data. No API.",
}


@dataclass
class GenerateTab:
    """What other tabs wire to: the box holding the path of the file a job wrote."""

    output: gr.Textbox


def build() -> GenerateTab:
    """Lay out the Generate tab and wire its events."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            task = gr.Radio(TASKS, value="single-detail", label="Task", elem_id="gen-task")
            note = gr.Markdown(NOTES["single-detail"], elem_classes="preset-note")
            boxes, c = form.build()
        with gr.Column(scale=2, min_width=380):
            with gr.Row():
                dry = gr.Button("Dry run", elem_id="gen-dry", min_width=90)
                run = gr.Button("Generate", variant="primary", elem_id="gen-run", min_width=90)
                stop = gr.Button("Stop", variant="stop", elem_id="gen-stop", min_width=90)
            estimate = gr.HTML(elem_id="gen-estimate")
            status = gr.HTML(progress.status_html(None), elem_id="gen-status")
            output = gr.Textbox(
                label="Output file", interactive=False, elem_id="gen-output", buttons=["copy"]
            )
            failures = gr.Textbox(
                label="Failed requests (JSONL, one line each with why)",
                interactive=False,
                elem_id="gen-failures",
            )
            gr.Markdown("**Latest samples**")
            preview = gr.HTML(progress.preview_html(None), elem_id="gen-preview")
            command = gr.Textbox(
                command_line("single-detail", {n: c[n].value for n in form.INPUTS}),
                label="The same run from a shell",
                interactive=False,
                lines=2,
                buttons=["copy"],
                elem_id="gen-command",
            )
    owner = gr.BrowserState(None, storage_key="longctx-generate-job")
    shown = gr.State(None)
    timer = gr.Timer(1.0)

    inputs = [c[n] for n in form.INPUTS]

    def values(vals: tuple) -> dict[str, Any]:
        return dict(zip(form.INPUTS, vals, strict=True))

    def pick_task(name):
        llm = name not in form.NO_API
        shown_if = gr.update(visible=llm)
        # A dry run prices one task: a new pick clears it (and any error shown in its place).
        return [
            NOTES[name],
            shown_if,
            shown_if,
            gr.update(value="", visible=llm),
            *form.visibility(name),
        ]

    only_for = [c[n] for n in form.ONLY_FOR]
    task.change(
        pick_task,
        task,
        [note, dry, failures, estimate, *boxes, *only_for],
        show_progress="hidden",
    )
    by_set = [c["temperature"], c["qa_per_chunk"], c["multi_mode"], c["answer_tokens"]]
    c["prompt_set"].change(
        form.prompt_set_settings, [c["prompt_set"], task], by_set, show_progress="hidden"
    )
    task.change(
        lambda name, s: form.prompt_set_settings(s, name, on_task_change=True),
        [task, c["prompt_set"]],
        by_set,
        show_progress="hidden",
    )
    c["source_kind"].change(
        lambda k: gr.update(visible=k != "builtin"),
        c["source_kind"],
        c["source_path"],
        show_progress="hidden",
    )

    @user_errors
    def info(*vals, progress=gr.Progress()):
        return form_values.source_info(
            values(vals), lambda done, total: progress((done, total), desc="Reading", unit="files")
        )

    for trigger in (c["check"].click, c["source_path"].submit, c["source_kind"].change):
        trigger(info, inputs, c["source_info"], trigger_mode="always_last")
    c["endpoint_kind"].change(
        form.endpoint_kind,
        c["endpoint_kind"],
        [c["base_url"], c["model"], c["api_key"]],
        show_progress="hidden",
    )
    prompt_boxes = [c[f"prompt:{n}"] for n in prompts.DEFAULTS]
    c["reset_prompts"].click(lambda: list(prompts.DEFAULTS.values()), None, prompt_boxes)

    for comp in [task, *inputs]:
        comp.change(
            lambda name, *vals: command_line(name, values(vals)),
            [task, *inputs],
            command,
            show_progress="hidden",
            trigger_mode="always_last",
        )

    @user_errors
    def dry_run(name, *vals):
        config = form_values.synth_config(name, values(vals), serve=False)
        ep = config.endpoint
        est = SynthJob(config, tokenizer=tokenizers.cached_tokenizer(config.tokenizer)).estimate()
        return _estimate_html(est, ep.price_in, ep.price_out)

    dry.click(dry_run, [task, *inputs], estimate)

    @user_errors
    def start(request: gr.Request, profile: gr.OAuthProfile | None, key, name, *vals):
        access.require_owner(request, profile, "Generating data")
        v, mine = values(vals), request.session_hash
        if name in form.NO_API:
            job = jobs.start_procedural([mine, key], name, **form_values.procedural_args(v))
        else:
            config = form_values.synth_config(name, v, serve=True)
            job = jobs.start_synth([mine, key], config)
            v["base_url"] = config.endpoint.base_url
        return [mine, v["base_url"], *progress.view(job), job.version()]

    run.click(
        start,
        [owner, task, *inputs],
        [owner, c["base_url"], status, preview, output, failures, shown],
    )
    stop.click(jobs.stop, owner, None, show_progress="hidden")

    def poll(key, seen):
        job = jobs.get(key)
        if job is None:
            return [gr.skip()] * 5
        now, seen = job.version(), seen or (None, None)
        if now == seen:
            return [gr.skip()] * 5
        status_, preview_, output_, failures_ = progress.view(job)
        # The preview is sent only when a sample came: re-sending it would fold what was opened.
        return [status_, preview_ if now[1] != seen[1] else gr.skip(), output_, failures_, now]

    timer.tick(
        poll, [owner, shown], [status, preview, output, failures, shown], show_progress="hidden"
    )
    return GenerateTab(output)


def command_line(task: str, v: dict[str, Any]) -> str:
    """The `longctx` command that makes the same samples, or why the form is not ready."""
    try:
        if task in form.NO_API:
            argv = synth_cli.make_command_for(task, **form_values.procedural_args(v))
        else:
            argv = synth_cli.command_for(form_values.synth_config(task, v, serve=False))
    except LongCtxError as exc:  # shown in place of the command, not as a toast per keystroke
        return f"Not ready: {exc}"
    return shlex.join(argv)


def _estimate_html(est: Any, price_in: float, price_out: float) -> str:
    cost = f"${est.cost_usd:,.4f}" if price_in or price_out else "$0 (no prices set)"
    example = "".join(
        f"<b>{html.escape(m['role'])}</b><pre>{html.escape(progress.fold(m['content']))}</pre>"
        for m in est.example
    )
    return (
        f'<div class="gen-estimate"><p><b>{est.to_send} requests to send</b> '
        f"({est.cached} cached) · cost at most <b>{cost}</b></p>"
        f"<pre>{html.escape(est.summary(price_in, price_out))}</pre>"
        f"<details><summary>First request</summary>{example}</details></div>"
    )


if __name__ == "__main__":  # quick work on this tab alone: python -m ui.generate.tab
    from ui.theme import style_kwargs

    with gr.Blocks(title="LongCtx Studio — Generate") as demo:
        build()
    demo.launch(**style_kwargs())
