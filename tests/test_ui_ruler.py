"""The Evaluate tab's RULER controls: the form's values become the same `RulerConfig` the
`longctx ruler` command builds, and the tab lays out with them (no browser, no model)."""

from __future__ import annotations

import gradio as gr

from core.evals.ruler import NOISE, RulerConfig
from ui.evaluate import form


def _values(**changes):
    """The form's values as a fresh tab shows them (each component's initial value)."""
    with gr.Blocks():
        c = form.build()
    values = {name: c[name].value for name in form.INPUTS}
    return {**values, **changes}


def test_the_form_builds_the_ruler_config_the_command_builds():
    v = _values(task="ruler", lengths="1k,2k", ruler_tasks=["vt", "cwe"], ruler_samples=5,
                ruler_noise=True, ruler_threshold=70, ruler_prefix=False)  # fmt: skip
    assert form.task_config(v) == RulerConfig(tasks=["vt", "cwe"], lengths=[1000, 2000],
                                              samples=5, haystack=NOISE, threshold=70,
                                              answer_prefix=False)  # fmt: skip
    shown = dict(zip(form.TOGGLED, form.pick_task("ruler"), strict=True))
    assert shown["ruler_box"]["visible"] and not shown["depth_box"]["visible"]
    assert shown["scorer"]["value"] == "ruler"


def test_the_evaluate_tab_lays_out_with_the_ruler_controls():
    from ui.evaluate import tab

    with gr.Blocks():
        built = tab.build()
    assert ("RULER", "ruler") in [tuple(c) for c in built.task.choices]
