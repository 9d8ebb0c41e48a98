"""Plotly figures from evaluation cells: NIAH heatmap, base-vs-tuned difference, topic accuracy,
scores of held-out samples, perplexity curves.

Every figure is built from plain cell records (the lines of cells.jsonl), so the UI can redraw
it after each finished cell and watch the grid fill in; cells not finished yet stay blank.
Export writes HTML (plotly.js embedded: opens offline) or PNG (kaleido driving a local
Chrome/Chromium).

This module knows nothing about models, backends or gradio.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from core.errors import LongCtxError, first_line

# Red (0) -> yellow (0.5) -> green (1), the colours of the paper's Figure 1.
SCORE_COLORS = [[0.0, "#d73027"], [0.5, "#fee08b"], [1.0, "#1a9850"]]
DIFF_COLORS = [[0.0, "#d73027"], [0.5, "#f7f7f7"], [1.0, "#1a9850"]]
PALETTE = ["#4f46e5", "#059669", "#d97706", "#dc2626", "#0891b2", "#7c3aed"]


def _tokens_label(n: float) -> str:
    if n >= 1000 and n % 1000 == 0:
        return f"{int(n) // 1000}K"
    if n >= 1000:
        return f"{n / 1000:.1f}K"
    return str(int(n))


def _grid(
    cells: Iterable[dict[str, Any]], lengths: Sequence[int] | None, depths: Sequence[float] | None
) -> tuple[list[int], list[float], dict[tuple[int, float], list[dict[str, Any]]]]:
    by_cell: dict[tuple[int, float], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        if cell.get("score") is None:
            continue
        by_cell[(int(cell["length"]), float(cell["depth"]))].append(cell)
    xs = sorted(set(lengths or []) | {k[0] for k in by_cell})
    ys = sorted(set(depths or []) | {k[1] for k in by_cell})
    return xs, ys, by_cell


def _column_position(lengths: Sequence[int], tokens: float) -> float | None:
    """Where `tokens` falls on the categorical length axis (column i is at x = i)."""
    if not lengths or tokens < lengths[0] or tokens > lengths[-1]:
        return None
    for i in range(len(lengths) - 1):
        lo, hi = lengths[i], lengths[i + 1]
        if lo <= tokens <= hi:
            return i + (tokens - lo) / (hi - lo)
    return float(len(lengths) - 1)


def _hover_text(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, escaped and wrapped for a hover box (plotly renders
    <br>, and answers are user-visible text)."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    return "<br>".join(text[i : i + 60] for i in range(0, len(text), 60))


def _answer_hover(cells: list[dict[str, Any]]) -> str:
    return _hover_text(" | ".join(str(c.get("answer", "")) for c in cells), 240)


def heatmap(
    cells: Iterable[dict[str, Any]],
    *,
    lengths: Sequence[int] | None = None,
    depths: Sequence[float] | None = None,
    window: int | None = None,
    title: str = "Needle in a haystack",
) -> Any:
    """Score by context length (x) and needle depth (y), red -> yellow -> green.

    Args:
        cells: finished cells (`length`, `depth`, `score`, `answer`); repeated (length, depth)
            cells (trials) are averaged.
        lengths, depths: the planned grid, so unfinished cells show as blanks.
        window: draw a dashed vertical line at this many tokens (the model's window or
            training length), when it falls inside the grid.
    """

    xs, ys, by_cell = _grid(cells, lengths, depths)
    z, hover = [], []
    for d in ys:
        z_row, h_row = [], []
        for length in xs:
            group = by_cell.get((length, d), [])
            z_row.append(sum(c["score"] for c in group) / len(group) if group else None)
            hover_text = _answer_hover(group) if group else "not run yet"
            h_row.append(f"length {length} tokens<br>{hover_text}")
        z.append(z_row)
        hover.append(h_row)
    return _grid_figure(
        z,
        hover,
        xs,
        ys,
        window,
        title,
        zmin=0,
        zmax=1,
        colorscale=SCORE_COLORS,
        colorbar={"title": "score"},
        hovertemplate="depth %{y}<br>score %{z:.2f}<br>%{customdata}<extra></extra>",
    )


def _grid_figure(
    z: list,
    hover: list,
    xs: Sequence[int],
    ys: Sequence[float],
    window: int | None,
    title: str,
    **heatmap: Any,
) -> Any:
    """A length x depth heatmap; `heatmap` gives its scale, colours and hover text."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(len(xs))),
            y=[f"{d:g}%" for d in ys],
            customdata=hover,
            xgap=1,
            ygap=1,
            **heatmap,
        )
    )
    _length_axis(fig, xs)
    fig.update_yaxes(title="needle depth", autorange="reversed", type="category")
    _window_line(fig, xs, window)
    fig.update_layout(title=title, template="plotly_white", margin={"t": 60})
    return fig


