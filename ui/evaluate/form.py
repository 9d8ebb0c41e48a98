"""Evaluate tab, part 1: the form — which task, its grid, how answers are scored, where results go.

`build()` lays the controls out and returns them by name; `pick_task`, `pick_preset` (the
paper's NIAH, `core.evals.niah.PRESETS`) and `pick_topic_file` update them; `task_config`,
`scorer` and `output` turn their values into the engine's dataclasses (`core.evals.niah.NiahConfig`,
`core.evals.retrieval.TopicsConfig` / `PasskeyConfig`, `core.evals.samples.SamplesConfig`,
`core.evals.perplexity.PerplexityConfig`, `core.evals.scoring.Scorer`), which validate them exactly
as the `longctx niah/topics/passkey/samples/perplexity/ruler` commands do
(`core.evals.ruler.RulerConfig` for RULER).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from core import workspace
from core.evals import niah, perplexity, retrieval, ruler, samples
from core.evals.backends import Endpoint
from core.evals.runner import DEFAULT_SCORERS
from core.evals.scoring import PERPLEXITY, SCORER_HELP, SCORERS, Scorer
from ui.data.common import dataset_files, resolve_spec

TASKS = [
    ("Needle in a haystack", "niah"),
    ("Topic retrieval", "topics"),
    ("Passkey", "passkey"),
    ("Held-out samples", "samples"),
    ("Perplexity", PERPLEXITY),
    ("RULER", "ruler"),
]
NOTES = {
    "niah": "A needle sentence hidden at each depth of a haystack of each length; the answer is "
    "scored against the expected one (the paper's Figure 1). *Preset* fills in the paper's "
    "setup.",
    "topics": "A conversation over N topics, then: which came first? Accuracy against N and "
    "prompt tokens (the paper's Figure 2). Name a LongChat test file to ask its conversations, "
    "as the paper did.",
    "passkey": "A random 5-digit pass key hidden in filler text at each length and depth.",
    "samples": "The questions of samples kept out of training (Data → Mix & push → *Hold out*), "
    "each asked after the file's conversation so far; the answers are scored against the "
    "file's, by prompt length and by task.",
    PERPLEXITY: "How well the model predicts running text with more and more context before "
    "it, and its loss at each position of the longest window: the first check after changing "
    "a RoPE base (local models only).",
    "ruler": "RULER's synthetic tasks, built here for the model's tokenizer at each length: "
    "needles with one or several keys, values and queries, variable tracking, common and "
    "frequent words (QA on SQuAD/HotpotQA files you give). Score by task and length; the "
    "figure marks where the mean falls under the threshold.",
}
SOURCE_LABELS = {
    "niah": "Haystack",
    PERPLEXITY: "Text to read",
    "ruler": "Haystack of the needle tasks",
}
PREFIXES = {
    "niah": niah.DEFAULT_PREFIX,
    "passkey": retrieval.PASSKEY_PREFIX,
    "topics": "",
    "samples": "",
    PERPLEXITY: "",
    "ruler": "",
}
SCORER_CHOICES = [(SCORER_HELP[k].split(":")[0], k) for k in SCORERS]
PRESET_CHOICES = [("None: our defaults", "")] + [(p.label, p.name) for p in niah.PRESETS.values()]


def build() -> dict[str, gr.components.Component]:
    """The form's controls, by name (the names `INPUTS` lists, plus the boxes to show/hide)."""
    c: dict[str, Any] = {}
    c["task"] = gr.Radio(TASKS, value="niah", label="Task", elem_id="eval-task")
    c["note"] = gr.Markdown(NOTES["niah"], elem_classes="preset-note")
    with gr.Group() as c["source_box"]:
        c["haystack_kind"] = gr.Radio(
            [
                ("Built-in (Python's documentation)", "builtin"),
                ("A folder of documents, or one (a book)", "folder"),
            ],
            value="builtin",
            label="Haystack",
            elem_id="eval-source",
        )
        c["haystack_folder"] = gr.Textbox(
            label="Folder or file",
            visible=False,
            elem_id="eval-folder",
            placeholder="inside the workspace, e.g. datasets/books (.txt .md .pdf .epub .html)",
        )
    with gr.Group() as c["niah_box"]:
        c["niah_preset"] = gr.Dropdown(
            PRESET_CHOICES,
            value="",
            label="Preset",
            elem_id="eval-niah-preset",
            info="fills the fields below (grid, needle, prompt, scorer); edit them freely",
        )
        c["needle"] = gr.Textbox(niah.DEFAULT_NEEDLE, label="Needle", lines=2)
        c["question"] = gr.Textbox(niah.DEFAULT_QUESTION, label="Question")
        c["answer"] = gr.Textbox(
            niah.DEFAULT_ANSWER,
            label="Expected answer",
            info="{needle}: the whole needle sentence",
        )
        with gr.Accordion("Prompt template and needle spacing", open=False):
            c["template"] = gr.Textbox(
                niah.DEFAULT_TEMPLATE,
                lines=6,
                show_label=False,
                info="{context}: the haystack, {question}: the question",
            )
            c["needle_spacing"] = gr.Radio(
                [
                    ("After a space, at a sentence end", "space"),
                    ("A paragraph of its own, between blank lines", "blank_lines"),
                ],
                value="space",
                label="The needle in the haystack",
            )
    c["answer_prefix"] = gr.Textbox(
        niah.DEFAULT_PREFIX,
        label="Answer prefix",
        elem_id="eval-answer-prefix",
        info="the start of the answer, which the model continues "
        "(endpoints: sent as an assistant message to continue); it "
        "keeps a small model on the question. Empty: none",
    )
    with gr.Group() as c["grid_box"]:
        c["length_mode"] = gr.Radio(
            [("List", "list"), ("Range", "range")], value="list", label="Context lengths (tokens)"
        )
        c["lengths"] = gr.Textbox(
            "1000,2000,4000",
            show_label=False,
            elem_id="eval-lengths",
            placeholder="e.g. 500,1k,2k,4k",
        )
        with gr.Row(visible=False) as c["length_range"]:
            c["min_length"] = gr.Number(1000, label="Shortest", precision=0)
            c["max_length"] = gr.Number(8000, label="Longest", precision=0)
            c["num_lengths"] = gr.Number(5, label="How many", precision=0)
            c["length_spacing"] = gr.Radio(["linear", "log"], value="linear", label="Spacing")
        with gr.Group() as c["depth_box"]:
            c["depth_mode"] = gr.Radio(
                [("List", "list"), ("Spread from 0 to 100", "count")],
                value="list",
                label="Needle depths (%)",
            )
            c["depths"] = gr.Textbox("0,25,50,75,100", show_label=False, elem_id="eval-depths")
            with gr.Row(visible=False) as c["depth_range"]:
                c["num_depths"] = gr.Number(5, label="How many", precision=0)
                c["depth_spacing"] = gr.Radio(
                    ["linear", "sigmoid"],
                    value="linear",
                    label="Spacing",
                    info="sigmoid: denser near 0 and 100",
                )
        c["windows"] = gr.Number(
            3,
            label="Windows per length",
            precision=0,
            visible=False,
            elem_id="eval-windows",
            minimum=1,
            maximum=64,
            info="different stretches of the text; none is read twice",
        )
    with gr.Group(visible=False) as c["topics_box"]:
        c["topic_file"] = gr.Textbox(
            label="LongChat test file",
            elem_id="eval-topic-file",
            placeholder="inside the workspace, e.g. datasets/topics/5_topics.jsonl; "
            "empty: conversations from the built-in corpus",
            info="JSON lines with 'prompt' (or 'context' and 'question') and 'topics': each row "
            "is one user turn, scored by substring of its first topic (the paper's test)",
        )
        with gr.Row():
            c["n_topics"] = gr.Textbox(
                "2,4,8",
                label="Topic counts",
                elem_id="eval-n-topics",
                info="with a file: the rows of these counts (empty: every row)",
            )
            c["turn_tokens"] = gr.Number(300, label="Tokens per topic", precision=0)
    with gr.Group(visible=False) as c["samples_box"]:
        c["dataset"] = gr.Dropdown(
            dataset_files(),
            value=None,
            allow_custom_value=True,
            label="Held-out samples",
            elem_id="eval-dataset",
            info="a dataset file in the workspace, e.g. one written by "
            "Data → Mix & push → Hold out",
        )
        with gr.Row():
            c["limit"] = gr.Number(
                50, label="Samples to ask", precision=0, minimum=1, elem_id="eval-limit"
            )
            c["turns"] = gr.Radio(
                [("Every answer", "all"), ("The last answer", "last")],
                value="all",
                label="Answers to ask for",
            )
    with gr.Group(visible=False) as c["ruler_box"]:
        c["ruler_tasks"] = gr.CheckboxGroup(
            list(ruler.GROUPS["all"]),
            value=list(ruler.SYNTHETIC),
            label="RULER tasks",
            elem_id="eval-ruler-tasks",
        )
        with gr.Row():
            c["ruler_samples"] = gr.Number(
                20,
                label="Samples per task and length",
                precision=0,
                minimum=1,
                elem_id="eval-ruler-samples",
            )
            c["ruler_seed"] = gr.Number(0, label="Seed", precision=0)
            c["ruler_threshold"] = gr.Number(
                ruler.THRESHOLD, label="Threshold (%)", info="RULER's: Llama-2-7B at 4K"
            )
        with gr.Row():
            c["ruler_noise"] = gr.Checkbox(
                False, label="Noise haystack instead", info="a filler sentence repeated"
            )
            c["ruler_prefix"] = gr.Checkbox(
                True, label="Answer prefix", info="start the reply as RULER does (local models)"
            )
            c["ruler_examples"] = gr.Checkbox(
                True,
                label="Worked example",
                info="one solved instance before each cwe and vt sample, as RULER gives",
            )
        with gr.Row():
            c["ruler_squad"] = gr.Textbox(
                label="SQuAD file (qa_squad)", placeholder="a SQuAD-format JSON in the workspace"
            )
            c["ruler_hotpot"] = gr.Textbox(
                label="HotpotQA file (qa_hotpot)",
                placeholder="a HotpotQA-format JSON in the workspace",
            )
    with gr.Row(visible=False) as c["trials_row"]:
        c["trials"] = gr.Number(3, label="Trials per cell", precision=0)
        c["seed"] = gr.Number(0, label="Seed", precision=0)
    with gr.Accordion("Scoring and output", open=True):
        with gr.Column() as c["scoring_box"]:  # hidden for perplexity: nothing is scored
            c["scorer"] = gr.Dropdown(
                SCORER_CHOICES,
                value="rouge_l",
                label="Scorer",
                info=SCORER_HELP["rouge_l"],
                elem_id="eval-scorer",
            )
            with gr.Group(visible=False) as c["judge_box"]:
                c["judge_url"] = gr.Textbox(
                    label="Judge base URL", placeholder="http://127.0.0.1:8000/v1"
                )
                c["judge_model"] = gr.Textbox(label="Judge model name")
                c["judge_key"] = gr.Textbox(
                    label="Judge API key (never saved)",
                    type="password",
                    placeholder="empty: $OPENAI_API_KEY",
                )
        with gr.Row():
            c["max_new_tokens"] = gr.Number(
                0, label="Max answer tokens", precision=0, info="0: the task's default"
            )
            c["out"] = gr.Textbox(
                label="Result folder",
                elem_id="eval-out",
                info="empty: a new one under evals/; an existing one resumes",
            )
    return c


