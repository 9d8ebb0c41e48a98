"""Chat tab, part 2: the context — the long document and the conversation's token budget.

The document is uploaded (text, Markdown, PDF, EPUB, HTML: `core.text.documents`) or pasted, and can
be cut in its middle to fit the window. The budget counts what Send would put before each model
(the whole conversation, the document and the message being typed) against that model's
window, for one model or for both side by side. All counting lives in `core.chat`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import chat as core_chat
from core.errors import LongCtxError
from core.text import documents
from ui import targets
from ui.common import user_errors


@dataclass
class Context:
    doc_file: gr.File
    document: gr.Textbox
    trim: gr.Button
    budget: gr.HTML


def build() -> Context:
    """The document box (in an accordion) and the budget bar below it."""
    with gr.Accordion("Long document (goes before your first message)", open=False):
        doc_file = gr.File(
            label="Upload .txt, .md, .pdf, .epub or .html",
            file_types=list(documents.SUFFIXES),
            type="filepath",
            height=130,
            elem_id="chat-doc-file",
        )
        document = gr.Textbox(
            label="Document text",
            lines=5,
            max_lines=12,
            placeholder="…or paste it here",
            elem_id="chat-doc-text",
        )
        trim = gr.Button("Trim its middle to fit the window", size="sm", elem_id="chat-doc-trim")
    budget = gr.HTML(elem_id="chat-budget")
    return Context(doc_file, document, trim, budget)


def wire(ctx: Context, message, system, max_tokens, compare, chats, sides) -> Callable[[Any], Any]:
    """Wire the upload, the trim and the budget refreshes; returns `budget_after(event)`, which
    chains a budget refresh after another event (a reply, Clear, opening the tab)."""
    target_a, target_b = sides
    n_target = len(target_a.inputs())
    inputs = [
        message,
        system,
        ctx.document,
        max_tokens,
        compare,
        *chats,
        *target_a.inputs(),
        *target_b.inputs(),
    ]

    def each_side(compare_, hist_a, hist_b, values) -> Iterator[tuple[str, Any, Any, Any]]:
        """(label, history, chat target, endpoint window) of A, and of B side by side."""
        for label, hist, vals in (
            ("A", hist_a, values[:n_target]),
            ("B", hist_b, values[n_target:]),
        ):
            if label == "B" and not compare_:
                continue
            target = targets.to_chat_target(*vals)
            window = None
            if target.kind == core_chat.ENDPOINT:
                window = core_chat.endpoint_window(
                    target.base_url, target.api_key, target.endpoint_model
                )
            yield label, hist, target, window

    @user_errors
    def show_budget(msg, system_, doc, max_new, compare_, hist_a, hist_b, *values):
        rows = []
        for label, hist, target, window in each_side(compare_, hist_a, hist_b, values):
            # The whole conversation goes to the model with each message, so it all counts.
            messages = core_chat.pending_messages(msg or "", hist, system_ or "", doc or "")
            name = f"{label} · {target.label}" if compare_ else target.label  # which side is which
            rows.append((name, core_chat.budget(target, messages, int(max_new), window)))
        return _budget_html(rows)

    @user_errors
    def trim_document(msg, system_, doc, max_new, compare_, hist_a, hist_b, *values):
        """The document cut in the middle to fit every model it goes to (both, side by side)."""
        if not (doc or "").strip():
            raise LongCtxError("no document to trim")
        cut_total = 0
        for _, hist, target, window in each_side(compare_, hist_a, hist_b, values):
            doc, cut = core_chat.fit_document(
                target, msg or "", hist, system_ or "", doc, int(max_new), window
            )
            cut_total += cut
        if not cut_total:
            gr.Info("The document fits the window already.")
        else:  # why it cut that much: the answer's room is kept free too
            gr.Info(
                f"Cut {cut_total:,} tokens from the middle of the document; {int(max_new):,} "
                "stay free for the answer (Sampling → Max new tokens)."
            )
        return doc

    @user_errors
    def load_document(path, progress=gr.Progress()):
        if not path:
            return gr.update()
        return core_chat.read_document(
            path, progress=lambda done, total: progress((done, total), desc="Reading", unit="pages")
        )

    for trigger in (
        message.change,
        ctx.document.change,
        system.change,
        max_tokens.release,
        compare.change,
        target_a.model.change,
        target_a.window.change,
        target_a.adapter.blur,
        target_b.model.change,
        target_b.window.change,
        target_b.adapter.blur,
    ):
        trigger(show_budget, inputs, ctx.budget, show_progress="hidden", trigger_mode="always_last")
    ctx.trim.click(trim_document, inputs, ctx.document)
    ctx.doc_file.upload(load_document, ctx.doc_file, ctx.document)

    def budget_after(event: Any) -> Any:
        return event.then(show_budget, inputs, ctx.budget, show_progress="hidden")

    return budget_after


def _budget_html(labels_budgets: list[tuple[str, core_chat.Budget]]) -> str:
    rows = []
    for label, b in labels_budgets:
        pct = min(100.0, 100 * b.fraction)
        state = "over" if b.over else ("warn" if pct > 80 else "ok")
        rows.append(
            f'<div class="ctx-budget {state}"><span class="ctx-label">{label}</span>'
            f'<div class="ctx-bar"><div style="width:{pct:.1f}%"></div></div>'
            f'<span class="ctx-text">{b.message()}</span></div>'
        )
    return "".join(rows)