def _length_axis(fig: Any, xs: Sequence[int]) -> None:
    fig.update_xaxes(
        title="context length (tokens)",
        tickvals=list(range(len(xs))),
        ticktext=[_tokens_label(x) for x in xs],
    )


def _window_line(fig: Any, xs: Sequence[int], window: int | None) -> None:
    if not window:
        return
    x = _column_position(xs, window)
    if x is None:
        return
    fig.add_vline(
        x=x,
        line_dash="dash",
        line_color="#333",
        annotation_text=f"window {_tokens_label(window)}",
        annotation_position="top",
    )


def diff_heatmap(
    base: Iterable[dict[str, Any]],
    tuned: Iterable[dict[str, Any]],
    *,
    labels: tuple[str, str] = ("base", "tuned"),
    window: int | None = None,
) -> Any:
    """Tuned minus base score per (length, depth): green where tuning helped, red where it hurt.
    Only cells present in both runs are coloured."""

    xa, ya, a = _grid(base, None, None)
    xb, yb, b = _grid(tuned, None, None)
    xs, ys = sorted(set(xa) | set(xb)), sorted(set(ya) | set(yb))

    def mean(group: list[dict[str, Any]]) -> float:
        return sum(c["score"] for c in group) / len(group)

    z, hover, paired = [], [], []
    for d in ys:
        z_row, h_row = [], []
        for length in xs:
            ga, gb = a.get((length, d)), b.get((length, d))
            if ga and gb:
                paired.append((mean(ga), mean(gb)))
                z_row.append(mean(gb) - mean(ga))
                h_row.append(
                    f"length {length} tokens<br>"
                    f"{labels[0]} {mean(ga):.2f}: {_answer_hover(ga)}<br>"
                    f"{labels[1]} {mean(gb):.2f}: {_answer_hover(gb)}"
                )
            else:
                z_row.append(None)
                h_row.append(f"length {length} tokens<br>missing in one run")
        z.append(z_row)
        hover.append(h_row)
    title = f"{labels[1]} minus {labels[0]}"
    if paired:  # the headline number: both means over the cells both runs have
        mean_a, mean_b = (sum(p[k] for p in paired) / len(paired) for k in (0, 1))
        title += (
            f"<br><sup>mean score {mean_b:.2f} vs. {mean_a:.2f} ({mean_b - mean_a:+.2f}) "
            f"over {len(paired)} cells</sup>"
        )
    return _grid_figure(
        z,
        hover,
        xs,
        ys,
        window,
        title,
        zmin=-1,
        zmax=1,
        zmid=0,
        colorscale=DIFF_COLORS,
        colorbar={"title": "difference"},
        hovertemplate="depth %{y}<br>difference %{z:+.2f}<br>%{customdata}<extra></extra>",
    )


def topic_accuracy(runs: dict[str, Iterable[dict[str, Any]]], *, x: str = "tokens") -> Any:
    """Topic-retrieval accuracy per topic count, one line per run (e.g. base and tuned).

    Args:
        runs: {label: cells}.
        x: `tokens` (mean prompt length of the topic count, as in the paper's Figure 2) or
            `topics` (the number of topics).
    """
    import plotly.graph_objects as go

    if x not in ("tokens", "topics"):
        raise LongCtxError(f"x must be 'tokens' or 'topics', got {x!r}")
    fig = go.Figure()
    for label, cells in runs.items():
        groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for cell in cells:
            if cell.get("score") is not None:
                groups[int(cell["n_topics"])].append(cell)
        ns = sorted(groups)
        tokens = [sum(c["length"] for c in groups[n]) / len(groups[n]) for n in ns]
        acc = [sum(c["score"] for c in groups[n]) / len(groups[n]) for n in ns]
        fig.add_trace(
            go.Scatter(
                x=tokens if x == "tokens" else ns,
                y=acc,
                mode="lines+markers",
                name=label,
                customdata=[[n, round(t), len(groups[n])] for n, t in zip(ns, tokens, strict=True)],
                hovertemplate="%{customdata[0]} topics, %{customdata[1]} tokens<br>"
                "accuracy %{y:.2f} over %{customdata[2]} trials<extra>" + label + "</extra>",
            )
        )
    fig.update_xaxes(title="context length (tokens)" if x == "tokens" else "number of topics")
    fig.update_yaxes(title="accuracy", range=[-0.05, 1.05])
    fig.update_layout(title="Topic retrieval", template="plotly_white")
    return fig


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split())


