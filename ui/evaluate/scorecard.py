"""Evaluate tab, part 3: the Scorecard — every suite and length evaluated for a base model and
its tuned runs, in one table and one figure, with published references beside ours.

The work is `core.evals.scorecard` (the same as `longctx scorecard --base M`); this module lays
out the controls and adapts their values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.errors import LongCtxError
from core.evals import scorecard
from ui.common import user_errors


@dataclass
class ScorecardPanel:
    base: gr.Textbox
    build: gr.Button
    table: gr.Dataframe
    figure: gr.Plot


def show(base: str) -> tuple[Any, Any]:
    """The table (header + rows) and the figure of `base`'s evaluations and its tuned runs'.

    Raises:
        LongCtxError: no evaluation of that model gives a scorecard row.
    """
    name = (base or "").strip()
    if not name:
        raise LongCtxError("name the base model, e.g. embedded or a Hub id")
    folders = scorecard.folders_for(name)
    if not folders:
        raise LongCtxError(f"no evaluation of {name} (or of a run tuned from it) in the workspace")
    card = scorecard.build(folders)
    header, *rows = card.table()
    return gr.update(value=rows, headers=header), card.figure(title=f"Scorecard: {name}")


def build() -> ScorecardPanel:
    """Lay the panel out inside the current Blocks and wire its button."""
    with gr.Accordion("Scorecard: base vs. tuned runs vs. published", open=False):
        with gr.Row():
            base = gr.Textbox(
                "embedded",
                label="Base model",
                elem_id="scorecard-base",
                info="its evaluations and those of runs tuned from it",
            )
            button = gr.Button("Build scorecard", elem_id="scorecard-build")
        table = gr.Dataframe(
            label="Scorecard (percent)", interactive=False, elem_id="scorecard-table"
        )
        figure = gr.Plot(label="Scorecard", elem_id="scorecard-figure")
    button.click(user_errors(show), base, [table, figure])
    return ScorecardPanel(base, button, table, figure)
