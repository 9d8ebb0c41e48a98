"""The Evaluate tab's RULER controls and Scorecard panel: the form's values become the same
`RulerConfig` the `longctx ruler` command builds, the tab lays out with them, and the panel shows
a base model's evaluations (no browser, no model)."""

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
    v = _values(
        task="ruler",
        lengths="1k,2k",
        ruler_tasks=["vt", "cwe"],
        ruler_samples=5,
        ruler_noise=True,
        ruler_threshold=70,
        ruler_prefix=False,
        ruler_examples=False,
    )
    assert form.task_config(v) == RulerConfig(
        tasks=["vt", "cwe"],
        lengths=[1000, 2000],
        samples=5,
        haystack=NOISE,
        threshold=70,
        answer_prefix=False,
        examples=False,
    )
    shown = dict(zip(form.TOGGLED, form.pick_task("ruler"), strict=True))
    assert shown["ruler_box"]["visible"] and not shown["depth_box"]["visible"]
    assert shown["scorer"]["value"] == "ruler"


def test_the_evaluate_tab_lays_out_with_the_ruler_controls():
    from ui.evaluate import tab

    with gr.Blocks():
        built = tab.build()
    assert ("RULER", "ruler") in [tuple(c) for c in built.task.choices]


def test_the_scorecard_panel_shows_a_base_models_evaluations(workspace_home):
    import pytest

    from core import workspace
    from core.errors import LongCtxError
    from core.evals import results
    from ui.evaluate import scorecard

    folder = workspace.subdir("evals") / "ui-scorecard-ruler"
    results.write_config(
        folder,
        {
            "kind": "ruler",
            "target": {"model": {"name": "ui-base"}},
            "task": {},
            "created": "2026-01-01T00:00:00",
        },
    )
    results.CellLog(folder).append({"key": "a", "task": "vt", "length": 4096, "score": 1.0})
    table, figure = scorecard.show("ui-base")
    assert table["headers"] == ["suite", "base", "published", "source"]
    assert table["value"] == [["RULER mean @ 4K", 100.0, "", ""]]
    assert figure.data[0].name == "base"
    with pytest.raises(LongCtxError, match="no evaluation of nobody"):
        scorecard.show("nobody")