INPUTS = [
    "task",
    "haystack_kind",
    "haystack_folder",
    "needle",
    "question",
    "answer",
    "template",
    "needle_spacing",
    "length_mode",
    "lengths",
    "min_length",
    "max_length",
    "num_lengths",
    "length_spacing",
    "depth_mode",
    "depths",
    "num_depths",
    "depth_spacing",
    "n_topics",
    "topic_file",
    "turn_tokens",
    "trials",
    "seed",
    "windows",
    "dataset",
    "limit",
    "turns",
    "scorer",
    "judge_url",
    "judge_model",
    "judge_key",
    "max_new_tokens",
    "answer_prefix",
    "out",
    "ruler_tasks",
    "ruler_samples",
    "ruler_seed",
    "ruler_threshold",
    "ruler_noise",
    "ruler_prefix",
    "ruler_examples",
    "ruler_squad",
    "ruler_hotpot",
]
TOGGLED = [
    "note",
    "source_box",
    "haystack_kind",
    "niah_box",
    "grid_box",
    "depth_box",
    "windows",
    "topics_box",
    "samples_box",
    "trials_row",
    "scoring_box",
    "scorer",
    "max_new_tokens",
    "trials",
    "ruler_box",
    "answer_prefix",
]


def pick_task(task: str) -> list[Any]:
    """Updates for `TOGGLED` when the task changes (its boxes, default scorer and trials)."""
    measured = task == PERPLEXITY  # nothing is generated or scored
    shown = {
        "source_box": task in SOURCE_LABELS,
        "niah_box": task == "niah",
        "grid_box": task not in ("topics", "samples"),
        "depth_box": task in ("niah", "passkey"),
        "windows": measured,
        "topics_box": task == "topics",
        "samples_box": task == "samples",
        "trials_row": task in ("topics", "passkey"),
        "scoring_box": not measured,
        "max_new_tokens": not measured,
        "ruler_box": task == "ruler",
    }
    updates = {name: gr.update(visible=visible) for name, visible in shown.items()}
    updates["note"] = NOTES[task]
    updates["haystack_kind"] = gr.update(label=SOURCE_LABELS.get(task, "Haystack"))
    default = DEFAULT_SCORERS[task]
    updates["scorer"] = (
        gr.update() if measured else gr.update(value=default, info=SCORER_HELP[default])
    )
    updates["trials"] = 3 if task == "topics" else 1
    updates["answer_prefix"] = gr.update(
        visible=not measured and task != "ruler", value=PREFIXES[task]
    )
    return [updates[name] for name in TOGGLED]


