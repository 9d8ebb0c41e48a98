"""Data tab, one sample: its turns (long context folded), what the model sees, and editing.

"What the model sees" is `core.data.render.render_sample` — the function the trainer calls —
shown as highlighted text (loss-bearing tokens marked) with a per-turn count table; the
formatting lives in ui/data/view.py. Each edit is one call on the session's
`core.data.edit.EditSession` (undo; Save is atomic, byte-preserving, with a backup).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from core.data import edit, schema
from core.errors import LongCtxError
from ui import access
from ui.common import user_errors
from ui.data.common import dataset_files, save_target
from ui.data.view import COLORS, TURN_COLUMNS, history_md, show, turn_fields


@dataclass
class SamplePanel:
    index: gr.Number
    prev: gr.Button
    after: gr.Button
    """Step through the samples the table's filters and search match (wired by ui/data/tab.py)."""
    view_inputs: list
    view_outputs: list
    changes: list
    """Events after which the rows changed (the table and statistics follow them)."""

    def follow(self, event) -> None:
        """Show the sample `index` points at once `event` succeeded."""
        event.success(
            user_errors(show), self.view_inputs, self.view_outputs, show_progress="hidden"
        )


def build(opened: gr.State, max_length: gr.Number, path: gr.Dropdown) -> SamplePanel:
    """Lay out the sample view and its editor; wire the edits and Save."""
    with gr.Row(elem_classes="data-bar"):
        index = gr.Number(
            0,
            precision=0,
            minimum=0,
            label="Sample #",
            min_width=110,
            scale=0,
            elem_id="data-index",
        )
        prev = gr.Button("◀", size="sm", min_width=40, scale=0, elem_id="data-prev")
        after = gr.Button("▶", size="sm", min_width=40, scale=0, elem_id="data-next")
        full = gr.Checkbox(label="Show long turns in full", scale=1)
        overflow = gr.Radio(
            [
                ("drop (paper's chats)", "drop"),
                ("head (paper's texts)", "head"),
                ("truncate middle", "truncate_middle"),
            ],
            value="drop",
            label="Longer than max length",
            scale=2,
        )
    head = gr.Markdown(elem_id="data-sample-head")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=360):
            turns = gr.HTML(label="Turns", elem_id="data-turns")
        with gr.Column(scale=1, min_width=360):
            seen = gr.HighlightedText(
                label="What the model sees",
                color_map=COLORS,
                show_legend=True,
                show_inline_category=False,
                elem_id="data-seen",
            )
            per_turn = gr.Dataframe(
                headers=TURN_COLUMNS,
                interactive=False,
                max_height=260,
                label="Per turn",
                elem_id="data-per-turn",
            )
    with gr.Accordion("Edit this sample", open=True, elem_id="data-edit"):
        with gr.Row(equal_height=True):
            turn = gr.Dropdown([], label="Turn", scale=1, elem_id="data-turn")
            role = gr.Dropdown(list(schema.ROLES), label="Role", scale=1, elem_id="data-role")
        content = gr.Textbox(label="Content", lines=6, max_lines=16, elem_id="data-content")
        with gr.Row():
            apply = gr.Button("Apply to this turn", variant="primary", elem_id="data-apply")
            add = gr.Button("Insert as a new turn after it")
            remove = gr.Button("Remove this turn")
            dup = gr.Button("Duplicate sample")
            delete = gr.Button("Delete sample", variant="stop")
            undo = gr.Button("Undo", elem_id="data-undo")
        with gr.Accordion("Raw JSON (fix a malformed row here)", open=False):
            raw = gr.Code(
                language="json", interactive=True, lines=6, max_lines=18, elem_id="data-raw"
            )
            apply_raw = gr.Button("Replace the sample with this JSON")
        history = gr.Markdown("No unsaved changes.", elem_id="data-history")
        with gr.Row(elem_classes="data-bar"):
            save_as = gr.Textbox(
                label="Save as (optional)",
                scale=3,
                elem_id="data-save-as",
                placeholder="empty: in place (files outside the workspace are "
                "copied to workspace/datasets)",
            )
            save = gr.Button("Save", variant="primary", scale=1, elem_id="data-save")
        saved = gr.Markdown(elem_id="data-saved")

    view_inputs = [opened, index, full, overflow, max_length]
    view_outputs = [index, head, turns, seen, per_turn, turn, role, content, raw, history]
    show_ = user_errors(show)
    for trigger in (index.submit, full.input, overflow.input, max_length.submit):
        trigger(show_, view_inputs, view_outputs, show_progress="hidden")

    @user_errors
    def pick_turn(op, i, t):
        return turn_fields(op.row(int(i)).record if op else None, int(t or 0))

    turn.input(pick_turn, [opened, index, turn], [role, content], show_progress="hidden")

    def editing(change):
        """A callback that applies one edit, re-measures the changed rows and shows the result."""

        @user_errors
        def run(op, i, full_, overflow_, max_len, t, role_, content_, raw_):
            session, i, t = op.edits(), int(i or 0), int(t or 0)
            i, t = change(session, i, t, role_, content_, raw_)
            op.changed()
            return show(op, i, full_, overflow_, max_len, t)

        return run

    edits = {
        apply: _apply,
        add: _insert,
        remove: _remove,
        dup: _duplicate,
        delete: _delete,
        undo: _undo,
        apply_raw: _replace_json,
    }
    changes = [
        button.click(editing(change), [*view_inputs, turn, role, content, raw], view_outputs)
        for button, change in edits.items()
    ]

    @user_errors
    def do_save(
        request: gr.Request, profile: gr.OAuthProfile | None, op, i, name, progress=gr.Progress()
    ):
        access.require_owner(request, profile, "Saving a dataset")
        session = op.edits()
        target, why = save_target(session.source, name)
        result = session.save(target)
        op.source, op.spec = session.source, str(result.path)
        op.measure(progress=lambda d, t: progress((d, t), desc="measuring the saved file"))
        op.version += 1
        message = f"✅ Saved {result.rows:,} rows to `{result.path}`"
        message += f" ({why})" if why else ""
        message += f"; the previous version is kept as `{result.backup}`" if result.backup else ""
        return (
            message,
            gr.update(choices=dataset_files(), value=op.spec),
            history_md(session.history),
        )

    saving = save.click(
        do_save, [opened, index, save_as], [saved, path, history], show_progress_on=[saved]
    )
    changes.append(saving)
    return SamplePanel(index, prev, after, view_inputs, view_outputs, changes)


