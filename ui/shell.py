"""The app shell: header, one tab per stage of the recipe, launch settings.

Tabs appear here as their features land; there are no placeholder tabs.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import gradio as gr

from core import workspace
from core.errors import LongCtxError
from core.hosting import space
from core.models import names
from core.train import export, runs
from core.train.config import TrainConfig
from ui import access, targets
from ui.chat import tab as chat
from ui.common import user_errors
from ui.data import tab as data
from ui.evaluate import tab as evaluate
from ui.experiments import tab as experiments
from ui.generate import tab as generate
from ui.theme import style_kwargs
from ui.train import tab as train

TITLE = "LongCtx Studio"
HEADER = """
<div id="lc-header">
  <h1>LongCtx Studio</h1>
  <p>Extend a causal LM's context window the way
  <em>Extending Llama-3's Context Ten-Fold Overnight</em> did (8K → 80K with QLoRA and a few
  thousand synthetic long-context samples) — for any model, from data to chat.</p>
</div>
"""


def build_app(model: str = names.EMBEDDED) -> gr.Blocks:
    """The whole app as a Blocks object (not launched)."""
    with gr.Blocks(title=TITLE) as demo:
        gr.HTML(HEADER)
        if space.restricted():
            with gr.Row(elem_id="lc-access"):
                note = gr.Markdown(elem_id="access-note")
                if access.oauth_configured():
                    gr.LoginButton(size="sm", scale=0)
            demo.load(access.banner, None, note)
        with gr.Tabs() as tabs:
            with gr.Tab("Data", id="data"):
                data_tab = data.build()
            with gr.Tab("Generate", id="generate"):
                generated = generate.build()
                to_data = gr.Button("Open the result in the Data tab", elem_id="gen-to-data")
            with gr.Tab("Train", id="train"):
                train_tab = train.build()
            with gr.Tab("Evaluate", id="evaluate"):
                eval_tab = evaluate.build()
            with gr.Tab("Chat", id="chat") as chat_page:
                chat_tab = chat.build(default_model=model)
            with gr.Tab("Experiments", id="experiments"):
                experiments.build()
        _wire_to_data(generated.output, to_data, data_tab, tabs)
        _wire_to_data(
            chat_tab.kept,
            chat_tab.to_data,
            data_tab,
            tabs,
            "Nothing kept yet: add the conversation to a dataset first.",
        )
        _wire_run_handoffs(train_tab, eval_tab, chat_tab, tabs)
        chat_tab.restore_on(chat_page)
    return demo


def _wire_to_data(
    generated: Any,
    button: gr.Button,
    data_tab: data.DataTab,
    tabs: gr.Tabs,
    nothing: str = "Nothing generated yet: run a job first.",
) -> None:
    """A file made in another tab (Generate's output, Chat's kept conversations) opens in the
    Data tab: the path moves over, the tab switches, it opens."""

    def hand_over(path: str):
        if not path:
            raise gr.Error(nothing, print_exception=False)
        return gr.update(value=path), gr.Tabs(selected="data")

    data_tab.open_after(button.click(hand_over, generated, [data_tab.path, tabs]))


def _wire_run_handoffs(
    panel: train.TrainTab, eval_tab: evaluate.EvaluateTab, chat_tab: chat.ChatTab, tabs: gr.Tabs
) -> None:
    """From a trained run to the next step of the recipe: Evaluate puts its adapter under test
    (asking the run's held-out samples when it measured their loss); Chat sets its base beside
    it (side by side, base vs. tuned). The adapter brings its RoPE."""

    def adapter_and_config(run_id: str | None) -> tuple[str, TrainConfig]:
        if not run_id:
            raise LongCtxError("pick a run first")
        adapter = export.find_adapter(run_id)  # says so when the run has none yet
        return str(adapter), TrainConfig.from_yaml(runs.run_path(run_id) / "config.yaml")

    def to_evaluate(run_id):
        adapter, config = adapter_and_config(run_id)
        # A run that measured a held-out loss has the questions to ask it ready.
        held = config.eval_data
        task = ("samples", gr.update(value=held)) if held else (gr.skip(), gr.skip())
        return [*targets.pick_local(adapter), *task, gr.Tabs(selected="evaluate")]

    def to_chat(run_id):
        adapter, config = adapter_and_config(run_id)
        # A new comparison: answers of other models must not stay in (and feed) the history.
        empty = [[], [], [[], []]]
        return [
            *targets.pick_local(config.model),
            *targets.pick_local(adapter),
            True,
            *empty,
            gr.Tabs(selected="chat"),
        ]

    side_a, side_b = chat_tab.sides
    panel.to_evaluate.click(
        user_errors(to_evaluate),
        panel.run,
        [*eval_tab.target.local_outputs(), eval_tab.task, eval_tab.dataset, tabs],
    )
    # The budget is counted again once the hand-off is in place: a refresh started before it
    # (by the reply of an earlier conversation, say) may otherwise land last, with the old models.
    handed = panel.to_chat.click(
        user_errors(to_chat),
        panel.run,
        [
            *side_a.local_outputs(),
            *side_b.local_outputs(),
            chat_tab.compare,
            *chat_tab.chats,
            chat_tab.history,
            tabs,
        ],
    )
    chat_tab.budget_after(handed)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """`user:password` (from --auth or LONGCTX_AUTH) -> a tuple for gradio."""
    auth = auth or os.environ.get("LONGCTX_AUTH")
    if not auth:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise LongCtxError("auth must look like user:password")
    return user, password


def launch(
    model: str = names.EMBEDDED,
    host: str = "127.0.0.1",
    port: int = 7860,
    allow: list[str] | None = None,
    auth: str | None = None,
    share: bool = False,
) -> None:
    """Build and serve the app. Refuses a public address or share link without credentials,
    unless the app is public by choice (restricted, see core.hosting.space)."""
    credentials = parse_auth(auth)
    # A public app (a Space, or --public) lets strangers in by design: its owner-only actions
    # are refused per request instead (ui/access.py).
    if (share or not _is_loopback(host)) and credentials is None and not space.restricted():
        raise LongCtxError(
            f"listening on {host}{' with a share link' if share else ''} would expose the app; "
            "give --auth user:password (or set LONGCTX_AUTH), use --public for a demo where "
            "visitors cannot train, spend API keys or save files, or use --host 127.0.0.1"
        )
    for root in allow or []:
        workspace.allow_root(root)
    demo = build_app(model)
    demo.queue(default_concurrency_limit=2)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=credentials,
        share=share,
        **style_kwargs(),
        footer_links=["api", "settings"],
    )
