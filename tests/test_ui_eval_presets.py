"""The Evaluate tab's paper presets and LongChat topic files: picking a preset fills the form
with the config `longctx niah --preset` builds, and a topic file gives the command's config and
scorer (no browser, no model)."""

from __future__ import annotations

import json
import shlex

import gradio as gr

from core.cli import evals as evals_cli
from core.evals.backends import Target
from core.evals.niah import PRESETS, NiahConfig
from core.evals.retrieval import TopicsConfig
from core.models.loader import ModelSpec
from ui.evaluate import form


def _values(**changes):
    """The form's values as a fresh tab shows them (each component's initial value)."""
    with gr.Blocks():
        c = form.build()
    values = {name: c[name].value for name in [*form.INPUTS, "note"]}
    return {**values, **changes}


def _apply(values, names, updates):
    """The form's values after a callback's updates (a plain value, or gr.update(value=...))."""
    for name, update in zip(names, updates, strict=True):
        if isinstance(update, dict):
            if "value" in update:
                values[name] = update["value"]
        else:
            values[name] = update
    return values


def test_picking_a_paper_preset_fills_the_form_with_the_presets_config():
    judge = {"judge_url": "http://127.0.0.1:9/v1", "judge_model": "m"}  # for paper-judge
    for name in PRESETS:
        v = _apply(_values(**judge), form.PRESET_FIELDS, form.pick_preset(name))
        assert form.task_config(v) == PRESETS[name].config()
        assert form.scorer(v).kind == PRESETS[name].scorer
        assert PRESETS[name].description in v["note"]
    v = _apply(_values(), form.PRESET_FIELDS, form.pick_preset("paper"))
    v["max_length"] = 8192  # a short window: lower the longest length
    task = form.task_config(v)
    assert task.lengths[0] == 8192 and len(task.depths) == 11
    command = shlex.join(evals_cli.command_for(task, Target(ModelSpec()), form.scorer(v)))
    assert "--preset paper" in command and "--template" not in command
    # None: back to our defaults.
    v = _apply(v, form.PRESET_FIELDS, form.pick_preset(""))
    assert form.task_config(v) == NiahConfig() and form.scorer(v).kind == "rouge_l"


def test_a_topic_file_in_the_form_asks_every_row_scored_by_substring(workspace_home):
    path = workspace_home / "datasets" / "ui-topics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"prompt": "We spoke of A, then B. First?", "topics": ["A", "B"]}))
    v = _values(
        task="topics", topic_file="datasets/ui-topics.jsonl", scorer="exact", answer_prefix=""
    )
    names = ["n_topics", "scorer"]
    v = _apply(v, names, form.pick_topic_file(v["topic_file"], v["n_topics"], v["scorer"]))
    assert (v["n_topics"], v["scorer"]) == ("", "substring")
    assert form.task_config(v) == TopicsConfig(file=str(path.resolve()), n_topics=[])
    v = _apply(v, names, form.pick_topic_file("", v["n_topics"], v["scorer"]))
    assert (v["n_topics"], v["scorer"]) == ("2,4,8", "exact")
