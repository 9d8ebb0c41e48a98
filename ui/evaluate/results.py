"""Evaluate tab, part 3: past evaluations — pick one to see its figure, compare two, export.

Everything is read from the evaluation folders (`core.evals.results`), never from memory, so a
reload, a restart or a second browser shows the same list. Figures come from `core.evals.figures`:
the heatmap for NIAH and passkey, the accuracy curve for topic retrieval, perplexity curves, the
tuned-minus-base difference heatmap (or both curves) for a comparison. Below the figure, every
answer beside the expected one, lowest score first. Exports are written into the evaluation
folder and offered for download.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from core import workspace
from core.errors import LongCtxError
from core.evals import figures, results, runner
from core.evals.perplexity import perplexity_by_length
from ui.common import user_errors


@dataclass
class ResultsPanel:
    pick: gr.Dropdown
    summary: gr.Markdown
    view: gr.Plot
    x_axis: gr.Radio
    answers: gr.Dataframe
    answers_box: gr.Accordion
    resume: gr.Button
    base: gr.Dropdown
    tuned: gr.Dropdown

    @property
    def shown(self) -> list:
        """What `show()` updates."""
        return [self.summary, self.view, self.x_axis, self.answers, self.answers_box]

    @property
    def list_outputs(self) -> list:
        """What `refresh()` updates."""
        return [self.pick, self.base, self.tuned, *self.shown]


def folder(eval_id: str) -> Path:
    """An evaluation id from the list -> its folder (never outside the workspace's evals/)."""
    if not eval_id:
        raise LongCtxError("pick an evaluation first")
    return workspace.resolve_inside(eval_id, base=workspace.subdir("evals"))


def signature() -> tuple:
    """Changes when an evaluation folder appears or gets a cell; cheap enough for every tick."""
    base = workspace.subdir("evals")
    found = []
    for entry in os.scandir(base):
        cells = Path(entry.path) / results.CELLS_FILE
        found.append((entry.name, cells.stat().st_size if cells.exists() else -1))
    return tuple(sorted(found))


def _choices() -> list[tuple[str, str]]:
    choices = []
    for e in results.list_evals():
        mean = f", mean {e['mean_score']:.2f}" if e["mean_score"] is not None else ""
        if e["perplexity"]:
            mean = f", perplexity {e['perplexity'][1]:.2f} at {e['perplexity'][0]:,}"
        choices.append(
            (f"{e['id']} · {e['label']} · {e['done']}/{e['total']} cells{mean}", e["id"])
        )
    return choices


NOTHING_PICKED = "No evaluation picked."


def figure(eval_id: str, x: str = "tokens") -> Any:
    return runner.folder_figure(folder(eval_id), x)


def summary(path: Path, config: dict[str, Any], cells: list[dict[str, Any]]) -> str:
    head = f"**{config.get('kind')}** · {config.get('label')} · {len(cells)}/{config.get('total')} cells"
    if config.get("kind") == "perplexity":
        by_length = perplexity_by_length(cells)
        result = " · ".join(
            f"{n:,} tokens: perplexity **{p:.2f}**" for n, (p, _) in by_length.items()
        )
        return f"{head} · {result or 'nothing measured yet'} · `{workspace.shown(path)}`"
    mean = figures.mean_score(cells)
    mean_text = "n/a" if mean != mean else f"{mean:.3f}"
    return (
        f"{head} · mean score **{mean_text}** · scorer "
        f"{config.get('scorer', {}).get('kind')} · `{workspace.shown(path)}`"
    )


def refresh(current: str | None, x: str) -> list[Any]:
    """Updates for `ResultsPanel.list_outputs`: the lists, and the picked (else newest) figure."""
    choices = _choices()
    ids = [c[1] for c in choices]
    pick = current if current in ids else (ids[0] if ids else None)
    return [
        gr.update(choices=choices, value=pick),
        gr.update(choices=choices),
        gr.update(choices=choices),
        *show(pick, x),
    ]


def show(eval_id: str | None, x: str) -> list[Any]:
    """Summary, figure, x-axis switch (topic retrieval only) and answers table (all but
    perplexity) for one evaluation."""
    if not eval_id:
        return [NOTHING_PICKED, None, gr.update(visible=False), [], gr.update(visible=False)]
    path = folder(eval_id)  # read once for all four views: a timer tick redraws them
    record, cells = results.read_config(path), results.read_cells(path)
    kind = record.get("kind")
    return [
        summary(path, record, cells),
        runner.figure_from(record, cells, x),
        gr.update(visible=kind == "topics"),
        results.answer_rows(record, cells),
        gr.update(visible=kind != "perplexity"),
    ]


def compare(base_id: str, tuned_id: str, x: str = "tokens") -> Any:
    """Tuned minus base for two grids; both curves for two topic or perplexity evaluations."""
    if not base_id or not tuned_id:
        raise LongCtxError("pick both a base and a tuned evaluation to compare")
    if base_id == tuned_id:
        raise LongCtxError("pick two different evaluations: this one against itself shows nothing")
    return runner.compare_figure(folder(base_id), folder(tuned_id), x)


def export(fig: Any, path: Path) -> Any:
    """Write `fig` to `path`, let gradio serve that one file where it lies, and show it."""
    written = figures.export(fig, path)
    gr.set_static_paths([written])  # the workspace may lie outside gradio's allowed folders
    return gr.update(value=str(written), visible=True)


def build() -> ResultsPanel:
    """Lay out the past-evaluations panel and wire what needs only it (the caller wires Resume
    and the timer refresh)."""
    choices = _choices()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                # No value here: one fixed at app start would be every later page's pick. The
                # caller's first refresh picks the newest evaluation when the page loads.
                pick = gr.Dropdown(
                    choices, value=None, label="Evaluation", scale=5, elem_id="eval-pick"
                )
                refresh_btn = gr.Button("Refresh", scale=1)
                resume = gr.Button("Resume", scale=1, elem_id="eval-resume")
            info = gr.Markdown(NOTHING_PICKED, elem_id="eval-summary")
            view = gr.Plot(None, label="Figure", elem_id="eval-view")
            with gr.Accordion(
                "Answers, cell by cell (lowest score first)", open=False, visible=False
            ) as answers_box:
                answers = gr.Dataframe(
                    headers=results.ANSWER_COLUMNS,
                    interactive=False,
                    wrap=True,
                    elem_id="eval-answers",
                    column_widths=["9%", "8%", "24%", "23%", "28%", "8%"],
                )
        with gr.Column(scale=1, min_width=260):
            x_axis = gr.Radio(
                [("prompt tokens", "tokens"), ("number of topics", "topics")],
                value="tokens",
                label="Topic retrieval: x axis",
                visible=False,
            )
            with gr.Row():
                png = gr.Button("Export PNG", size="sm", elem_id="eval-png")
                html_btn = gr.Button("Export HTML", size="sm", elem_id="eval-html")
            download = gr.File(
                label="Download", interactive=False, visible=False, elem_id="eval-file"
            )
    with gr.Accordion("Compare two evaluations (base vs. tuned)", open=False):
        with gr.Row():
            base = gr.Dropdown(choices, value=None, label="Base", elem_id="eval-base")
            tuned = gr.Dropdown(choices, value=None, label="Tuned", elem_id="eval-tuned")
        with gr.Row():
            diff_btn = gr.Button("Compare", variant="primary", elem_id="eval-compare")
            diff_png = gr.Button("Export PNG", size="sm")
            diff_html = gr.Button("Export HTML", size="sm")
        diff = gr.Plot(label="Comparison", elem_id="eval-diff")
        diff_file = gr.File(label="Download", interactive=False, visible=False)
    panel = ResultsPanel(pick, info, view, x_axis, answers, answers_box, resume, base, tuned)

    gr.on(
        [pick.input, x_axis.change],
        user_errors(show),
        [pick, x_axis],
        panel.shown,
        show_progress="hidden",
    )
    refresh_btn.click(user_errors(refresh), [pick, x_axis], panel.list_outputs)
    diff_btn.click(user_errors(compare), [base, tuned, x_axis], diff)

    for button, suffix in ((png, ".png"), (html_btn, ".html")):
        button.click(
            user_errors(lambda i, x, s=suffix: export(figure(i, x), folder(i) / f"heatmap{s}")),
            [pick, x_axis],
            download,
        )
    for button, suffix in ((diff_png, ".png"), (diff_html, ".html")):
        button.click(
            user_errors(
                lambda a, b, x, s=suffix: export(compare(a, b, x), folder(b) / f"diff-vs-{a}{s}")
            ),
            [base, tuned, x_axis],
            diff_file,
        )
    return panel
