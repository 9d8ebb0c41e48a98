"""Chat tab: talk to the base or the extended model over a long document, one or two at a time.

Layout: model and sampling settings on the left; the document and the context budget
(ui/chat/context.py), then the conversation, on the right. In side-by-side mode the same prompt
goes to a second model (base vs tuned) and both replies stream at once. Replies can be edited by
hand, and a conversation kept as a training sample. All decisions live in `core.chat`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import chat as core_chat
from core import workspace
from core.data import io
from core.hosting import space
from core.models import names
from core.models.generation import SamplingParams
from ui import access, targets
from ui.chat import context
from ui.common import optional_int, user_errors
from ui.data.common import writable_path

# Stop requests, per browser session and side: the Stop button sets the event, the streaming
# loop checks it between tokens (cleaner than cancelling the worker thread mid-forward).
_cancel_events: dict[tuple[str, str], threading.Event] = {}


def _params(max_tokens, temperature, top_p, seed, stop) -> SamplingParams:
    stops = [s for s in (stop or "").replace(",", "\n").splitlines() if s.strip()]
    return SamplingParams(
        max_tokens=int(max_tokens),
        temperature=float(temperature),
        top_p=float(top_p),
        stop=stops,
        seed=optional_int(seed),
    )


@dataclass
class ChatTab:
    """What the shell needs to bring a browser's conversation back when the page loads."""

    history: gr.BrowserState
    chats: tuple[gr.Chatbot, gr.Chatbot]
    budget_after: Callable[[Any], Any]
    """Chains a refresh of the context budget after an event."""
    sides: tuple[targets.TargetControls, targets.TargetControls]
    """The controls of model A and model B."""
    compare: gr.Checkbox
    """Side by side: the prompt also goes to the second target."""
    kept: gr.State
    """The dataset file the last kept conversation went to."""
    to_data: gr.Button
    """Opens that file in the Data tab (wired by the shell)."""

    def restore_on(self, tab: gr.Tab) -> None:
        # On opening the tab rather than on page load: at load time the browser has not yet
        # handed the stored value over. The budget follows, so it counts the restored turns.
        restored = tab.select(
            lambda saved: tuple(saved or ([], [])),
            self.history,
            list(self.chats),
            show_progress="hidden",
        )
        self.budget_after(restored)