def cells_by_task(cells: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Cells grouped by their sample's `task` (`-` for none), tasks in name order."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        groups[str(cell.get("task") or "-")].append(cell)
    return dict(sorted(groups.items()))


def length_bins(
    cells: list[dict[str, Any]], bins: int = 6, at_least: int = 3
) -> list[tuple[float, float, int]]:
    """(mean prompt length, mean score, cells) of up to `bins` groups of scored cells of
    neighbouring lengths, equally filled with `at_least` cells each where there are enough: the
    trend of a scatter whose lengths are uneven (a group of one would only redraw the dots)."""
    scored = sorted((c for c in cells if c.get("score") is not None), key=lambda c: c["length"])
    if not scored:
        return []
    bins = max(1, min(bins, len(scored) // max(1, at_least)))
    out = []
    for k in range(bins):
        group = scored[k * len(scored) // bins : (k + 1) * len(scored) // bins]
        out.append(
            (
                sum(c["length"] for c in group) / len(group),
                sum(c["score"] for c in group) / len(group),
                len(group),
            )
        )
    return out


def sample_scores(
    runs: dict[str, tuple[Iterable[dict[str, Any]], int | None]],
    *,
    title: str = "Held-out samples",
) -> Any:
    """Scores of held-out questions against prompt length (left: each answer a dot, the binned
    mean a line) and the mean score per task (right), one colour per run (e.g. base and tuned).

    Args:
        runs: {label: (cells, the model's window or None)}.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.65, 0.35],
        horizontal_spacing=0.12,
        subplot_titles=("score by prompt length", "mean score by task"),
    )
    windows, longest = set(), 0
    for n, (label, (cells, window)) in enumerate(runs.items()):
        cells = [c for c in cells if c.get("score") is not None]
        color = PALETTE[n % len(PALETTE)]
        longest = max([longest, *(c["length"] for c in cells)])
        fig.add_trace(
            go.Scatter(
                x=[c["length"] for c in cells],
                y=[c["score"] for c in cells],
                mode="markers",
                name=f"{label}: answers",
                legendgroup=label,
                showlegend=False,
                marker={"color": color, "opacity": 0.45, "size": 7},
                customdata=[
                    [
                        c.get("line"),
                        c.get("turn"),
                        c.get("task"),
                        _hover_text(_one_line(c.get("question")), 160),
                        _hover_text(_one_line(c.get("answer")), 160),
                    ]
                    for c in cells
                ],
                hovertemplate="line %{customdata[0]}, answer %{customdata[1]} (%{customdata[2]})"
                "<br>%{x:,} tokens, score %{y:.2f}<br><b>Q</b> %{customdata[3]}<br><b>A</b> "
                "%{customdata[4]}<extra>" + label + "</extra>",
            ),
            row=1,
            col=1,
        )
        bins = length_bins(cells)
        mean = mean_score(cells)
        fig.add_trace(
            go.Scatter(
                x=[b[0] for b in bins],
                y=[b[1] for b in bins],
                mode="lines+markers",
                name=f"{label} (mean {mean:.2f})" if cells else label,
                legendgroup=label,
                line={"color": color, "width": 3},
                customdata=[b[2] for b in bins],
                hovertemplate="around %{x:,.0f} tokens<br>mean score %{y:.2f} over "
                "%{customdata} answers<extra>" + label + "</extra>",
            ),
            row=1,
            col=1,
        )
        by_task = cells_by_task(cells)
        fig.add_trace(
            go.Bar(
                x=list(by_task),
                y=[mean_score(group) for group in by_task.values()],
                name=label,
                legendgroup=label,
                showlegend=False,
                marker={"color": color},
                texttemplate="%{y:.2f}",
                textposition="outside",  # a mean of 0 has no bar
                customdata=[len(group) for group in by_task.values()],
                hovertemplate="%{x}: mean %{y:.2f} over %{customdata} answers"
                "<extra>" + label + "</extra>",
            ),
            row=1,
            col=2,
        )
        if window:
            windows.add(window)
    for window in sorted(w for w in windows if w < longest):
        fig.add_vline(
            x=window,
            line_dash="dash",
            line_color="#333",
            row=1,
            col=1,
            annotation_text=f"window {_tokens_label(window)}",
            annotation_position="top left",
        )
    fig.update_xaxes(title="prompt length (tokens)", row=1, col=1)
    fig.update_yaxes(title="score", range=[-0.05, 1.05], row=1, col=1)
    fig.update_yaxes(range=[0, 1.15], row=1, col=2)  # room for the value above a full bar
    fig.update_layout(title=title, template="plotly_white", barmode="group", margin={"t": 80})
    return fig


def perplexity(
    runs: dict[str, tuple[Iterable[dict[str, Any]], int | None]], *, title: str = "Perplexity"
) -> Any:
    """Perplexity against context length (left) and loss by position in the longest measured
    window (right), one line per run (e.g. base and tuned), each run's window marked.

    Args:
        runs: {label: (cells, the model's window or None)}.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from core.evals.perplexity import perplexity_by_length, position_losses

    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.16,
        subplot_titles=("perplexity by context length", "loss by position (longest length)"),
    )
    windows, lengths = set(), set()
    for n, (label, (cells, window)) in enumerate(runs.items()):
        cells = list(cells)
        color = PALETTE[n % len(PALETTE)]
        by_length = perplexity_by_length(cells)
        lengths.update(by_length)
        fig.add_trace(
            go.Scatter(
                x=list(by_length),
                y=[ppl for ppl, _ in by_length.values()],
                mode="lines+markers",
                name=label,
                legendgroup=label,
                line={"color": color},
                customdata=[w for _, w in by_length.values()],
                hovertemplate="%{x:,} tokens<br>perplexity %{y:.2f}<br>over %{customdata} windows"
                "<extra>" + label + "</extra>",
            ),
            row=1,
            col=1,
        )
        positions = position_losses(cells)
        if positions:
            length, xs, ys = positions
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=False,
                    line={"color": color},
                    hovertemplate="tokens %{x:,} of " + f"{length:,}" + "<br>mean loss %{y:.3f}"
                    "<extra>" + label + "</extra>",
                ),
                row=1,
                col=2,
            )
        if window:
            windows.add(window)
    # A window is marked where the text went past it; a line far right of every point would
    # only squash the curves to the left.
    for window in sorted(w for w in windows if lengths and w < max(lengths)):
        # Named once, on the linear panel: plotly places annotations on a log axis by log10(x).
        fig.add_vline(x=window, line_dash="dash", line_color="#333", row=1, col=1)
        fig.add_vline(
            x=window,
            line_dash="dash",
            line_color="#333",
            row=1,
            col=2,
            annotation_text=f"window {_tokens_label(window)}",
            annotation_position="bottom right",
        )
    ticks = sorted(lengths)
    fig.update_xaxes(
        title="context length (tokens)",
        type="log",
        row=1,
        col=1,
        tickvals=ticks,
        ticktext=[_tokens_label(t) for t in ticks],
    )
    fig.update_yaxes(title="perplexity", type="log", row=1, col=1)
    fig.update_xaxes(title="position in the window (tokens)", row=1, col=2)
    fig.update_yaxes(title="mean loss (nats)", row=1, col=2)
    fig.update_layout(title=title, template="plotly_white", margin={"t": 80})
    return fig


def export(fig: Any, path: str | os.PathLike) -> Path:
    """Write `fig` as `.html` (self-contained, opens offline) or `.png`.

    Raises:
        LongCtxError: another suffix, or PNG export without kaleido or a Chrome/Chromium.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        return path
    if suffix != ".png":
        raise LongCtxError(f"export as .html or .png, not {suffix or 'a file without suffix'}")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise LongCtxError(
            "PNG export needs kaleido (pip install kaleido) and Chrome or Chromium; "
            "export as .html instead, which needs neither"
        ) from None
    if not os.environ.get("BROWSER_PATH") and os.path.exists("/usr/bin/chromium"):
        os.environ["BROWSER_PATH"] = "/usr/bin/chromium"  # Debian's package, found offline
    try:
        fig.write_image(path, width=1000, height=600, scale=1)
    except Exception as exc:  # kaleido reports a missing browser in several ways
        reason = first_line(exc)
        raise LongCtxError(
            f"PNG export failed ({reason[:200]}); it needs a Chrome or Chromium that kaleido can "
            "start (set BROWSER_PATH to its binary); export as .html instead"
        ) from exc
    return path


def mean_score(cells: Iterable[dict[str, Any]]) -> float:
    """The average score of the finished cells (NaN when there are none)."""
    scores = [c["score"] for c in cells if c.get("score") is not None]
    return sum(scores) / len(scores) if scores else math.nan
