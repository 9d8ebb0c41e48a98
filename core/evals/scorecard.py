"""The scorecard: every suite and length evaluated for a base model and its tuned runs, in one
table and one figure, with published references beside ours.

Each evaluation folder gives rows (`RULER mean @ 32K`, `MMLU 0-shot`, `LongBench avg`, one per
lm-eval task, `NIAH mean`, ...) for one column (the base, or a tuned run named by its adapter or
RoPE base); where a folder's row appears twice for the same column, the newest folder wins.
References carry their source: the paper's tables (LongBench, MMLU) and RULER's README
(Llama-3.1-8B at 32K / 64K / 128K).

This module knows nothing about gradio or argparse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import LongCtxError
from core.evals import harness, mmlu, results, ruler

PAPER = "the paper (Extending Llama-3's Context Ten-Fold Overnight)"
RULER_README = "RULER's README (github.com/NVIDIA/RULER), Llama-3.1-8B"


@dataclass(frozen=True)
class Reference:
    row: str
    model: str
    value: float
    source: str


REFERENCES = (
    Reference("LongBench avg", "Llama-3-8B-Instruct", 43.20, f"{PAPER}, LongBench table"),
    Reference("LongBench avg", "Llama-3-8B-Instruct-80K-QLoRA", 47.19, f"{PAPER}, LongBench table"),
    Reference("MMLU 0-shot", "Llama-3-8B-Instruct", 65.91, f"{PAPER}, MMLU table"),
    Reference("MMLU 0-shot", "Llama-3-8B-Instruct-80K-QLoRA", 64.44, f"{PAPER}, MMLU table"),
    Reference("RULER mean @ 32K", "Llama-3.1-8B", 87.4, RULER_README),
    Reference("RULER mean @ 64K", "Llama-3.1-8B", 84.7, RULER_README),
    Reference("RULER mean @ 128K", "Llama-3.1-8B", 77.0, RULER_README),
)
_MEAN_ROWS = {
    "niah": "NIAH mean",
    "passkey": "Passkey mean",
    "topics": "Topic retrieval",
    "samples": "Held-out samples",
}


def k_label(length: int) -> str:
    """32768 and 32000 -> `32K` (RULER names its lengths in units of 1024)."""
    if length % 1024 == 0:
        return f"{length // 1024}K"
    if length % 1000 == 0:
        return f"{length // 1000}K"
    return f"{length:,}"


def rows_of(record: dict[str, Any], cells: list[dict[str, Any]]) -> dict[str, float]:
    """An evaluation's scorecard rows, in percent (perplexity rows in perplexity)."""
    kind = record.get("kind")
    if kind == "ruler":
        means = ruler.mean_by_length(ruler.score_table(cells))
        return {f"RULER mean @ {k_label(n)}": v for n, v in means.items()}
    if kind == harness.KIND:
        tasks = (record.get("task") or {}).get("tasks", [])
        if set(tasks) & {mmlu.HUB_TASK, mmlu.FILE_TASK}:
            overall = mmlu.scores(cells)["overall"]
            return {} if overall is None else {"MMLU 0-shot": overall}
        by_task = {t: 100 * next(iter(m.values())) for t, m in harness.summary(cells).items() if m}
        rows = {f"lm-eval {t}": v for t, v in by_task.items()}
        longbench = [v for t, v in by_task.items() if t.startswith("longbench")]
        if longbench:
            rows["LongBench avg"] = sum(longbench) / len(longbench)
        return rows
    if kind == "perplexity":
        from core.evals.perplexity import perplexity_by_length

        by_length = perplexity_by_length(cells)
        return {f"Perplexity @ {k_label(n)}": v[0] for n, v in by_length.items()}
    scores = [c["score"] for c in cells if isinstance(c.get("score"), (int, float))]
    if kind in _MEAN_ROWS and scores:
        return {_MEAN_ROWS[kind]: 100 * sum(scores) / len(scores)}
    return {}


