"""Evaluate tab, part 1: the form — which task, its grid, how answers are scored, where results go.

`build()` lays the controls out and returns them by name; `task_config`, `scorer` and `output`
turn their values into the engine's dataclasses (`core.evals.niah.NiahConfig`,
`core.evals.procedural.TopicsConfig` / `PasskeyConfig`, `core.evals.scoring.Scorer`), which
validate them exactly as the `longctx niah/topics/passkey` commands do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from core import workspace
from core.evals import niah, procedural
from core.evals.backends import Endpoint
from core.evals.runner import DEFAULT_SCORERS
from core.evals.scoring import SCORER_HELP, SCORERS, Scorer

TASKS = [("Needle in a haystack", "niah"), ("Topic retrieval", "topics"),
         ("Passkey", "passkey")]  # fmt: skip
NOTES = {
    "niah": "A needle sentence hidden at each depth of a haystack of each length; the answer is "
    "scored against the expected one (the paper's Figure 1).",
    "topics": "A conversation over N topics, then: which came first? Accuracy against N and "
    "prompt tokens (the paper's Figure 2).",
    "passkey": "A random 5-digit pass key hidden in filler text at each length and depth.",
}
SCORER_CHOICES = [(SCORER_HELP[k].split(":")[0], k) for k in SCORERS]


def build() -> dict[str, gr.components.Component]:
    """The form's controls, by name (the names `INPUTS` lists, plus the boxes to show/hide)."""
    c: dict[str, Any] = {}
    c["task"] = gr.Radio(TASKS, value="niah", label="Task", elem_id="eval-task")
    c["note"] = gr.Markdown(NOTES["niah"], elem_classes="preset-note")
    with gr.Group() as c["niah_box"]:
        c["haystack_kind"] = gr.Radio([("Built-in (Python's documentation)", "builtin"),
                                       ("A folder of documents", "folder")],
                                      value="builtin", label="Haystack")  # fmt: skip
        c["haystack_folder"] = gr.Textbox(label="Haystack folder", visible=False,
                                          placeholder="inside the workspace, e.g. datasets/books")  # fmt: skip
        c["needle"] = gr.Textbox(niah.DEFAULT_NEEDLE, label="Needle", lines=2)
        c["question"] = gr.Textbox(niah.DEFAULT_QUESTION, label="Question")
        c["answer"] = gr.Textbox(niah.DEFAULT_ANSWER, label="Expected answer")
        with gr.Accordion("Prompt template", open=False):
            c["template"] = gr.Textbox(niah.DEFAULT_TEMPLATE, lines=6, show_label=False,
                                       info="{context}: the haystack, {question}: the question")  # fmt: skip
    with gr.Group() as c["grid_box"]:
        c["length_mode"] = gr.Radio([("List", "list"), ("Range", "range")], value="list",
                                    label="Context lengths (tokens)")  # fmt: skip
        c["lengths"] = gr.Textbox("1000,2000,4000", show_label=False, elem_id="eval-lengths",
                                  placeholder="e.g. 500,1k,2k,4k")  # fmt: skip
        with gr.Row(visible=False) as c["length_range"]:
            c["min_length"] = gr.Number(1000, label="Shortest", precision=0)
            c["max_length"] = gr.Number(8000, label="Longest", precision=0)
            c["num_lengths"] = gr.Number(5, label="How many", precision=0)
            c["length_spacing"] = gr.Radio(["linear", "log"], value="linear", label="Spacing")
        c["depth_mode"] = gr.Radio([("List", "list"), ("Spread from 0 to 100", "count")],
                                   value="list", label="Needle depths (%)")  # fmt: skip
        c["depths"] = gr.Textbox("0,25,50,75,100", show_label=False, elem_id="eval-depths")
        with gr.Row(visible=False) as c["depth_range"]:
            c["num_depths"] = gr.Number(5, label="How many", precision=0)
            c["depth_spacing"] = gr.Radio(["linear", "sigmoid"], value="linear", label="Spacing",
                                          info="sigmoid: denser near 0 and 100")  # fmt: skip
    with gr.Group(visible=False) as c["topics_box"]:
        with gr.Row():
            c["n_topics"] = gr.Textbox("2,4,8", label="Topic counts", elem_id="eval-n-topics")
            c["turn_tokens"] = gr.Number(300, label="Tokens per topic", precision=0)
    with gr.Row(visible=False) as c["trials_row"]:
        c["trials"] = gr.Number(3, label="Trials per cell", precision=0)
        c["seed"] = gr.Number(0, label="Seed", precision=0)
    with gr.Accordion("Scoring and output", open=True):
        c["scorer"] = gr.Dropdown(SCORER_CHOICES, value="rouge_l", label="Scorer",
                                  info=SCORER_HELP["rouge_l"], elem_id="eval-scorer")  # fmt: skip
        with gr.Group(visible=False) as c["judge_box"]:
            c["judge_url"] = gr.Textbox(
                label="Judge base URL", placeholder="http://127.0.0.1:8000/v1"
            )
            c["judge_model"] = gr.Textbox(label="Judge model name")
            c["judge_key"] = gr.Textbox(label="Judge API key (never saved)", type="password",
                                        placeholder="empty: $OPENAI_API_KEY")  # fmt: skip
        with gr.Row():
            c["max_new_tokens"] = gr.Number(0, label="Max answer tokens", precision=0,
                                            info="0: the task's default")  # fmt: skip
            c["out"] = gr.Textbox(label="Result folder", elem_id="eval-out",
                                  info="empty: a new one under evals/; an existing one resumes")  # fmt: skip
    return c


