"""Plotly figures of training runs: live curves of one run, loss of several runs, the fit estimate.

Built from the plain records in metrics.jsonl; knows nothing about gradio.
"""

from __future__ import annotations

from typing import Any

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.train.memory import GB, FitEstimate

_LAYOUT = dict(
    template="plotly_white",
    margin=dict(l=50, r=20, t=40, b=40),
    height=520,
    legend=dict(orientation="h", y=-0.12),
)


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average, debiased like TensorBoard's smoothing."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def run_figure(metrics: list[dict[str, Any]], title: str = "") -> go.Figure:
    """2x2 panel: loss (raw, smoothed, and held-out where measured), learning rate, memory,
    tokens/s against step."""
    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=("loss", "learning rate", "memory (GB)", "tokens / s"),
        vertical_spacing=0.16,
        horizontal_spacing=0.1,
    )
    rows = [m for m in metrics if m.get("loss") is not None]
    steps = [m["step"] for m in rows]
    if rows:
        loss = [m["loss"] for m in rows]
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=loss,
                name="loss",
                mode="lines+markers",
                line=dict(color="rgba(99,110,250,0.35)"),
            ),
            1,
            1,
        )
        fig.add_trace(
            go.Scatter(
                x=steps, y=smooth(loss), name="loss (smoothed)", line=dict(color="#636efa", width=3)
            ),
            1,
            1,
        )
        held = [m for m in metrics if m.get("eval_loss") is not None]
        if held:
            fig.add_trace(
                go.Scatter(
                    x=[m["step"] for m in held],
                    y=[m["eval_loss"] for m in held],
                    name="held-out loss",
                    mode="lines+markers",
                    line=dict(color="#e45756", width=2, dash="dot"),
                    marker=dict(symbol="diamond", size=9),
                ),
                1,
                1,
            )
        fig.add_trace(
            go.Scatter(
                x=steps, y=[m.get("lr") for m in rows], name="lr", line=dict(color="#00cc96")
            ),
            1,
            2,
        )
        for key, label, color in (
            ("mem_bytes", "process RSS", "#ab63fa"),
            ("peak_mem_bytes", "process peak", "#ffa15a"),
            ("gpu_mem_bytes", "GPU", "#ef553b"),
            ("gpu_peak_mem_bytes", "GPU peak", "#ff6692"),
        ):
            if any(key in m for m in rows):
                fig.add_trace(
                    go.Scatter(
                        x=steps,
                        y=[(m.get(key) or 0) / GB for m in rows],
                        name=label,
                        line=dict(color=color),
                    ),
                    2,
                    1,
                )
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[m.get("tokens_per_s") for m in rows],
                name="tokens/s",
                line=dict(color="#19d3f3"),
            ),
            2,
            2,
        )
    else:
        fig.add_annotation(
            text="waiting for the first logged step…",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
        )
    fig.update_layout(title=title, **_LAYOUT)
    fig.update_xaxes(title_text="step", row=2)
    _whole_steps(fig, [m["step"] for m in metrics if "step" in m])
    return fig


def _whole_steps(fig: go.Figure, steps: list[int]) -> None:
    """Ticks on whole steps: plotly's own put a step 1.5 on a short run's axis."""
    if steps and max(steps) <= 12:
        fig.update_xaxes(dtick=1)


def overlay_figure(curves: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Smoothed loss of several runs on one chart, and their held-out loss where measured
    (dotted, in the run's colour)."""
    fig = go.Figure()
    colors = plotly.colors.qualitative.Plotly  # plotly_white's own order
    for n, (name, metrics) in enumerate(curves.items()):
        color = colors[n % len(colors)]
        rows = [m for m in metrics if m.get("loss") is not None]
        if rows:
            fig.add_trace(
                go.Scatter(
                    x=[m["step"] for m in rows],
                    line=dict(color=color),
                    y=smooth([m["loss"] for m in rows]),
                    name=name,
                )
            )
        held = [m for m in metrics if m.get("eval_loss") is not None]
        if held:
            fig.add_trace(
                go.Scatter(
                    x=[m["step"] for m in held],
                    y=[m["eval_loss"] for m in held],
                    name=f"{name} (held-out)",
                    mode="lines+markers",
                    line=dict(color=color, dash="dot"),
                )
            )
    fig.update_layout(
        title="loss (smoothed)",
        xaxis_title="step",
        yaxis_title="loss",
        **{**_LAYOUT, "height": 360},
    )
    _whole_steps(fig, [m["step"] for ms in curves.values() for m in ms if "step" in m])
    return fig


def fit_figure(est: FitEstimate) -> go.Figure:
    """One stacked horizontal bar of the estimated memory, with the device's capacity marked.

    Each part's size is in its legend entry: at 8B scale the parts differ by 100x, and the thin
    ones are not readable off the bar.
    """
    colors = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#b6e880"]
    fig = go.Figure()
    for (name, value), color in zip(est.parts.items(), colors * 2, strict=False):
        fig.add_trace(
            go.Bar(
                y=[""],
                x=[value / GB],
                name=f"{name}: {value / GB:.2f} GB",
                orientation="h",
                marker_color=color,
                width=0.6,
                hovertemplate=f"{name}: %{{x:.2f}} GB<extra></extra>",
            )
        )
    right = est.total
    if est.capacity:
        right = max(right, est.capacity)
        fig.add_vline(
            x=est.capacity / GB,
            line=dict(color="black", dash="dash"),
            annotation_text=f"{est.device}: {est.capacity / GB:.0f} GB",
            annotation_position="top left",
        )
    # The top margin leaves room for gradio's label badge, which sits over the plot's corner.
    fig.update_layout(
        barmode="stack",
        height=300,
        template="plotly_white",
        margin=dict(l=10, r=10, t=60, b=10),
        xaxis=dict(ticksuffix=" GB", range=[0, right / GB * 1.08]),
        legend=dict(orientation="h", y=-0.25, yanchor="top", traceorder="normal"),
        yaxis=dict(showticklabels=False),
    )
    return fig