def build(default_model: str = names.EMBEDDED) -> ChatTab:
    """Lay out the Chat tab inside the current Blocks and wire its events."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=360):  # room for a model's name in the dropdown
            target_a = targets.target_controls(
                "chat-target-a", default_model, title="Model", tokenizer=False
            )
            compare = gr.Checkbox(label="Side by side: also send each prompt to a second model")
            with gr.Column(visible=False) as b_box:
                target_b = targets.target_controls(
                    "chat-target-b", default_model, title="Model B", tokenizer=False
                )
            system = gr.Textbox(label="System prompt", lines=2, placeholder="optional")
            with gr.Accordion("Sampling", open=False):
                max_tokens = gr.Slider(
                    16, 4096, value=512, step=16, label="Max new tokens", elem_id="chat-max-tokens"
                )
                temperature = gr.Slider(
                    0, 2, value=0.7, step=0.05, label="Temperature", info="0 = greedy"
                )
                top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p")
                seed = gr.Number(label="Seed", precision=0, info="0 or empty: random")
                stop = gr.Textbox(
                    label="Stop strings", placeholder="one per line or comma-separated"
                )
        with gr.Column(scale=5):
            ctx = context.build()
            with gr.Row():
                # Editable: a reply corrected by hand makes a better training sample (Keep, below).
                chat_a = gr.Chatbot(
                    label="Model", height=460, elem_id="chat-a", buttons=["copy"], editable="all"
                )
                chat_b = gr.Chatbot(
                    label="Model B",
                    height=460,
                    visible=False,
                    elem_id="chat-b",
                    buttons=["copy"],
                    editable="all",
                )
            with gr.Row():
                stats_a = gr.Markdown(elem_classes="chat-stats")
                stats_b = gr.Markdown(elem_classes="chat-stats", visible=False)
            message = gr.Textbox(
                show_label=False,
                lines=1,
                max_lines=8,
                elem_id="chat-input",
                placeholder="Ask something (Enter sends, Shift+Enter: new line)",
            )
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="chat-send")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="chat-stop")
                clear = gr.Button("Clear")
            with gr.Accordion("Keep this conversation as a training sample", open=False):
                with gr.Row(equal_height=True):
                    keep_file = gr.Textbox(
                        "chat-samples.jsonl",
                        label="Dataset file",
                        scale=3,
                        info="under workspace/datasets; added at its end",
                        elem_id="chat-keep-file",
                    )
                    keep = gr.Button("Add conversation A", scale=1, elem_id="chat-keep")
                kept = gr.Markdown(elem_id="chat-kept")
                to_data = gr.Button(
                    "Open the dataset in the Data tab", size="sm", elem_id="chat-to-data"
                )
    # The conversation lives in the browser (local storage), so a reload or a restart of the
    # app brings it back; it never touches the server's disk.
    history = gr.BrowserState([[], []], storage_key="longctx-chat-history")
    budget_after = context.wire(
        ctx, message, system, max_tokens, compare, (chat_a, chat_b), (target_a, target_b)
    )
    settings = [system, ctx.document, max_tokens, temperature, top_p, seed, stop]
    _wire(
        compare,
        b_box,
        settings,
        message,
        (chat_a, stats_a),
        (chat_b, stats_b),
        (target_a, target_b),
        send,
        stop_btn,
        clear,
        history,
        budget_after,
    )

    @user_errors
    def keep_sample(
        request: gr.Request, profile: gr.OAuthProfile | None, hist, system_, doc, name, *target
    ):
        access.require_owner(request, profile, "Saving a dataset")
        record = core_chat.as_sample(
            hist, system_ or "", doc or "", targets.to_chat_target(*target).label
        )
        path = writable_path(name)
        line = io.append_jsonl(path, record)
        turns = len(record["conversations"])
        return (
            f"✅ Added as line {line:,} of `{workspace.shown(path)}` ({turns} turns).",
            str(path),
        )

    kept_path = gr.State("")
    keep.click(
        keep_sample,
        [chat_a, system, ctx.document, keep_file, *target_a.inputs()],
        [kept, kept_path],
    )
    return ChatTab(
        history, (chat_a, chat_b), budget_after, (target_a, target_b), compare, kept_path, to_data
    )


def _wire(
    compare,
    b_box,
    settings,
    message,
    side_a,
    side_b,
    sides,
    send,
    stop_btn,
    clear,
    history,
    budget_after,
) -> None:
    """Wire the conversation: send, stream both sides, stop, clear, edits kept."""
    (chat_a, stats_a), (chat_b, stats_b) = side_a, side_b
    target_a, target_b = sides
    system, document, max_tokens, temperature, top_p, seed, stop = settings

    def toggle_compare(on):
        return [gr.update(visible=on)] * 3

    compare.change(toggle_compare, compare, [b_box, chat_b, stats_b], show_progress="hidden")

    def start(msg, hist_a, hist_b, compare_):
        if not (msg or "").strip():
            raise gr.Error("Write a message first.", print_exception=False)
        turn = {"role": "user", "content": msg}
        return "", hist_a + [turn], (hist_b + [turn]) if compare_ else hist_b

    def respond(side: str):
        @user_errors
        def run(
            request: gr.Request,
            profile: gr.OAuthProfile | None,
            hist,
            system_,
            doc,
            max_new,
            temp,
            top_p_,
            seed_,
            stop_,
            compare_,
            *target,
        ):
            if side == "B" and not compare_:
                return
            if not hist or hist[-1]["role"] != "user":
                return
            params = _params(max_new, temp, top_p_, seed_, stop_)
            tgt = targets.to_chat_target(*target)
            if tgt.kind != core_chat.LOCAL:
                # An endpoint may bill the owner's key, and would make the app a proxy.
                access.require_owner(request, profile, "Chatting through an API endpoint")
            messages = core_chat.build_messages("", hist, system_ or "", doc or "")
            cancel = threading.Event()
            _cancel_events[(request.session_hash or "", side)] = cancel
            hist = hist + [{"role": "assistant", "content": ""}]
            start_t, last = time.monotonic(), None
            if tgt.kind == core_chat.LOCAL and space.zero_gpu():
                # The GPU worker cannot share an Event; Stop ends this generator instead.
                replies = _reply_on_gpu(tgt, messages, params)
            else:
                replies = core_chat.stream_reply(tgt, messages, params, cancel)
            for chunk in core_chat.coalesced(replies):
                if chunk.read is not None:  # a long prompt is being read: say how far
                    yield hist, _reading_line(chunk, time.monotonic() - start_t)
                    continue
                hist[-1]["content"] += chunk.text
                last = chunk
                yield hist, gr.update()
            elapsed = max(time.monotonic() - start_t, 1e-6)
            yield hist, _stats_line(last, elapsed)

        return run

    sampling = [system, document, max_tokens, temperature, top_p, seed, stop, compare]

    def keep(hist_a, hist_b):
        return [hist_a or [], hist_b or []]

    for trigger in (send.click, message.submit):
        started = trigger(start, [message, chat_a, chat_b, compare], [message, chat_a, chat_b])
        for side, chat, stats, target in (
            ("A", chat_a, stats_a, target_a),
            ("B", chat_b, stats_b, target_b),
        ):
            answered = started.then(
                respond(side), [chat, *sampling, *target.inputs()], [chat, stats]
            )
            answered.then(keep, [chat_a, chat_b], history, show_progress="hidden")
            budget_after(answered)

    # A message edited by hand is kept in the browser like a reply.
    for chat in (chat_a, chat_b):
        chat.edit(keep, [chat_a, chat_b], history, show_progress="hidden")

    def stop_all(request: gr.Request):
        for side in ("A", "B"):
            event = _cancel_events.get((request.session_hash or "", side))
            if event is not None:
                event.set()

    stop_btn.click(stop_all, None, None, show_progress="hidden")
    budget_after(
        clear.click(
            lambda: ([], [], "", "", [[], []]), None, [chat_a, chat_b, stats_a, stats_b, history]
        )
    )


@space.gpu(duration=120)
def _reply_on_gpu(
    target: core_chat.ChatTarget, messages: list[dict[str, str]], params: SamplingParams
):
    """A local model's reply while ZeroGPU lends the GPU (module level: ZeroGPU needs that)."""
    yield from core_chat.stream_reply(target, messages, params)


def _reading_line(chunk, elapsed: float) -> str:
    """Progress through a long prompt, with the time left at the pace so far."""
    left = elapsed * (chunk.prompt_tokens - chunk.read) / max(chunk.read, 1)
    return (
        f"Reading the prompt: {chunk.read:,} / {chunk.prompt_tokens:,} tokens "
        f"({100 * chunk.read / chunk.prompt_tokens:.0f}%) · about {left:.0f} s left"
    )


def _stats_line(chunk, elapsed: float) -> str:
    if chunk is None:
        return ""
    speed = chunk.completion_tokens / elapsed
    reason = {"stop": "finished", "length": "hit max tokens", "cancelled": "stopped"}.get(
        chunk.finish_reason or "", chunk.finish_reason or ""
    )
    return (
        f"{chunk.prompt_tokens:,} prompt + {chunk.completion_tokens:,} new tokens · "
        f"{speed:.1f} tokens/s · {reason}"
    )


if __name__ == "__main__":  # quick work on this tab alone: python -m ui.chat.tab
    with gr.Blocks(title="LongCtx Studio — Chat") as demo:
        build()
    demo.launch()
