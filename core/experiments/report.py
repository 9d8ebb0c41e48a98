"""An experiment's report: one self-contained HTML page (plotly.js inlined, opens offline) and a
Markdown summary for the model card.

Sections: the recipe and the data counts; the loss curves; NIAH heatmaps of every model side by
side; perplexity by context length and by position; the scorecard of every suite that ran, with
NIAH by length; the wall time and peak memory of each step. Everything is read from the step
folders, so the report of a half-finished experiment shows what is done, and rendering it again
after a resume gives the whole.

This module knows nothing about gradio or processes.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.evals import figures, results, scorecard
from core.experiments.spec import BASE, ROPE, Experiment, Step

GRID_TASKS = {"niah": "Needle in a haystack", "passkey": "Passkey retrieval"}
"""Tasks drawn as one length x depth heatmap per model, side by side."""
FIGURES = "figures"
"""Sub-folder for the PNG copies of the report's figures (for a README)."""


def model_label(step: Step) -> str:
    """What the report calls a model: base, `base + RoPE only`, or the training step's name."""
    return {BASE: "base", ROPE: "RoPE change only"}.get(step.model, step.model)


def _done(folder: Path, step: Step) -> bool:
    return (folder / step.id / "config.json").exists()


def eval_folders(folder: Path, experiment: Experiment, task: str) -> dict[str, Path]:
    """{model label: evaluation folder} of one task, for the steps that have started."""
    return {
        model_label(s): folder / s.id
        for s in experiment.of_kind("eval")
        if s.task == task and _done(folder, s)
    }


def build_scorecard(folder: Path, experiment: Experiment) -> scorecard.Scorecard | None:
    """Every suite that ran, one column per model; NIAH and passkey also by length."""
    card = scorecard.Scorecard()
    for step in experiment.of_kind("eval"):
        path = folder / step.id
        if not _done(folder, step):
            continue
        record, cells = results.read_config(path), results.read_cells(path)
        rows = scorecard.rows_of(record, cells)
        if step.task in ("niah", "passkey"):
            rows.update(_by_length(step.task, cells))
        column = model_label(step)
        if rows and column not in card.columns:
            card.columns.append(column)
        for row, value in rows.items():
            card.rows.setdefault(row, {})[column] = value
            card.sources.setdefault(row, {})[column] = str(path)
    return card if card.rows else None


def _by_length(task: str, cells: list[dict[str, Any]]) -> dict[str, float]:
    by: dict[int, list[float]] = {}
    for cell in cells:
        if isinstance(cell.get("score"), (int, float)) and cell.get("length"):
            by.setdefault(int(cell["length"]), []).append(float(cell["score"]))
    name = "NIAH" if task == "niah" else "Passkey"
    return {
        f"{name} @ {scorecard.k_label(n)}": 100 * sum(v) / len(v) for n, v in sorted(by.items())
    }


def _rows(path: Path) -> int:
    try:
        with path.open() as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def data_counts(folder: Path, experiment: Experiment) -> list[tuple[str, str, int]]:
    """(step, file, samples) of every data file the experiment made."""
    out = []
    for step in experiment.of_kind("data"):
        for path in sorted((folder / step.id).glob("*.jsonl")):
            out.append((step.id, path.name, _rows(path)))
    return out


def _recipe_lines(step: Step, folder: Path) -> list[str]:
    c = step.config or {}
    data = ", ".join(
        Path(d["path"]).parent.name
        if d.get("path", "").startswith("{dir}")
        else (d.get("path") or f"{d.get('procedural')} x{d.get('n')} @ {d.get('length')}")
        for d in c.get("data", [])
    )
    rope = c.get("rope") or (f"base {c['rope_theta']:g}" if c.get("rope_theta") else "unchanged")
    status = _json(folder / step.id / "status.json")
    return [
        f"model {c.get('model')}; RoPE {rope}; max length {c.get('max_length'):,} tokens",
        f"LoRA r={c.get('lora_r')}, alpha={c.get('lora_alpha')}, on "
        f"{', '.join(c.get('lora_targets') or [])}"
        + ("; embeddings trained" if c.get("train_embeddings") else ""),
        f"lr {c.get('learning_rate')} ({c.get('lr_scheduler')}), global batch "
        f"{c.get('global_batch_size')}, {status.get('step', '?')}/"
        f"{status.get('max_steps', c.get('max_steps'))} steps, precision {c.get('precision')}",
        f"data: {data}",
    ]


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def step_rows(
    state: dict[str, Any],
    experiment: Experiment,
    progress: Callable[[Step, dict[str, Any]], str] | None = None,
) -> list[list[str]]:
    """Header plus one row per step: step, state, wall time (counting on while it runs), peak
    memory; with `progress`, a column of what it says for each step after the state."""
    head = ["step", "state", "wall time", "peak memory (RSS)"]
    rows = [head[:2] + ["progress"] + head[2:] if progress else head]
    for step in experiment.steps:
        record = state.get("steps", {}).get(step.id, {})
        now = record.get("state", "pending")
        seconds = record.get("seconds")
        if now == "running" and record.get("started"):
            seconds = record.get("seconds_before", 0) + time.time() - record["started"]
        peak = record.get("peak_rss")
        row = [
            step.id,
            now,
            duration(seconds) if seconds is not None else "",
            f"{peak / 2**30:.2f} GB" if peak else "",
        ]
        if progress:
            row.insert(2, progress(step, record))
        rows.append(row)
    return rows


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# -- figures -------------------------------------------------------------------------------