PRESET_FIELDS = [
    "note",
    "needle",
    "question",
    "answer",
    "template",
    "needle_spacing",
    "answer_prefix",
    "max_new_tokens",
    "length_mode",
    "min_length",
    "max_length",
    "num_lengths",
    "length_spacing",
    "depth_mode",
    "num_depths",
    "depth_spacing",
    "scorer",
]


def pick_preset(name: str) -> list[Any]:
    """Updates for `PRESET_FIELDS` when a NIAH preset is picked: its fields and grid, or our
    defaults for none."""
    preset = niah.PRESETS.get(name or "")
    if preset is None:
        ours = niah.NiahConfig()
        updates: dict[str, Any] = {
            "note": NOTES["niah"],
            **{k: getattr(ours, k) for k in PRESET_FIELDS if hasattr(ours, k)},
            "max_new_tokens": 0,
            "length_mode": "list",
            "depth_mode": "list",
            "scorer": DEFAULT_SCORERS["niah"],
        }
    else:
        updates = {
            "note": f"{NOTES['niah']}\n\n**{preset.label}.** {preset.description}",
            **preset.fields,
            "length_mode": "range",
            "min_length": preset.min_length,
            "max_length": preset.max_length,
            "num_lengths": preset.num_lengths,
            "length_spacing": "linear",
            "depth_mode": "count",
            "num_depths": preset.num_depths,
            "depth_spacing": "linear",
            "scorer": preset.scorer,
        }
    return [updates.get(name, gr.update()) for name in PRESET_FIELDS]


