"""Model-target controls for the tabs that run a model (Chat, Evaluate): who answers.

A local model (embedded, a Hub id, a folder, or a trained run's adapter from
`core.models.names.known_models()`, with an optional adapter and RoPE/window override) or any
OpenAI-compatible endpoint. The widget values become a `ModelSpec` here, and a chat or
evaluation target in the tab; validation happens in core. The API key is passed on in memory
only and never written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import workspace
from core.evals.backends import Endpoint, Target
from core.models import loader, names
from ui.common import optional_float, optional_int

LOCAL, ENDPOINT = "local", "endpoint"


@dataclass
class TargetControls:
    """The widgets that describe one model under test."""

    kind: gr.Radio
    model: gr.Dropdown
    adapter: gr.Textbox
    rope_theta: gr.Number
    rope: gr.Textbox
    """A RoPE scaling (`yarn:factor=4`, ...): `core.models.rope.RopeSetting`'s one-line spelling."""
    window: gr.Number
    base_url: gr.Textbox
    api_key: gr.Textbox
    endpoint_model: gr.Textbox
    tokenizer: gr.Textbox | None = None
    """Evaluate only: the tokenizer that measures an endpoint's prompt lengths."""

    def inputs(self) -> list[gr.components.Component]:
        boxes = [
            self.kind,
            self.model,
            self.adapter,
            self.rope_theta,
            self.rope,
            self.window,
            self.base_url,
            self.api_key,
            self.endpoint_model,
        ]
        return boxes + ([self.tokenizer] if self.tokenizer is not None else [])

    def local_outputs(self) -> list[gr.components.Component]:
        """What `pick_local` updates."""
        return [self.kind, self.model, self.adapter, self.rope_theta, self.rope, self.window]


def pick_local(model: str) -> list[Any]:
    """Updates (for `TargetControls.local_outputs`) that put `model` under test as it is: a
    local model, no extra adapter, its own RoPE and window (an adapter brings its own)."""
    return [LOCAL, gr.update(choices=names.known_models(), value=model), "", 0, "", 0]


def model_spec(model, adapter, rope_theta, rope, window) -> loader.ModelSpec:
    """The local-model widgets -> a ModelSpec; folders typed in must lie in the allowed roots."""
    return loader.ModelSpec(
        name=workspace.model_from_user(model) or names.EMBEDDED,
        adapter=workspace.model_from_user(adapter) or None,
        rope_theta=optional_float(rope_theta),
        rope=(rope or "").strip() or None,
        max_position_embeddings=optional_int(window),
    )


def to_eval_target(
    kind, model, adapter, rope_theta, rope, window, base_url, api_key, endpoint_model, tokenizer
) -> Target:
    """Widget values (in `TargetControls.inputs()` order) -> an evaluation Target."""
    if kind == ENDPOINT:
        endpoint = Endpoint(base_url or "", endpoint_model or "", api_key or None)
        return Target(endpoint=endpoint, tokenizer=(tokenizer or "").strip() or None)
    return Target(model=model_spec(model, adapter, rope_theta, rope, window))


def to_chat_target(
    kind, model, adapter, rope_theta, rope, window, base_url, api_key, endpoint_model
):
    """Widget values (in `TargetControls.inputs()` order, without a tokenizer box) -> a chat
    target (validated there)."""
    from core.chat import ChatTarget

    return ChatTarget(
        kind=kind,
        spec=model_spec(model, adapter, rope_theta, rope, window),
        base_url=base_url or "",
        api_key=api_key or "",
        endpoint_model=endpoint_model or "",
    )


def target_controls(
    prefix: str,
    default_model: str = names.EMBEDDED,
    *,
    title: str | None = None,
    tokenizer: bool = True,
) -> TargetControls:
    """Lay out the controls (ids `<prefix>-model`, `<prefix>-base-url`, ...) and wire the toggle;
    `tokenizer` adds the box that measures an endpoint's prompts (Evaluate)."""
    with gr.Group():
        if title:
            gr.Markdown(f"**{title}**")
        kind = gr.Radio(
            [("Local model", LOCAL), ("OpenAI-compatible endpoint", ENDPOINT)],
            value=LOCAL,
            show_label=False,
            elem_id=f"{prefix}-kind",
        )
        with gr.Column(visible=True) as local_box:
            model = gr.Dropdown(
                names.known_models(),
                value=default_model,
                allow_custom_value=True,
                label="Model",
                elem_id=f"{prefix}-model",
                info="embedded, a Hub id, a local folder, or a trained run's adapter",
            )
            adapter = gr.Textbox(
                label="LoRA adapter on top (optional)", placeholder="folder or Hub id"
            )
            with gr.Row():
                rope_theta = gr.Number(
                    label="RoPE base",
                    info="0: the model's own (paper: 2e8)",
                    elem_id=f"{prefix}-rope-theta",
                )
                window = gr.Number(
                    label="Window (tokens)",
                    precision=0,
                    elem_id=f"{prefix}-window",
                    info="0: the model's own",
                )
            rope = gr.Textbox(
                label="RoPE scaling (optional)",
                elem_id=f"{prefix}-rope",
                placeholder="e.g. yarn:factor=4, linear:factor=2, dynamic:factor=2, "
                "llama3:factor=4",
            )
        with gr.Column(visible=False) as endpoint_box:
            base_url = gr.Textbox(
                label="Base URL",
                placeholder="http://127.0.0.1:8000/v1",
                elem_id=f"{prefix}-base-url",
            )
            endpoint_model = gr.Textbox(label="Model name", placeholder="as in /v1/models")
            api_key = gr.Textbox(
                label="API key (never saved)", type="password", placeholder="empty: $OPENAI_API_KEY"
            )
            tokenizer_box = None
            if tokenizer:
                tokenizer_box = gr.Textbox(
                    label="Tokenizer that measures prompt lengths",
                    placeholder="empty: the model name; 'embedded' for rough lengths",
                )

    def toggle(k):
        return gr.update(visible=k == LOCAL), gr.update(visible=k == ENDPOINT)

    kind.change(toggle, kind, [local_box, endpoint_box], show_progress="hidden")
    # Runs trained since the page was built join the list when it is opened.
    model.focus(
        lambda: gr.update(choices=names.known_models()), None, model, show_progress="hidden"
    )
    return TargetControls(
        kind,
        model,
        adapter,
        rope_theta,
        rope,
        window,
        base_url,
        api_key,
        endpoint_model,
        tokenizer_box,
    )
