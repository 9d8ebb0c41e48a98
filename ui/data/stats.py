"""Data tab, statistics: token-length histogram against max length, tasks, answer lengths,
evidence depths, duplicate contexts and near-duplicate questions.

Figures come from `core.data.figures`, duplicates from `core.data.dedup`, both computed on the
statistics of the rows as they are now (unsaved edits included).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from core.data import dedup, figures
from core.data.session import Opened
from ui.common import optional_int

DUP_COLUMNS = ["samples (#)", "lines", "copies"]
NEAR_COLUMNS = ["similarity", "sample A", "sample B", "question A", "question B"]


@dataclass
class StatsPanel:
    inputs: list
    outputs: list

    def follow(self, event) -> None:
        """Redraw once `event` succeeded (the rows or the max length changed)."""
        event.success(render, self.inputs, self.outputs, show_progress="hidden")


def _summary(op: Opened, max_length: int | None) -> str:
    s = op.stats.summary(max_length)
    t, a = s["tokens"], s["answer_tokens"]
    lines = [
        f"**{s['samples']:,} samples** ({s['chat']:,} chat, {s['text']:,} text, "
        f"{s['malformed']:,} malformed) under **{s['tokenizer']}**",
        f"Tokens per sample: min {t['min']:,} · median {t['median']:,.0f} · mean "
        f"{t['mean']:,.0f} · max {t['max']:,} · total {t['sum']:,}",
        f"Answer tokens (loss, per answer): median {a['median']:,.0f} · max {a['max']:,} · "
        f"total {a['sum']:,}",
    ]
    if max_length:
        lines.append(
            f"Over max length {max_length:,}: **{s['over_max_length']:,}** "
            f"({100 * s['over_share']:.1f} %), dropped by default"
        )
    return "  \n".join(lines)


def render(op: Opened | None, max_length) -> list:
    """Summary, four figures and the two duplicate lists."""
    if op is None or op.stats is None:
        return ["Open a file to see its statistics.", None, None, None, None, None, None]
    samples, limit = op.stats.samples, optional_int(max_length)
    groups = dedup.duplicate_contexts(samples)
    dups = [
        [", ".join(map(str, g.indices[:20])), ", ".join(map(str, g.lines[:20])), len(g.indices)]
        for g in groups
    ]
    near = [
        [p.similarity, p.a[0], p.b[0], p.question_a, p.question_b]
        for p in dedup.near_duplicate_questions(samples)[:500]
    ]
    return [
        _summary(op, limit),
        figures.length_histogram(samples, limit),
        figures.task_counts(samples),
        figures.answer_length_histogram(samples),
        figures.evidence_histogram(samples),
        gr.update(
            value={"headers": DUP_COLUMNS, "data": dups},
            label=f"Duplicate contexts: {len(groups):,} group(s)",
        ),
        gr.update(
            value={"headers": NEAR_COLUMNS, "data": near},
            label=f"Near-duplicate questions (word overlap ≥ 0.8): {len(near):,} pair(s)",
        ),
    ]


def build(opened: gr.State, max_length: gr.Number) -> StatsPanel:
    """Lay out the statistics panel."""
    summary = gr.Markdown("Open a file to see its statistics.", elem_id="data-summary")
    with gr.Row():
        lengths = gr.Plot(label="Tokens per sample", elem_id="data-lengths")
        tasks = gr.Plot(label="Samples per task", elem_id="data-tasks")
    with gr.Row():
        answers = gr.Plot(label="Answer lengths")
        depths = gr.Plot(label="Evidence depth", elem_id="data-depths")
    with gr.Row():
        dup = gr.Dataframe(
            headers=DUP_COLUMNS,
            interactive=False,
            max_height=300,
            label="Duplicate contexts (same long context in several samples)",
            elem_id="data-dup",
        )
        near = gr.Dataframe(
            headers=NEAR_COLUMNS,
            interactive=False,
            max_height=300,
            wrap=True,
            column_widths=["12%", "10%", "10%", "34%", "34%"],
            label="Near-duplicate questions (word overlap ≥ 0.8)",
            elem_id="data-near",
        )
    return StatsPanel([opened, max_length], [summary, lengths, tasks, answers, depths, dup, near])