INPUTS = ["task", "haystack_kind", "haystack_folder", "needle", "question", "answer", "template",
          "length_mode", "lengths", "min_length", "max_length", "num_lengths", "length_spacing",
          "depth_mode", "depths", "num_depths", "depth_spacing", "n_topics", "turn_tokens",
          "trials", "seed", "scorer", "judge_url", "judge_model", "judge_key", "max_new_tokens",
          "out"]  # fmt: skip
TOGGLED = ["note", "niah_box", "grid_box", "topics_box", "trials_row", "scorer", "trials"]


def pick_task(task: str) -> list[Any]:
    """Updates for `TOGGLED` when the task changes (its boxes, default scorer and trials)."""
    scorer = DEFAULT_SCORERS[task]
    return [NOTES[task], gr.update(visible=task == "niah"),
            gr.update(visible=task != "topics"), gr.update(visible=task == "topics"),
            gr.update(visible=task != "niah"), gr.update(value=scorer, info=SCORER_HELP[scorer]),
            3 if task == "topics" else 1]  # fmt: skip


def _lengths(v: dict[str, Any]) -> list[float] | list[int]:
    if v["length_mode"] == "range":
        return niah.length_grid(int(v["min_length"] or 0), int(v["max_length"] or 0),
                                int(v["num_lengths"] or 1), v["length_spacing"])  # fmt: skip
    return niah.parse_numbers(v["lengths"] or "")


def _depths(v: dict[str, Any]) -> list[float]:
    if v["depth_mode"] == "count":
        return niah.depth_grid(0, 100, max(1, int(v["num_depths"] or 1)), v["depth_spacing"])
    return niah.parse_numbers(v["depths"] or "")


def task_config(v: dict[str, Any]) -> Any:
    """The task config the form describes (validated by its dataclass)."""
    extra = {"max_new_tokens": int(v["max_new_tokens"])} if v["max_new_tokens"] else {}
    if v["task"] == "topics":
        return procedural.TopicsConfig(
            n_topics=niah.parse_numbers(v["n_topics"] or ""), trials=int(v["trials"] or 1),
            turn_tokens=int(v["turn_tokens"] or 0), seed=int(v["seed"] or 0), **extra,
        )  # fmt: skip
    if v["task"] == "passkey":
        return procedural.PasskeyConfig(
            lengths=_lengths(v), depths=_depths(v), trials=int(v["trials"] or 1),
            seed=int(v["seed"] or 0), **extra,
        )  # fmt: skip
    haystack = niah.BUILTIN
    if v["haystack_kind"] == "folder":
        haystack = str(workspace.resolve_inside(v["haystack_folder"] or "."))
    return niah.NiahConfig(
        lengths=_lengths(v), depths=_depths(v), needle=v["needle"], question=v["question"],
        answer=v["answer"], haystack=haystack, template=v["template"], **extra,
    )  # fmt: skip


def scorer(v: dict[str, Any]) -> Scorer:
    judge = None
    if v["scorer"] == "judge" and (v["judge_url"] or v["judge_model"]):
        judge = Endpoint(v["judge_url"] or "", v["judge_model"] or "", v["judge_key"] or None)
    return Scorer(v["scorer"], judge)


def output(v: dict[str, Any]) -> Path | None:
    """The result folder: a name or path under the workspace's evals/ (None: a new one)."""
    out = (v["out"] or "").strip()
    return workspace.resolve_inside(out, base=workspace.subdir("evals")) if out else None
