"""Data tab, mixing: several files with counts or ratios and a seed -> one JSONL in the
workspace; importing another format (Alpaca / LongAlpaca, ShareGPT, OpenAI messages) into ours;
holding samples out of a file for evaluation; pushing a file to a Hugging Face dataset repo.

The parts table becomes a `core.data.mix.MixSpec` (which refuses bad amounts with every reason
at once); `mix.build_mix` writes it atomically. The Hub token is passed through to the upload
and never kept: the box is cleared once the push is done.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from core import workspace
from core.data import convert, mix
from core.errors import LongCtxError
from ui import access
from ui.common import optional_int, user_errors
from ui.data.common import dataset_files, resolve_spec, writable_path

PART_COLUMNS = ["file", "count", "ratio"]


def _amount(value, kind, file):
    if value in (None, "") or str(value).strip() in ("", "nan"):
        return None
    try:
        number = kind(float(value))
    except (TypeError, ValueError):
        name, what = ("count", "a whole number") if kind is int else ("ratio", "a share, 0 to 1")
        raise LongCtxError(
            f"{file}: the {name} {value!r} is not a number; give {what}, or leave it empty"
        ) from None
    return number or None


def to_spec(rows, output, total, seed, shuffle) -> mix.MixSpec:
    """Parts table rows + settings -> a MixSpec (paths checked against the allowed roots)."""
    parts = [
        mix.MixPart(
            resolve_spec(str(row[0])),
            count=_amount(row[1], int, row[0]),
            ratio=_amount(row[2], float, row[0]),
        )
        for row in (rows or [])
        if row and str(row[0] or "").strip()
    ]
    return mix.MixSpec(
        parts=parts,
        output=str(writable_path(output)),
        total=optional_int(total),
        seed=int(seed or 0),
        shuffle=bool(shuffle),
    )


def report_md(report: mix.MixReport) -> str:
    lines = [f"✅ Wrote **{report.rows:,} samples** to `{workspace.shown(report.output)}`"]
    if report.backup:
        lines[0] += f" (previous version kept as `{workspace.shown(report.backup)}`)"
    lines += [
        f"- `{workspace.shown(p.path)}`: took {p.taken:,} of {p.valid:,} valid rows "
        f"({p.rows:,} in all)"
        for p in report.parts
    ]
    skipped = report.skipped(workspace.shown)
    if skipped:
        lines.append(f"\nLeft out {len(skipped):,} malformed row(s):")
        lines += [f"- {s}" for s in skipped[:200]]
    return "\n".join(lines)


def hold_out_md(report: mix.HoldOutReport) -> str:
    lines = [
        f"✅ Held out **{report.eval_rows:,} chat samples** in `{workspace.shown(report.eval)}`; "
        f"**{report.train_rows:,} samples** left to train on in `{workspace.shown(report.train)}`.",
        "Train on the first file; ask the second in Evaluate → *Held-out samples*, for the base "
        "model and for the tuned one, and compare the two.",
    ]
    if report.part.malformed:
        lines.append(f"\nLeft out {len(report.part.malformed):,} malformed row(s):")
        lines += [f"- {p}" for p in report.part.malformed[:200]]
    return "\n".join(lines)


def import_md(report: convert.ImportReport) -> str:
    kinds = ", ".join(f"{n:,} {fmt}" for fmt, n in sorted(report.formats.items()))
    lines = [
        f"✅ Imported **{report.imported:,} of {report.rows:,} rows** ({kinds}) to "
        f"`{workspace.shown(report.output)}`; it is open above."
    ]
    if report.malformed:
        lines.append(f"\nSkipped {len(report.malformed):,} row(s):")
        lines += [f"- {p}" for p in report.malformed[:200]]
    return "\n".join(lines)


def _import_panel(path: gr.Dropdown) -> Any:
    """The Import accordion; returns its event, after which the Data tab opens the result."""
    with gr.Accordion("Import another format", open=False):
        gr.Markdown(
            "Convert Alpaca / LongAlpaca (instruction, input, output), ShareGPT "
            "(from/value) or OpenAI (messages) rows into conversations; other keys stay "
            "as metadata. Rows that do not convert are skipped and listed by line. The "
            "paper's LongAlpaca-12k comes this way."
        )
        with gr.Row(equal_height=True):
            file = gr.Dropdown(
                dataset_files(),
                label="File",
                allow_custom_value=True,
                scale=3,
                info="upload it with Upload… above, or type hub:org/name",
                elem_id="data-import-file",
            )
            fmt = gr.Dropdown(
                list(convert.FORMATS), value="auto", label="Format", elem_id="data-import-format"
            )
            out = gr.Textbox(
                label="Output (in workspace/datasets)",
                elem_id="data-import-out",
                placeholder="empty: the input's name, .jsonl",
            )
        go = gr.Button("Import", elem_id="data-import")
        report = gr.Markdown(elem_id="data-import-report")
    file.focus(lambda: gr.update(choices=dataset_files()), None, file, show_progress="hidden")

    @user_errors
    def do_import(
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        file_,
        fmt_,
        out_,
        progress=gr.Progress(),
    ):
        access.require_owner(request, profile, "Importing a dataset")
        spec = resolve_spec(file_)
        target = writable_path(out_) if (out_ or "").strip() else None
        target = target or convert.default_output(spec, workspace.subdir("datasets"))
        progress(0.1, desc="converting")
        done = convert.import_file(spec, target, fmt_ or "auto")
        return import_md(done), gr.update(choices=dataset_files(), value=str(done.output))

    return go.click(do_import, [file, fmt, out], [report, path], show_progress_on=report)


def build(path: gr.Dropdown) -> Any:
    """Lay out the Mix & push panel and wire it; returns the import event (the Data tab opens
    the imported file after it)."""
    gr.Markdown(
        "Take each file whole, as a **count**, or as a **ratio** of the mixture "
        "(the paper: synthetic QA + 5K RedPajama + LongAlpaca; Generate's *Text from "
        "documents* stands in for RedPajama offline). Malformed rows are "
        "left out and listed."
    )
    with gr.Row(elem_classes="data-bar"):
        pick = gr.Dropdown(
            dataset_files(), label="File", allow_custom_value=True, scale=4, elem_id="data-mix-pick"
        )
        add = gr.Button("Add as a part", scale=1)
    parts = gr.Dataframe(
        headers=PART_COLUMNS,
        datatype=["str", "number", "number"],
        column_count=3,
        type="array",
        interactive=True,
        elem_id="data-mix-parts",
        label="Parts (count or ratio; neither: every valid row)",
    )
    with gr.Row(equal_height=True):
        total = gr.Number(
            label="Total samples", precision=0, info="for ratios; 0: as many as the files allow"
        )
        seed = gr.Number(42, label="Seed", precision=0)
        shuffle = gr.Checkbox(True, label="Shuffle the parts together")
        output = gr.Textbox(
            "longctx-mix.jsonl",
            label="Output (in workspace/datasets)",
            info="name it in the Train tab's data sources",
            elem_id="data-mix-output",
        )
    build_btn = gr.Button("Build the mixture", variant="primary", elem_id="data-mix-build")
    report = gr.Markdown(elem_id="data-mix-report")
    imported = _import_panel(path)
    with gr.Accordion("Hold out samples for evaluation", open=False):
        gr.Markdown(
            "Split a file in two: chat samples the model will not train on, to ask in "
            "Evaluate → *Held-out samples*, and the rest to train on. Text samples "
            "always stay in training."
        )
        with gr.Row(equal_height=True):
            split_file = gr.Dropdown(
                dataset_files(),
                label="File",
                allow_custom_value=True,
                scale=3,
                elem_id="data-split-file",
            )
            held = gr.Number(
                50,
                label="Samples to hold out",
                elem_id="data-split-count",
                info="a count (50), or a share of the chat samples (0.05)",
            )
            split_seed = gr.Number(42, label="Seed", precision=0)
        split_btn = gr.Button("Hold out", elem_id="data-split")
        split_report = gr.Markdown(elem_id="data-split-report")
    with gr.Accordion("Push to the Hugging Face Hub", open=False):
        with gr.Row(equal_height=True):
            push_file = gr.Dropdown(dataset_files(), label="File", allow_custom_value=True)
            repo = gr.Textbox(label="Dataset repo", placeholder="user/my-long-context-set")
            token = gr.Textbox(
                label="Hub token (write access; never stored)",
                type="password",
                placeholder="empty: $HF_TOKEN",
            )
            private = gr.Checkbox(True, label="Private")
        push = gr.Button("Push")
        pushed = gr.Markdown()

    def add_part(file, rows):
        if not file:
            raise gr.Error("Pick a file first.", print_exception=False)
        rows = [r for r in (rows or []) if r and str(r[0] or "").strip()]
        return rows + [[file, None, None]]

    add.click(add_part, [pick, parts], parts)
    # Files saved, uploaded, split or mixed since the page loaded.
    for box in (pick, push_file, split_file):
        box.focus(lambda: gr.update(choices=dataset_files()), None, box, show_progress="hidden")

    @user_errors
    def do_mix(
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        rows,
        output_,
        total_,
        seed_,
        shuffle_,
        progress=gr.Progress(),
    ):
        access.require_owner(request, profile, "Writing a mixed dataset")
        spec = to_spec(rows, output_, total_, seed_, shuffle_)
        done = mix.build_mix(spec, progress=lambda d, t: progress((d, t), desc="writing"))
        files = dataset_files()
        return (
            report_md(done),
            gr.update(choices=files),
            gr.update(choices=files, value=str(done.output)),
        )

    # Progress and errors show on the report, not on the Dataset box at the top of the tab.
    build_btn.click(
        do_mix,
        [parts, output, total, seed, shuffle],
        [report, path, push_file],
        show_progress_on=report,
    )

    @user_errors
    def do_split(
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        file,
        count,
        seed_,
        progress=gr.Progress(),
    ):
        access.require_owner(request, profile, "Writing a split dataset")
        source = resolve_spec(file)
        train, held = mix.split_names(source, workspace.subdir("datasets"))
        share = count is not None and 0 < count < 1
        spec = mix.HoldOut(
            source,
            train_output=str(train),
            eval_output=str(held),
            count=None if share or not count else count,
            ratio=count if share else None,
            seed=int(seed_ or 0),
        )
        done = mix.hold_out(spec, progress=lambda d, t: progress((d, t), desc="writing"))
        files = dataset_files()
        return hold_out_md(done), gr.update(choices=files), gr.update(choices=files)

    split_btn.click(
        do_split,
        [split_file, held, split_seed],
        [split_report, path, split_file],
        show_progress_on=split_report,
    )

    @user_errors
    def do_push(
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        file,
        repo_,
        token_,
        private_,
        progress=gr.Progress(),
    ):
        access.require_owner(request, profile, "Pushing to the Hub")
        if not file:
            raise LongCtxError("pick the file to push")
        progress(0.2, desc="uploading")
        url = mix.push_to_hub(
            resolve_spec(file), (repo_ or "").strip(), token=token_ or None, private=bool(private_)
        )
        return f"✅ Pushed to {url}", ""

    push.click(do_push, [push_file, repo, token, private], [pushed, token])
    return imported
