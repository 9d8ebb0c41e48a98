"""Train tab, "Long context" group: "Choose a RoPE base", the RoPE base advisor (core.rope.advisor).

Reads the form's base model, max length (the target) and RoPE base (the candidate); shows the
bases the literature suggests, what the candidate gives at the target, and the figure. "Use this
base" writes a suggestion into the form's RoPE base field, whose change re-renders the YAML like
any edit. Nothing is computed until the panel is opened.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from core import workspace
from core.errors import LongCtxError
from core.rope import advisor
from ui.common import optional_float, user_errors

INTRO = (
    "Raising the RoPE base is how the recipe stretches the context (the paper: 500K -> 200M "
    "for 8K -> 80K). The target is **Max length** unless you type another one here; the "
    "candidate is the **RoPE base** field (empty: the model's own)."
)


def build(model: gr.Dropdown, max_length: gr.Number, rope_theta: gr.Number) -> None:
    """A closed "Choose a RoPE base" accordion, wired to the three form fields it reads."""
    with gr.Accordion("Choose a RoPE base", open=False, elem_id="rope-advisor") as panel:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            target = gr.Number(None, label="Target length (tokens)", precision=0, scale=2,
                               elem_id="rope-target", placeholder="empty: Max length")  # fmt: skip
            pick = gr.Dropdown([], label="Suggestion", elem_id="rope-pick", scale=3)
            use = gr.Button("Use this base", elem_id="rope-use", scale=1)
        table = gr.Markdown(elem_id="rope-table")
        plot = gr.Plot(label="Wavelengths and attention bias", elem_id="rope-plot")
    shown = gr.State(False)

    fields = [model, max_length, rope_theta, target]
    outputs = [table, plot, pick]
    panel.expand(lambda: True, None, shown)
    panel.expand(lambda *values: refresh(True, *values), [*fields, pick], outputs)
    panel.collapse(lambda: False, None, shown)
    for comp in fields:
        comp.change(refresh, [shown, *fields, pick], outputs, show_progress="hidden",
                    trigger_mode="always_last")  # fmt: skip
    use.click(user_errors(use_base), pick, rope_theta)


def advise(model: str, max_length: Any, rope_theta: Any, target: Any, pick: Any
           ) -> tuple[str, Any, Any]:  # fmt: skip
    """The table, the figure and the suggestion list for the form as it stands."""
    name = workspace.model_from_user(model)  # a typed path is only read inside allowed roots
    length = int(target or max_length or 0)
    advice = advisor.advise_model(name or "", length, optional_float(rope_theta))
    figure = advisor.figure(advice.shape, advice.check.base, advice.target)
    every = [*advice.suggestions, advice.reference]
    choices = [(_label(s), s.base) for s in every]
    values = [s.base for s in every]
    keep = pick if pick in values else values[0]
    return _markdown(advice, rope_theta), figure, gr.Dropdown(choices=choices, value=keep)


def _label(s: advisor.Suggestion) -> str:
    # The exact value too where three digits hide it: a narrow bound's rounding can fail.
    exact = f" (exactly {s.base:,.0f})" if advisor.compact_hides(s.base) else ""
    return f"{s.name}: {advisor.compact(s.base)}{exact}"


def refresh(shown: bool, *values: Any) -> tuple[Any, Any, Any]:
    """`advise` while the panel is open; a problem is shown in place (not as a toast per
    keystroke, like the YAML preview), and the suggestions are emptied so that "Use this base"
    cannot put in one made for other settings."""
    if not shown:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        return advise(*values)
    except LongCtxError as exc:
        return f"**Cannot advise:** {exc}", None, gr.Dropdown(choices=[], value=None)


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
    return "\n".join([
        f"**{advice.model}**: {advice.shape_line()}. Target: {advisor.tokens(advice.target)} "
        f"tokens (x{advice.target / advice.shape.window:.3g} the window).",
        "",
        f"Suggested bases for {advisor.tokens(advice.target)} tokens:",
        *rows,
        "",
        f"{verdict} {mine} at {advisor.tokens(advice.target)} tokens:",
        *(f"- {line}" for line in check.summary()),
    ])  # fmt: skip