def pick_topic_file(file: str, n_topics: str, scorer: str) -> tuple[Any, Any]:
    """Topic counts and scorer when a LongChat file is named or cleared: every row and
    substring for a file, the built-in defaults without one (values the user chose stay)."""
    if (file or "").strip():
        counts = "" if n_topics == "2,4,8" else gr.update()
        return counts, ("substring" if scorer == DEFAULT_SCORERS["topics"] else gr.update())
    counts = "2,4,8" if not (n_topics or "").strip() else gr.update()
    return counts, (DEFAULT_SCORERS["topics"] if scorer == "substring" else gr.update())


def _lengths(v: dict[str, Any]) -> list[float] | list[int]:
    if v["length_mode"] == "range":
        return niah.length_grid(
            int(v["min_length"] or 0),
            int(v["max_length"] or 0),
            int(v["num_lengths"] or 1),
            v["length_spacing"],
        )
    return niah.parse_numbers(v["lengths"] or "")


def _depths(v: dict[str, Any]) -> list[float]:
    if v["depth_mode"] == "count":
        return niah.depth_grid(0, 100, max(1, int(v["num_depths"] or 1)), v["depth_spacing"])
    return niah.parse_numbers(v["depths"] or "")


def task_config(v: dict[str, Any]) -> Any:
    """The task config the form describes (validated by its dataclass)."""
    haystack = niah.BUILTIN
    if v["haystack_kind"] == "folder":
        haystack = str(workspace.resolve_inside(v["haystack_folder"] or "."))
    if v["task"] == PERPLEXITY:
        return perplexity.PerplexityConfig(
            lengths=_lengths(v), windows=int(v["windows"] or 0), source=haystack
        )
    extra = {"max_new_tokens": int(v["max_new_tokens"])} if v["max_new_tokens"] else {}
    if v["task"] == "ruler":
        return _ruler_config(v, haystack, extra)
    extra["answer_prefix"] = v["answer_prefix"] or ""
    if v["task"] == "samples":
        return samples.SamplesConfig(
            resolve_spec(v["dataset"]), limit=int(v["limit"] or 0), turns=v["turns"], **extra
        )
    if v["task"] == "topics":
        file = (v["topic_file"] or "").strip()
        return retrieval.TopicsConfig(
            file=str(workspace.resolve_inside(file)) if file else "",
            n_topics=niah.parse_numbers(v["n_topics"] or ""),
            trials=int(v["trials"] or 1),
            turn_tokens=int(v["turn_tokens"] or 0),
            seed=int(v["seed"] or 0),
            **extra,
        )
    if v["task"] == "passkey":
        return retrieval.PasskeyConfig(
            lengths=_lengths(v),
            depths=_depths(v),
            trials=int(v["trials"] or 1),
            seed=int(v["seed"] or 0),
            **extra,
        )
    return niah.NiahConfig(
        lengths=_lengths(v),
        depths=_depths(v),
        needle=v["needle"],
        question=v["question"],
        answer=v["answer"],
        haystack=haystack,
        template=v["template"],
        needle_spacing=v["needle_spacing"],
        **extra,
    )