def loss_figure(folder: Path, experiment: Experiment) -> Any | None:
    from core.train import runs
    from core.train.figures import overlay_figure, run_figure

    curves = {
        s.id.removeprefix("train-"): runs.read_metrics(folder / s.id)
        for s in experiment.of_kind("train")
        if (folder / s.id / "metrics.jsonl").exists()
    }
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    if len(curves) == 1:
        name, metrics = next(iter(curves.items()))
        return run_figure(metrics, title=f"training: {name}")
    return overlay_figure(curves)


def niah_figures(folder: Path, experiment: Experiment, task: str = "niah") -> list[Any]:
    """One heatmap per model, on the same grid, titled by the model and its mean score."""
    out = []
    for label, path in eval_folders(folder, experiment, task).items():
        record, cells = results.read_config(path), results.read_cells(path)
        task_record = record.get("task", {})
        mean = figures.mean_score(cells)
        title = f"{label}: mean {mean:.2f}" if cells else f"{label}: not run yet"
        out.append(
            figures.heatmap(
                cells,
                lengths=task_record.get("lengths"),
                depths=task_record.get("depths"),
                window=record.get("window"),
                title=title,
            )
        )
    return out


def grids_figure(folder: Path, experiment: Experiment, task: str) -> Any | None:
    """The heatmaps of one grid task, one panel per model side by side, on one colour scale."""
    from plotly.subplots import make_subplots

    heatmaps = niah_figures(folder, experiment, task)
    if not heatmaps:
        return None
    titles = [h.layout.title.text for h in heatmaps]
    fig = make_subplots(rows=1, cols=len(heatmaps), subplot_titles=titles, shared_yaxes=True)
    for col, heatmap in enumerate(heatmaps, start=1):
        for trace in heatmap.data:
            if col > 1 and hasattr(trace, "showscale"):
                trace.showscale = False
            fig.add_trace(trace, row=1, col=col)
        for shape in heatmap.layout.shapes or ():  # the window's dashed line
            fig.add_vline(x=shape.x0, line_dash="dash", line_color="#333", row=1, col=col)
        axis = heatmap.layout.xaxis
        fig.update_xaxes(
            title="context length (tokens)",
            tickvals=axis.tickvals,
            ticktext=axis.ticktext,
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_yaxes(title="needle depth", row=1, col=1)
    fig.update_layout(
        title=GRID_TASKS.get(task, task), template="plotly_white", height=380, margin={"t": 90}
    )
    return fig


def perplexity_figure(folder: Path, experiment: Experiment) -> Any | None:
    measured = {
        label: (results.read_cells(path), results.read_config(path).get("window"))
        for label, path in eval_folders(folder, experiment, "perplexity").items()
    }
    measured = {k: v for k, v in measured.items() if v[0]}
    if not measured:
        return None
    return figures.perplexity(measured, title="Perplexity by context length and by position")


def other_figures(folder: Path, experiment: Experiment) -> list[Any]:
    """RULER, held-out samples and the other suites: each task's models on one figure where the
    task draws several (RULER, samples), else one per model."""
    from core.evals import ruler
    from core.evals.runner import folder_figure

    out = []
    done = {*GRID_TASKS, "perplexity"}
    for task in dict.fromkeys(s.task for s in experiment.of_kind("eval")):
        if task in done:
            continue
        folders = eval_folders(folder, experiment, task)
        if task == "ruler" and folders:
            cells = {label: results.read_cells(p) for label, p in folders.items()}
            out.append(ruler.figure(cells, ruler.THRESHOLD, title="RULER by length"))
            continue
        out += [folder_figure(p) for p in folders.values() if results.read_cells(p)]
    return out


# -- the page ------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #111827;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .muted { color: #6b7280; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #e5e7eb; padding: 0.3em 0.7em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
code, pre { background: #f3f4f6; padding: 0.1em 0.3em; border-radius: 4px; }
pre { padding: 0.8em; overflow-x: auto; }
.state-done { color: #047857; } .state-failed { color: #b91c1c; }
"""


def _table(rows: list[list[Any]]) -> str:
    head, *body = rows
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for row in body:
        cells = []
        for i, value in enumerate(row):
            text = "" if value is None else str(value)
            css = f' class="state-{text}"' if i == 1 and text in ("done", "failed") else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _figure_html(fig: Any, height: int | None = None) -> str:
    if height:
        fig.update_layout(height=height)
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def render(folder: str | Path, experiment: Experiment, state: dict[str, Any]) -> str:
    """The report page as HTML text."""
    import plotly.offline

    folder = Path(folder)
    parts: list[str] = []
    started = state.get("started")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else ""
    total = sum(float(r.get("seconds") or 0) for r in state.get("steps", {}).values())
    parts.append(f"<h1>Experiment {html.escape(experiment.name)}</h1>")
    parts.append(
        f"<p class='muted'>{html.escape(state.get('state', 'created'))}"
        + (f" · started {when}" if when else "")
        + f" · {duration(total)} of steps"
        + (f" · {html.escape(state['reason'])}" if state.get("reason") else "")
        + "</p>"
    )
    if experiment.description:
        parts.append(f"<p>{html.escape(experiment.description)}</p>")
    parts.append(
        f"<p>Run it again (finished steps are skipped): "
        f"<code>longctx experiment run {html.escape(experiment.name)}</code></p>"
    )

    parts.append("<h2>Recipe and data</h2>")
    for step in experiment.of_kind("train"):
        items = "".join(f"<li>{html.escape(x)}</li>" for x in _recipe_lines(step, folder))
        parts.append(f"<p><b>{html.escape(step.id)}</b></p><ul>{items}</ul>")
    counts = data_counts(folder, experiment)
    if counts:
        parts.append(_table([["step", "file", "samples"], *[list(c) for c in counts]]))

    loss = loss_figure(folder, experiment)
    if loss is not None:
        parts.append("<h2>Training loss</h2>" + _figure_html(loss))

    for task, title in GRID_TASKS.items():
        grids = grids_figure(folder, experiment, task)
        if grids is not None:
            parts.append(f"<h2>{title}</h2>" + _figure_html(grids, 420))

    ppl = perplexity_figure(folder, experiment)
    if ppl is not None:
        parts.append("<h2>Perplexity</h2>" + _figure_html(ppl))

    others = other_figures(folder, experiment)
    if others:
        parts.append("<h2>Other evaluations</h2>")
        parts += [_figure_html(f) for f in others]

    card = build_scorecard(folder, experiment)
    if card is not None:
        parts.append("<h2>Scorecard</h2>")
        parts.append(
            "<p class='muted'>Scores in percent (perplexity as it is); NIAH and passkey "
            "also by context length.</p>"
        )
        table = card.table()
        if not any(row[-2] for row in table[1:]):  # no published numbers for these rows
            table = [row[:-2] for row in table]
        parts.append(_table(table))

    parts.append("<h2>Steps</h2>" + _table(step_rows(state, experiment)))
    parts.append(f"<h2>Experiment file</h2><pre>{html.escape(experiment.to_yaml())}</pre>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(experiment.name)} · LongCtx Studio</title>"
        f"<style>{_STYLE}</style>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        + "\n".join(parts)
        + "<p class='muted'>Made by LongCtx Studio.</p></body></html>"
    )


def write(folder: str | Path, experiment: Experiment, state: dict[str, Any]) -> Path:
    """Write report.html into the experiment's folder."""
    from core.data.io import atomic_write

    folder = Path(folder)
    path = folder / "report.html"
    atomic_write(path, [render(folder, experiment, state).encode()], backup=False)
    return path


def write_pngs(folder: str | Path, experiment: Experiment) -> list[Path]:
    """PNG copies of the report's figures under figures/ (needs kaleido and a Chromium)."""
    folder = Path(folder)
    out = folder / FIGURES
    written = []
    named: list[tuple[str, Any]] = []
    loss = loss_figure(folder, experiment)
    if loss is not None:
        named.append(("loss", loss))
    for task in GRID_TASKS:
        grids = grids_figure(folder, experiment, task)
        if grids is not None:
            named.append((task, grids))
    ppl = perplexity_figure(folder, experiment)
    if ppl is not None:
        named.append(("perplexity", ppl))
    for name, fig in named:
        written.append(figures.export(fig, out / f"{name}.png"))
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def summary_markdown(folder: str | Path, experiment: Experiment, state: dict[str, Any]) -> str:
    """The scorecard and steps as Markdown, for a model card."""
    folder = Path(folder)
    lines = [
        f"Experiment `{experiment.name}` (LongCtx Studio): the report is `report.html` in "
        "its folder.",
        "",
    ]
    card = build_scorecard(folder, experiment)
    if card is not None:
        lines += [card.markdown().rstrip(), ""]
    rows = step_rows(state, experiment)
    lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"
