"""Plotly figures of a training set's statistics.

Each function takes per-sample statistics (`stats.SampleStats`) and returns a
`plotly.graph_objects.Figure`: token lengths with the max-length line and the share over it,
samples per task, answer lengths, evidence depths. This module knows nothing about gradio,
tokenizers or files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import plotly.graph_objects as go

from core.data.stats import SampleStats

_LAYOUT = {"template": "plotly_white", "margin": {"l": 50, "r": 20, "t": 50, "b": 45}}


def _empty(title: str, note: str) -> go.Figure:
    fig = go.Figure(layout={**_LAYOUT, "title": title})
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def length_histogram(
    samples: Sequence[SampleStats], max_length: int | None = None, *, bins: int = 50
) -> go.Figure:
    """Histogram of total tokens per sample, with the max-length line and the share over it."""
    totals = [s.total_tokens for s in samples if s.total_tokens is not None]
    title = "Tokens per sample"
    if not totals:
        return _empty(title, "no measured samples")
    fig = go.Figure(go.Histogram(x=totals, nbinsx=bins, name="samples", marker_color="#4C78A8"))
    if max_length:
        over = sum(1 for t in totals if t > max_length)
        share = 100.0 * over / len(totals)
        fig.add_vline(
            x=max_length,
            line_dash="dash",
            line_color="#E45756",
            annotation_text=f"max_length {max_length:,}: {over} over ({share:.1f} %)",
            annotation_position="top left",
        )
        title += f" — {share:.1f} % over {max_length:,}"
    fig.update_layout(**_LAYOUT, title=title, xaxis_title="tokens", yaxis_title="samples")
    return fig


def task_counts(samples: Sequence[SampleStats]) -> go.Figure:
    """Bar chart of samples per task (malformed rows in their own bar)."""
    counts = Counter("(malformed)" if s.kind == "bad" else s.task for s in samples)
    if not counts:
        return _empty("Samples per task", "no samples")
    names, values = zip(*counts.most_common(), strict=True)
    fig = go.Figure(go.Bar(x=list(names), y=list(values), marker_color="#72B7B2"))
    fig.update_layout(
        **_LAYOUT, title="Samples per task", xaxis_title="task", yaxis_title="samples"
    )
    return fig


def answer_length_histogram(samples: Sequence[SampleStats], *, bins: int = 40) -> go.Figure:
    """Histogram of loss tokens per answer (each assistant turn)."""
    lengths = [n for s in samples for n in s.answer_lengths]
    if not lengths:
        return _empty("Answer lengths", "no answers measured")
    fig = go.Figure(go.Histogram(x=lengths, nbinsx=bins, marker_color="#F58518"))
    fig.update_layout(
        **_LAYOUT,
        title="Answer lengths",
        xaxis_title="tokens (with end-of-turn)",
        yaxis_title="answers",
    )
    return fig


def evidence_histogram(samples: Sequence[SampleStats], *, bins: int = 20) -> go.Figure:
    """Histogram of where answers' evidence sits in their contexts (0 % start, 100 % end)."""
    depths = [d for s in samples for d in s.evidence if d is not None]
    if not depths:
        return _empty("Evidence depth", "not computed (measure with evidence) or no overlap found")
    fig = go.Figure(
        go.Histogram(
            x=depths, xbins={"start": 0, "end": 100, "size": 100 / bins}, marker_color="#54A24B"
        )
    )
    fig.update_layout(
        **_LAYOUT,
        title="Where the answers' evidence sits",
        xaxis_title="depth in context (%)",
        yaxis_title="answers",
        xaxis_range=[0, 100],
    )
    return fig
