"""Data tab, what the sample view shows: turns with the long context folded, the sample as
the trainer renders it (loss-bearing tokens highlighted), a per-turn count table, the editor's
fields. Formatting only: `core.data.view` folds and cuts, `core.data.render` renders.
"""

from __future__ import annotations

import html

import gradio as gr

from core.data import edit, render, schema, view
from core.data.session import Opened
from core.errors import LongCtxError
from core.models.tokenizers import cached_tokenizer as tokenizer
from ui.common import optional_int

COLORS = {view.LOSS: "#10b981", view.CUT: "#ef4444", view.FOLDED: "#9ca3af"}
TURN_COLUMNS = ["turn", "role", "tokens", "loss tokens", "evidence depth %"]


def _turn_html(v: view.TurnView) -> str:
    body = html.escape(v.head)
    if v.hidden:
        body += (
            f'<span class="data-fold">[… {v.hidden:,} characters folded; tick '
            f"“Show long turns in full” …]</span>{html.escape(v.tail)}"
        )
    extra = ""
    if v.question:
        extra += f'<div class="data-turn-note">Question: {html.escape(v.question)}</div>'
    if v.evidence is not None:
        e = v.evidence
        extra += (
            f'<div class="data-turn-note">Evidence at <b>{e.depth:.1f} %</b> of the '
            f"context (covers {100 * e.score:.0f} % of the answer's words: "
            f"{html.escape(', '.join(e.words[:8]))})</div>"
        )
    return (
        f'<div class="data-turn role-{html.escape(v.role)}"><div class="data-turn-head">'
        f"<b>{v.index + 1} · {html.escape(v.role)}</b> · {v.chars:,} characters</div>"
        f'<div class="data-turn-body">{body}</div>{extra}</div>'
    )


def _turns(row, full: bool) -> tuple[str, list]:
    """HTML of the turns, and the turn views (for their evidence)."""
    size = 10**9 if full else 1500
    try:
        views = view.turn_views(row.record, head=size, tail=size) if row.record else []
    except (AttributeError, TypeError):  # turns that are not objects: the raw JSON says it all
        views = []
    if not views:
        raw = (row.raw or b"").decode("utf-8", "replace") or edit.to_json(row.record)
        return f'<pre class="data-turn-body">{html.escape(raw[:20000])}</pre>', []
    return "".join(_turn_html(v) for v in views), views


def _seen(op: Opened, record, max_length, overflow) -> tuple[str, list, list]:
    """(a note, highlighted pieces, per-turn rows) of the sample as the trainer renders it."""
    try:
        out = render.render_sample(
            tokenizer(op.model), record, optional_int(max_length), overflow or "drop"
        )
    except LongCtxError as exc:
        return f"Cannot render: {exc}", [], []
    note = f"{out.length:,} tokens, {out.loss_tokens:,} with loss (green)"
    if out.dropped:
        note += f" · ⚠️ longer than max length {out.max_length:,}: dropped from training"
    elif out.cut and out.overflow == "head":
        note += (
            f" · only the first {out.cut[0]:,} tokens and EOS are trained on: "
            f"{out.cut[1] - out.cut[0]:,} tokens cut from the end (red)"
        )
    elif out.cut:
        note += f" · {out.cut[1] - out.cut[0]:,} tokens cut from the middle (red)"
    rows = [list(t.values()) for t in out.per_turn()]
    return note, view.highlight(out, fold_chars=1200), rows


def show(op: Opened | None, index, full, overflow, max_length, turn=0) -> list:
    """Everything the sample view shows for sample `index`."""
    if op is None or not len(op):
        return [0, "No sample.", "", [], None, gr.update(choices=[], value=None), None, "", "", ""]
    i = min(max(0, int(index or 0)), len(op) - 1)
    row = op.row(i)
    record = row.record
    turns_html, views = _turns(row, bool(full))
    head = (
        f"**Sample {i}** · {'line ' + str(row.line) if row.line else 'new row'} · "
        f"id `{schema.sample_id(record, i)}` · {row.kind} · task {schema.task(record)}"
    )
    seen, rows = [], []
    if row.problems:
        head += "\n\n" + "\n".join(f"- ❌ {p}" for p in row.problems)
    else:
        note, seen, rows = _seen(op, record, max_length, overflow)
        depths = {v.index + 1: v.evidence.depth for v in views if v.evidence is not None}
        rows = [r + [depths.get(r[0], "")] for r in rows]
        head += f" · {note}"
    choices = [(f"{v.index + 1} · {v.role}", v.index) for v in views]
    t = min(int(turn or 0), max(len(choices) - 1, 0))
    role, content = turn_fields(record, t)
    json_text = (
        edit.to_json(record) if record is not None else (row.raw or b"").decode("utf-8", "replace")
    )
    history = op.session.history if op.session is not None else []
    return [
        i,
        head,
        turns_html,
        seen,
        {"headers": TURN_COLUMNS, "data": rows},
        gr.update(choices=choices, value=t if choices else None),
        role,
        content,
        json_text,
        history_md(history),
    ]


def turn_fields(record, t: int) -> tuple[str | None, str]:
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return None, record["text"]
    conv = schema.turns(record) if isinstance(record, dict) else []
    turn = conv[t] if t < len(conv) and isinstance(conv[t], dict) else {}
    return turn.get("role"), str(turn.get("content", ""))


def history_md(history: list[str]) -> str:
    if not history:
        return "No unsaved changes."
    return f"**{len(history)} unsaved change(s)**: " + "; ".join(history[-5:])