def column_of(record: dict[str, Any]) -> str:
    """`base` for the base model itself; a tuned run by its adapter's run (or RoPE base)."""
    from core.evals.backends import Target

    target = record.get("target") or {}
    model = target.get("model") or {}
    if target.get("endpoint"):
        return target["endpoint"].get("model", "endpoint")
    if not model.get("adapter") and not model.get("rope_theta"):
        return "base"
    return Target(**target).slug


@dataclass
class Scorecard:
    """Rows x columns of our scores, and the references of each row."""

    columns: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per row and column, the evaluation folder the value came from."""

    def references(self, row: str) -> list[Reference]:
        return [r for r in REFERENCES if r.row == row]

    def table(self) -> list[list[Any]]:
        """Header plus one line per row: row, our columns (rounded), published, source."""
        header = ["suite", *self.columns, "published", "source"]
        lines: list[list[Any]] = [header]
        for row, values in self.rows.items():
            refs = self.references(row)
            published = "; ".join(f"{r.model} {r.value:g}" for r in refs)
            source = "; ".join(sorted({r.source for r in refs}))
            ours = [round(values[c], 2) if c in values else None for c in self.columns]
            lines.append([row, *ours, published, source])
        return lines

    def markdown(self) -> str:
        """The table as Markdown (for a model card)."""
        header, *body = self.table()

        def cell(v: Any) -> str:
            return "" if v is None else str(v)

        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell(v) for v in line) + " |" for line in body]
        return "\n".join(out) + "\n"

    def figure(self, title: str = "Scorecard") -> Any:
        """Grouped bars of our percent rows per column, published references as diamonds."""
        import plotly.graph_objects as go

        from core.evals.figures import PALETTE

        rows = [r for r in self.rows if not r.startswith("Perplexity")]
        fig = go.Figure()
        for i, column in enumerate(self.columns):
            fig.add_trace(
                go.Bar(
                    name=column,
                    x=rows,
                    marker_color=PALETTE[i % len(PALETTE)],
                    y=[
                        round(self.rows[r][column], 2) if column in self.rows[r] else None
                        for r in rows
                    ],
                )
            )
        refs = [r for r in REFERENCES if r.row in rows]
        if refs:
            fig.add_trace(
                go.Scatter(
                    name="published",
                    x=[r.row for r in refs],
                    y=[r.value for r in refs],
                    mode="markers",
                    marker={"symbol": "diamond", "size": 11, "color": "#111827"},
                    text=[f"{r.model}: {r.value:g} ({r.source})" for r in refs],
                    hoverinfo="text",
                )
            )
        fig.update_layout(
            title=title,
            barmode="group",
            template="plotly_white",
            height=480,
            yaxis={"title": "score (%)"},
        )
        return fig


def build(folders: list[str | os.PathLike]) -> Scorecard:
    """The scorecard of these evaluation folders (newest first wins a shared cell).

    Raises:
        LongCtxError: none of them gives a scorecard row.
    """
    read = []
    for folder in folders:
        record = results.read_config(folder)
        read.append((record.get("created") or "", str(folder), record))
    card = Scorecard()
    for _, folder, record in sorted(read, reverse=True):
        column = column_of(record)
        for row, value in rows_of(record, results.read_cells(folder)).items():
            values = card.rows.setdefault(row, {})
            if column not in values:
                values[column] = value
                card.sources.setdefault(row, {})[column] = folder
                if column not in card.columns:
                    card.columns.append(column)
    if not card.rows:
        raise LongCtxError(
            "these evaluations give no scorecard row: run ruler, harness, mmlu, niah, ..."
        )
    card.columns.sort(key=lambda c: (c != "base", c))
    return card


def folders_for(base: str, root: str | os.PathLike | None = None) -> list[str]:
    """Every evaluation folder of the local model `base`, with or without an adapter or RoPE
    override (its tuned runs), under `root` (default the workspace's evals/)."""
    found = []
    for entry in results.list_evals(root):
        model = (entry.get("target") or {}).get("model") or {}
        if model.get("name") == base or Path(str(model.get("name", ""))).name == base:
            found.append(entry["path"])
    return found