# One edit each: (session, sample, turn, role, content, raw JSON) -> the sample and turn to show.


def _apply(s: edit.EditSession, i: int, t: int, role, content, raw) -> tuple[int, int]:
    record = s.record(i)
    if isinstance(record, dict) and "text" in record and "conversations" not in record:
        s.set_text(i, content)
    else:
        s.set_turn(i, t, content=content, role=role or None)
    return i, t


def _insert(s: edit.EditSession, i: int, t: int, role, content, raw) -> tuple[int, int]:
    s.add_turn(i, role or "user", content, t + 1)
    return i, t + 1


def _remove(s: edit.EditSession, i: int, t: int, role, content, raw) -> tuple[int, int]:
    s.remove_turn(i, t)
    return i, max(0, t - 1)


def _duplicate(s: edit.EditSession, i: int, t: int, role, content, raw) -> tuple[int, int]:
    return s.duplicate(i), t


def _delete(s: edit.EditSession, i: int, t: int, role, content, raw) -> tuple[int, int]:
    s.delete(i)
    return max(0, min(i, len(s) - 1)), 0


def _undo(s: edit.EditSession, i: int, t: int, role, content, raw) -> tuple[int, int]:
    if s.undo() is None:
        raise LongCtxError("nothing to undo")
    return max(0, min(i, len(s) - 1)), t


def _replace_json(s: edit.EditSession, i: int, t: int, role, content, raw) -> tuple[int, int]:
    s.set_json(i, raw or "")
    return i, t
