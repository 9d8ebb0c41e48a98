"""Data tab: open, validate, inspect, search, edit, measure and mix long-context training sets.

Layout: the file, the model whose tokenizer and chat template count the tokens, and the max
length on top; then Samples (validation, table, one sample and its editor), Statistics, and
Mix & push. Opening shows the first page at once, then indexes, validates and measures the file
with progress. The panels live in ui/data_*.py; the work is done by `core.data`.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.context import get_blocks_context

from core import workspace
from core.data import edit, io
from core.data.session import Opened
from core.models import names
from core.models.tokenizers import cached_tokenizer as load_tokenizer
from ui.common import optional_int, user_errors
from ui.data import mix as data_mix
from ui.data import sample as data_sample
from ui.data import stats as data_stats
from ui.data import table as data_table
from ui.data.common import SAMPLE, dataset_files, first_page, import_upload, resolve_spec

UPLOAD_TYPES = [".jsonl", ".json", ".ndjson", ".parquet"]


def status_html(op: Opened | None, max_length=None) -> str:
    """One line about the open file: its size, kinds, tokens, and indexing progress."""
    if op is None:
        return ""
    name = html.escape(workspace.shown(op.spec))
    if op.stats is None:
        size, done = getattr(op.source, "size", 0), getattr(op.source, "indexed_bytes", 0)
        pct = 100 * done / size if size else 100
        return (
            f'<div class="data-status"><b>{name}</b> · opening: {len(op.source):,} rows '
            f'indexed so far<div class="run-progress"><div style="width:{pct:.0f}%"></div>'
            "</div></div>"
        )
    s = op.stats.summary(optional_int(max_length))
    over = (
        f" · <b>{s['over_max_length']:,}</b> over max length {s['max_length']:,}"
        if s["max_length"]
        else ""
    )
    unsaved = len(op.session.history) if op.session is not None else 0
    return (
        f'<div class="data-status"><b>{name}</b> · {s["samples"]:,} samples '
        f"({s['chat']:,} chat, {s['text']:,} text, {s['malformed']:,} malformed) · "
        f"{s['tokens']['sum']:,} tokens under {html.escape(op.model)}{over}"
        + (f" · {unsaved} unsaved change(s)" if unsaved else "")
        + "</div>"
    )


@user_errors
def start(spec, model, with_evidence):
    """Open lazily and show the first page; `index` does the rest."""
    resolved = resolve_spec(spec)
    model = (model or names.EMBEDDED).strip()
    load_tokenizer(model)  # an unknown or unreachable model fails here, before any work
    source = io.open_source(resolved, wait=False)
    op = Opened(resolved, source, model=model, with_evidence=bool(with_evidence))
    op.preview = first_page(source)
    return op, status_html(op), *data_table.reset(op), 0  # 0: show the first sample


@user_errors
def index(op: Opened, max_length, progress=gr.Progress()):
    """Finish indexing, validate every row, then measure every row under the model."""
    src = op.source
    while not src.wait(timeout=0.25):
        done, size = getattr(src, "indexed_bytes", 0), getattr(src, "size", 0) or 1
        progress(done / size, desc=f"indexing: {len(src):,} rows so far")
    op.validation = io.validate(src, progress=lambda d, t: progress((d, t), desc="validating"))
    _measure(op, progress)
    return op, status_html(op, max_length)


def _measure(op: Opened, progress) -> None:
    if op.session is None:
        op.session = edit.EditSession(op.source)
    op.measure(progress=lambda d, t: progress((d, t), desc=f"counting tokens ({op.model})"))


@dataclass
class DataTab:
    """What other tabs need to hand the Data tab a file: its path box and how to open it."""

    path: gr.Dropdown
    open_after: Callable[[Any], None]
    """`open_after(event)`: open whatever is in `path` once `event` succeeds."""


def build() -> DataTab:
    """Lay out the Data tab and wire its events."""
    opened = gr.State(None)
    with gr.Row(elem_classes="data-bar"):
        path = gr.Dropdown(
            dataset_files(),
            value=str(SAMPLE),
            allow_custom_value=True,
            scale=5,
            label="Dataset",
            elem_id="data-path",
            info="a file in the workspace or assets/ (JSONL, JSON array, Parquet, "
            "save_to_disk folder) or hub:org/name; add [N] for N random rows",
        )
        upload = gr.UploadButton(
            "Upload…", file_types=UPLOAD_TYPES, scale=1, min_width=100, elem_id="data-upload"
        )
        open_btn = gr.Button("Open", variant="primary", scale=1, min_width=90, elem_id="data-open")
    with gr.Row(equal_height=True):
        model = gr.Dropdown(
            names.known_models(),
            value=names.EMBEDDED,
            allow_custom_value=True,
            label="Tokenizer and chat template of",
            scale=4,
            elem_id="data-model",
        )
        max_length = gr.Number(
            8192,
            precision=0,
            label="Max length (tokens)",
            scale=1,
            info="paper: 81920",
            elem_id="data-max-length",
        )
        evidence = gr.Checkbox(
            True, label="Locate answers' evidence", scale=1, info="slower on big files"
        )
    status = gr.HTML(elem_id="data-status")
    with gr.Tabs():
        with gr.Tab("Samples", id="data-samples"):
            tbl = data_table.build(opened)
            gr.Markdown("### Sample")
            smp = data_sample.build(opened, max_length, path)
        with gr.Tab("Statistics", id="data-stats"):
            sts = data_stats.build(opened, max_length)
        with gr.Tab("Mix & push", id="data-mix"):
            imported = data_mix.build(path)

    def follow_rows(event):
        """After the rows changed: table, validation, statistics and status follow."""
        event.success(
            user_errors(data_table.render),
            [opened, *tbl.inputs],
            tbl.outputs,
            show_progress="hidden",
        )
        sts.follow(event)
        event.success(status_html, [opened, max_length], status, show_progress="hidden")

    def open_chain(trigger, inputs):
        first = trigger(
            start,
            inputs,
            [opened, status, *tbl.reset_outputs, smp.index],
            show_progress_on=[status],
        )
        measured = first.success(
            index, [opened, max_length], [opened, status], show_progress_on=[status, tbl.problems]
        )
        smp.follow(measured)
        follow_rows(measured)

    open_chain(open_btn.click, [path, model, evidence])
    open_chain(imported.success, [path, model, evidence])
    open_chain(path.select, [path, model, evidence])
    open_chain(get_blocks_context().root_block.load, [path, model, evidence])
    uploaded = upload.upload(
        user_errors(lambda f: gr.update(choices=dataset_files(), value=str(import_upload(f)))),
        upload,
        path,
    )
    open_chain(uploaded.success, [path, model, evidence])

    @user_errors
    def remeasure(op, model_, with_evidence, max_len, progress=gr.Progress()):
        if op is None or not op.ready:
            return op, status_html(op, max_len)
        name = (model_ or names.EMBEDDED).strip()
        load_tokenizer(name)  # fails before the open file's state is touched
        op.model, op.with_evidence = name, bool(with_evidence)
        _measure(op, progress)
        return op, status_html(op, max_len)

    for trigger in (model.change, evidence.input):
        again = trigger(
            remeasure,
            [opened, model, evidence, max_length],
            [opened, status],
            show_progress_on=[status],
        )
        smp.follow(again)
        follow_rows(again)
    sts.follow(max_length.submit(status_html, [opened, max_length], status))
    sts.follow(max_length.blur(status_html, [opened, max_length], status))

    def bulk(keep: bool):
        def run(op, i, *filters):
            note = data_table.delete_rows(op, keep, *filters[:-1])  # all pages: not `page`
            return note, max(0, min(int(i or 0), len(op) - 1))

        return user_errors(run)

    for button, keep in ((tbl.delete_matching, False), (tbl.keep_matching, True)):
        deleted = button.click(
            bulk(keep), [opened, smp.index, *tbl.inputs], [tbl.bulk_note, smp.index]
        )
        smp.follow(deleted)
        follow_rows(deleted)

    for button, by in ((smp.prev, -1), (smp.after, 1)):
        stepped = button.click(
            user_errors(lambda op, i, *f, by=by: data_table.step(op, i, by, *f)),
            [opened, smp.index, *tbl.inputs[:-1]],
            smp.index,
            show_progress="hidden",
        )
        smp.follow(stepped)
    path.focus(lambda: gr.update(choices=dataset_files()), None, path, show_progress="hidden")
    table_pick = tbl.table.select(_picked, None, smp.index, show_progress="hidden")
    smp.follow(table_pick)
    for change in smp.changes:
        follow_rows(change)
    return DataTab(path, lambda event: open_chain(event.success, [path, model, evidence]))


def _picked(evt: gr.SelectData) -> int:
    """The sample a click on the table points at (the row's `#` cell)."""
    return int(evt.row_value[0])


if __name__ == "__main__":  # quick work on this tab alone: python -m ui.data.tab
    from ui.theme import style_kwargs

    with gr.Blocks(title="LongCtx Studio — Data") as demo:
        build()
    demo.launch(**style_kwargs())