def _ruler_config(v: dict[str, Any], haystack: str, extra: dict[str, Any]) -> Any:
    files = {}
    for name in ("squad", "hotpot"):
        given = (v[f"ruler_{name}"] or "").strip()
        files[name] = str(workspace.resolve_inside(given)) if given else ""
    return ruler.RulerConfig(
        tasks=list(v["ruler_tasks"] or []),
        lengths=_lengths(v),
        samples=int(v["ruler_samples"] or 0),
        seed=int(v["ruler_seed"] or 0),
        haystack=ruler.NOISE if v["ruler_noise"] else haystack,
        answer_prefix=bool(v["ruler_prefix"]),
        examples=bool(v["ruler_examples"]),
        threshold=float(v["ruler_threshold"] or 0),
        **files,
        **extra,
    )


def scorer(v: dict[str, Any]) -> Scorer:
    if v["task"] == PERPLEXITY:
        return Scorer(PERPLEXITY)
    judge = None
    if v["scorer"] == "judge" and (v["judge_url"] or v["judge_model"]):
        judge = Endpoint(v["judge_url"] or "", v["judge_model"] or "", v["judge_key"] or None)
    return Scorer(v["scorer"], judge)


def output(v: dict[str, Any]) -> Path | None:
    """The result folder: a name or path under the workspace's evals/ (None: a new one)."""
    out = (v["out"] or "").strip()
    return workspace.resolve_inside(out, base=workspace.subdir("evals")) if out else None
