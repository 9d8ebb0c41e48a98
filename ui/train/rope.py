"""Train tab, "Long context" group: "Choose a RoPE base", the RoPE advisor (core.rope.advisor and
core.rope.methods).

Reads the form's base model, max length (the target) and RoPE base (the candidate); shows the
bases the literature suggests, what the candidate gives at the target, and the figure; then a
setting of every extension method (YaRN, llama3, linear, dynamic) for the same target, with each
method's wavelengths side by side. "Use this base" writes a suggestion into the form's RoPE base
field and "Use this method" a setting into its RoPE scaling field; their change re-renders the
YAML like any edit. Nothing is computed until the panel is opened.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from core import workspace
from core.errors import LongCtxError
from core.models import loader
from core.rope import advisor, figures, methods
from ui.common import optional_float, user_errors

INTRO = (
    "Raising the RoPE base is how the recipe stretches the context (the paper: 500K -> 200M "
    "for 8K -> 80K). The target is **Max length** unless you type another one here; the "
    "candidate is the **RoPE base** field (empty: the model's own)."
)


def build(
    model: gr.Dropdown, max_length: gr.Number, rope_theta: gr.Number, rope: gr.Textbox
) -> None:
    """A closed "Choose a RoPE base" accordion, wired to the form fields it reads and writes."""
    with gr.Accordion("Choose a RoPE base", open=False, elem_id="rope-advisor") as panel:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            target = gr.Number(
                None,
                label="Target length (tokens)",
                precision=0,
                scale=2,
                elem_id="rope-target",
                placeholder="empty: Max length",
            )
            pick = gr.Dropdown([], label="Suggestion", elem_id="rope-pick", scale=3)
            use = gr.Button("Use this base", elem_id="rope-use", scale=1)
        table = gr.Markdown(elem_id="rope-table")
        plot = gr.Plot(label="Wavelengths and attention bias", elem_id="rope-plot")
        gr.Markdown("**Or another extension method** (no new base: a scaling of the positions)")
        with gr.Row(equal_height=True):
            method = gr.Dropdown([], label="Method", elem_id="rope-method", scale=4)
            use_method = gr.Button("Use this method", elem_id="rope-use-method", scale=1)
        methods_table = gr.Markdown(elem_id="rope-methods")
        methods_plot = gr.Plot(label="Each method's wavelengths", elem_id="rope-methods-plot")
    shown = gr.State(False)

    fields = [model, max_length, rope_theta, target]
    outputs = [table, plot, pick, methods_table, methods_plot, method]
    panel.expand(lambda: True, None, shown)
    panel.expand(lambda *values: refresh(True, *values), [*fields, pick], outputs)
    panel.collapse(lambda: False, None, shown)
    for comp in fields:
        comp.change(
            refresh,
            [shown, *fields, pick],
            outputs,
            show_progress="hidden",
            trigger_mode="always_last",
        )
    use.click(user_errors(use_base), pick, rope_theta)
    use_method.click(user_errors(use_method_setting), method, rope)


def advise(model: str, max_length: Any, rope_theta: Any, target: Any, pick: Any) -> tuple[Any, ...]:
    """The base table, figure and suggestions, then the methods' for the form as it stands."""
    name = workspace.model_from_user(model)  # a typed path is only read inside allowed roots
    length = int(target or max_length or 0)
    advice = advisor.advise_model(name or "", length, optional_float(rope_theta))
    figure = figures.base_figure(advice.shape, advice.check.base, advice.target)
    every = [*advice.suggestions, advice.reference]
    choices = [(_label(s), s.base) for s in every]
    values = [s.base for s in every]
    keep = pick if pick in values else values[0]
    suggested = methods.suggest(advice.shape, advice.target)
    settings = [m.setting for m in suggested if m.setting is not None and m.method != "base"]
    config = loader.load_config(loader.ModelSpec(name=name or "")).config
    methods_figure = figures.methods_figure(config, settings, advice.target)
    spelled = [s.spelled() for s in settings]
    return (
        _markdown(advice, rope_theta),
        figure,
        gr.Dropdown(choices=choices, value=keep),
        _methods_markdown(suggested),
        methods_figure,
        gr.Dropdown(choices=spelled, value=spelled[0] if spelled else None),
    )


def _methods_markdown(suggested: list[methods.MethodSuggestion]) -> str:
    return "\n".join(
        f"- **{m.method}**: `{m.setting.spelled() if m.setting else 'needs a factors file'}`: "
        f"{m.why} (*{m.source}*)"
        for m in suggested
    )


def use_method_setting(setting: Any) -> str:
    if not setting:
        raise LongCtxError("pick a method first (open this panel to list them)")
    return str(setting)


def _label(s: advisor.Suggestion) -> str:
    # The exact value too where three digits hide it: a narrow bound's rounding can fail.
    exact = f" (exactly {s.base:,.0f})" if advisor.compact_hides(s.base) else ""
    return f"{s.name}: {advisor.compact(s.base)}{exact}"


def refresh(shown: bool, *values: Any) -> tuple[Any, ...]:
    """`advise` while the panel is open; a problem is shown in place (not as a toast per
    keystroke, like the YAML preview), and the suggestions are emptied so that "Use this base"
    cannot put in one made for other settings."""
    if not shown:
        return (gr.skip(),) * 6
    try:
        return advise(*values)
    except LongCtxError as exc:
        empty = gr.Dropdown(choices=[], value=None)
        return f"**Cannot advise:** {exc}", None, empty, "", None, empty


def use_base(pick: Any) -> float:
    if pick in (None, ""):
        raise LongCtxError("pick a suggestion first (open this panel to list them)")
    return float(pick)


def _markdown(advice: advisor.Advice, rope_theta: Any) -> str:
    # A list, not a table: in the form's narrow column a table squeezes the short cells to a
    # letter per line beside the long reasons.
    rows = [
        f"- **{s.name}: {advisor.compact(s.base)}**: {s.why} (*{s.source}*)"
        for s in [*advice.suggestions, advice.reference]
    ]
    check = advice.check
    mine = (
        f"**Your base {advisor.compact(check.base)}**"
        if optional_float(rope_theta)
        else f"**The model's own base {advisor.compact(check.base)}** (RoPE base field empty)"
    )
    verdict = "✅" if check.bias_ok else "⚠️"
    return "\n".join(
        [
            f"**{advice.model}**: {advice.shape_line()}. Target: {advisor.tokens(advice.target)} "
            f"tokens (x{advice.target / advice.shape.window:.3g} the window).",
            "",
            f"Suggested bases for {advisor.tokens(advice.target)} tokens:",
            *rows,
            "",
            f"{verdict} {mine} at {advisor.tokens(advice.target)} tokens:",
            *(f"- {line}" for line in check.summary()),
        ]
    )
