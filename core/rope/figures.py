"""Figures of the RoPE advisor: what a new base does to each dimension pair's wavelength and to
the long-range attention bias B(m) (`base_figure`), and every extension method's wavelengths
side by side (`methods_figure`). The numbers come from `advisor` and `methods`; this module only
draws them with plotly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from core.models.rope import RopeSetting
from core.rope import methods
from core.rope.advisor import (
    RopeShape,
    attention_bias,
    blas_one_thread,
    compact,
    tokens,
    wavelengths,
)


def _envelope(values: np.ndarray, buckets: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) keeping each bucket's minimum and maximum in order: a few thousand points that
    still show every dip, where subsampling would skip the narrow ones."""
    size = max(1, math.ceil(len(values) / buckets))
    pad = (-len(values)) % size
    grid = np.concatenate([values, np.full(pad, np.nan)]).reshape(-1, size)
    lo, hi = np.nanargmin(grid, axis=1), np.nanargmax(grid, axis=1)
    offsets = np.arange(grid.shape[0]) * size
    x = np.stack([offsets + np.minimum(lo, hi), offsets + np.maximum(lo, hi)], axis=1).ravel()
    x = np.unique(x)
    return x, values[x]


def base_figure(shape: RopeShape, new_base: float, target: int) -> Any:
    """Two panels: wavelength per rotated pair (log scale) with the window and the target, and
    B(m)/(head_dim/2) up to the target, each for the original and the new base."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    target = int(target)
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=(
            "Wavelength of each dimension pair",
            "Attention bias B(m): above 0 is good",
        ),
    )
    colors = {"original": "#9ca3af", "new": "#4f46e5"}
    pairs = np.arange(shape.pairs)
    for kind, base in (("original", shape.base), ("new", float(new_base))):
        fig.add_trace(
            go.Scatter(
                x=pairs,
                y=wavelengths(base, shape.head_dim),
                mode="lines+markers",
                name=f"{kind} base {compact(base)}",
                legendgroup=kind,
                marker={"size": 4},
                line={"color": colors[kind]},
                hovertemplate="pair %{x}<br>%{y:.3s} tokens per turn<extra></extra>",
            ),
            1,
            1,
        )
    # Reference lines as traces rather than shapes: they stay in data units on the log axis.
    for label, value, dash in (("window", shape.window, "dash"), ("target", target, "dot")):
        fig.add_trace(
            go.Scatter(
                x=[0, shape.pairs - 1],
                y=[value, value],
                mode="lines",
                line={"dash": dash, "color": "#dc2626" if label == "target" else "#059669"},
                name=f"{label} {tokens(value)} tokens",
                hoverinfo="name",
            ),
            1,
            1,
        )
    with blas_one_thread():
        for kind, base in (("original", shape.base), ("new", float(new_base))):
            bias = attention_bias(base, shape.head_dim, 0, target) / shape.pairs
            x, y = _envelope(bias)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=f"B(m), {kind} base {compact(base)}",
                    legendgroup=kind,
                    showlegend=False,
                    line={"color": colors[kind], "width": 1},
                    hovertemplate="distance %{x}<br>B/(d/2) %{y:.3f}<extra></extra>",
                ),
                1,
                2,
            )
    fig.add_hline(y=0, line={"color": "#111827", "width": 1}, row=1, col=2)
    fig.add_vline(
        x=shape.window,
        line={"color": "#059669", "dash": "dash"},
        row=1,
        col=2,
        annotation_text="window",
        annotation_position="top right",
    )
    fig.update_xaxes(title="dimension pair (fast -> slow)", row=1, col=1)
    fig.update_yaxes(title="tokens per turn", type="log", row=1, col=1)
    fig.update_xaxes(title="distance m (tokens)", row=1, col=2)
    fig.update_yaxes(title="B(m) / (head_dim / 2)", row=1, col=2)
    fig.update_layout(
        title=f"RoPE base {compact(shape.base)} -> {compact(new_base)} for {tokens(target)} tokens",
        template="plotly_white",
        height=460,
        margin={"l": 60, "r": 20, "t": 80, "b": 50},
        legend={"orientation": "h", "y": -0.18},
    )
    return fig


def methods_figure(config: Any, settings: list[RopeSetting], target: int) -> Any:
    """Wavelength per dimension pair for the model as it is and under each setting, with its
    window and the target marked: a method leaves a pair alone where its line meets the
    original's, and stretches it where it rises."""
    import plotly.graph_objects as go

    window = int(config.max_position_embeddings)
    fig = go.Figure()
    lines = [("as trained", None), *((s.label, s) for s in settings)]
    for label, setting in lines:
        waves = methods.wavelengths(config, setting, target)
        fig.add_trace(
            go.Scatter(
                x=np.arange(len(waves)),
                y=waves,
                mode="lines+markers",
                name=label,
                marker={"size": 3},
                line={
                    "width": 2 if setting else 3,
                    "color": "#9ca3af" if setting is None else None,
                },
                hovertemplate=f"{label}<br>pair %{{x}}<br>%{{y:.3s}} tokens per turn<extra></extra>",
            )
        )
    pairs = len(methods.wavelengths(config, None, target))
    for label, value, dash, colour in (
        ("window", window, "dash", "#059669"),
        ("target", target, "dot", "#dc2626"),
    ):
        fig.add_trace(
            go.Scatter(
                x=[0, pairs - 1],
                y=[value, value],
                mode="lines",
                name=f"{label} {tokens(value)}",
                line={"dash": dash, "color": colour},
                hoverinfo="name",
            )
        )
    fig.update_layout(
        title=f"What each method does to each dimension pair, for {tokens(target)} tokens",
        xaxis_title="dimension pair (fast -> slow)",
        yaxis_title="tokens per turn",
        yaxis_type="log",
        template="plotly_white",
        height=460,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
