"""Compare context-extension methods on one model, with no training: perplexity and a NIAH grid
for each RoPE setting at lengths past the model's window, side by side.

A comparison is a folder (`evals/methods-<id>/`) holding `comparison.json` and, for every entry,
two ordinary evaluation folders (`<entry>-perplexity/`, `<entry>-niah/`) written by
`core.evals.runner.Evaluation`: each resumes on its own, so a killed comparison reruns only the
cells it had not finished. An entry is the model as it is, the model under one `RopeSetting`, or
a trained run's adapter (which brings the setting it was trained with), so "YaRN x4, no training"
sits beside "base 1e6 + LoRA".

This module knows nothing about gradio or argparse.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core import children, threads, workspace
from core.errors import ConfigError, LongCtxError
from core.evals import figures
from core.evals.backends import Target
from core.evals.niah import NiahConfig, grid_axes
from core.evals.perplexity import TAIL_TOKENS, PerplexityConfig
from core.evals.runner import Evaluation
from core.models.loader import ModelSpec
from core.models.rope import RopeSetting

AS_IS = "none"
"""The entry that loads the model as it is (its own RoPE)."""
COMPARISON_FILE = "comparison.json"
PROGRESS_FILE = "progress.json"
"""Written by a running comparison: state, the evaluation it is on, cells done of total."""
HOLDS_SCORE = 0.5
"""NIAH mean score (0..1) a method must keep at a length to hold there."""
HOLDS_PPL = 1.5
"""...and its tail perplexity may grow at most this much over the model's own at its shortest
length."""
Progress = Callable[[str, int, int], None]


@dataclass
class MethodsConfig:
    """What to compare. Every field has a CLI flag of the same name."""

    model: str = "embedded"
    """The model every setting is applied to (`embedded`, a folder or a Hub id)."""
    methods: list[str] = field(default_factory=lambda: [AS_IS, "yarn:factor=4"])
    """RoPE settings in their one-line spelling (`yarn:factor=4`, `base:theta=1e6`, ...);
    `none` is the model as it is."""
    runs: list[str] = field(default_factory=list)
    """Trained adapters to add (a run id or an adapter folder); each brings its own RoPE."""
    lengths: list[int] | str = field(default_factory=lambda: [4096, 16384, 32768])
    """Lengths in tokens, for both measures (a list, or text such as `4k,16k,32k`)."""
    depths: list[float] | str = field(default_factory=lambda: [10.0, 50.0, 90.0])
    """NIAH needle depths in percent."""
    windows: int = 1
    """Perplexity windows per length."""
    niah: bool = True
    """Also run the NIAH grid (the slow part: one answer per length and depth)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        lengths, depths = grid_axes(self.lengths, self.depths, problems)
        self.methods = [m.strip() for m in self.methods if m and m.strip()]
        self.runs = [r.strip() for r in self.runs if r and r.strip()]
        if not self.methods and not self.runs:
            problems.append("give at least one method (or `none`, the model as it is) or run")
        for text in self.methods:
            if text == AS_IS:
                continue
            try:
                problems += [f"{text}: {p}" for p in RopeSetting.parse(text).problems()]
            except ConfigError as exc:
                problems += [f"{text}: {p}" for p in exc.problems]
        if len(set(self.methods)) < len(self.methods):
            problems.append("a method is listed twice")
        if problems:
            raise ConfigError(problems)
        self.lengths, self.depths = lengths, depths

    def entries(self) -> list[Entry]:
        """One entry per method, then per run, in the order given."""
        out = [Entry(label=_label(m), spec=_spec(self.model, m)) for m in self.methods]
        for run in self.runs:
            adapter = _adapter_folder(run)
            out.append(Entry(label=f"run {adapter.parent.name}", spec=ModelSpec(name=str(adapter))))
        return out


@dataclass
class Entry:
    """One line of the comparison: what is loaded, under which name."""

    label: str
    spec: ModelSpec

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.label).strip("-").lower() or "entry"


def _label(method: str) -> str:
    return "as is" if method == AS_IS else RopeSetting.parse(method).label


def _spec(model: str, method: str) -> ModelSpec:
    return ModelSpec(name=model, rope=None if method == AS_IS else method)


def _adapter_folder(run: str) -> Path:
    path = Path(run).expanduser()
    if not path.exists():
        path = workspace.subdir("runs") / run / "adapter"
    elif (path / "adapter").is_dir():
        path = path / "adapter"
    if not (path / "adapter_config.json").exists():
        raise ConfigError(
            f"run {run!r} has no adapter (a run id, a run folder or an adapter "
            "folder that holds adapter_config.json)"
        )
    return path


class Comparison:
    """A comparison folder and what fills it (the CLI and the Evaluate tab both use it)."""

    def __init__(self, config: MethodsConfig, out: str | os.PathLike | None = None):
        self.config = config
        self.path = (
            Path(out)
            if out
            else workspace.subdir("evals") / ("methods-" + time.strftime("%Y%m%d-%H%M%S"))
        )
        self.path.mkdir(parents=True, exist_ok=True)
        record = {"model": config.model, "config": asdict(config)}
        file = self.path / COMPARISON_FILE
        if file.exists():
            old = json.loads(file.read_text())
            if old.get("model") != config.model:
                raise LongCtxError(
                    f"{self.path} compares methods on {old.get('model')!r}, not "
                    f"{config.model!r}; choose another folder"
                )
        file.write_text(json.dumps(record, indent=1))

    @classmethod
    def open(cls, path: str | os.PathLike) -> Comparison:
        record = json.loads((Path(path) / COMPARISON_FILE).read_text())
        return cls(MethodsConfig(**record["config"]), path)

    def evaluations(self) -> Iterator[tuple[Entry, str, Evaluation]]:
        """(entry, measure, evaluation) for every folder of the comparison, in running order:
        every entry's perplexity first (quick), then the NIAH grids."""
        c = self.config
        measures = [("perplexity", PerplexityConfig(lengths=c.lengths, windows=c.windows))]
        if c.niah:
            measures.append(("niah", NiahConfig(lengths=c.lengths, depths=c.depths)))
        for measure, task in measures:
            for entry in c.entries():
                out = self.path / f"{entry.slug}-{measure}"
                yield entry, measure, Evaluation(task, Target(model=entry.spec), out=out)

    def run(self, progress: Progress | None = None, cancel: threading.Event | None = None) -> None:
        """Fill every folder (finished cells are kept; a rerun resumes), keeping progress.json
        up to date for whoever watches the folder (the Evaluate tab)."""
        parts = list(self.evaluations())
        try:
            for i, (entry, measure, evaluation) in enumerate(parts):
                if cancel is not None and cancel.is_set():
                    self._progress("stopped")
                    return
                what = f"{entry.label} {measure}"

                def report(done: int, total: int, _cell: Any, what: str = what, i: int = i):
                    self._progress(
                        "running", what=what, done=done, total=total, part=i + 1, parts=len(parts)
                    )
                    if progress:
                        progress(what, done, total)

                for _ in evaluation.run(progress=report, cancel=cancel):
                    pass
        except BaseException as exc:
            self._progress("failed", reason=str(exc) or type(exc).__name__)
            raise
        self._progress("completed", parts=len(parts), part=len(parts))

    def _progress(self, state: str, **fields: Any) -> None:
        from core.data.io import atomic_write

        record = {"state": state, "pid": os.getpid(), "updated": time.time(), **fields}
        atomic_write(self.path / PROGRESS_FILE, [json.dumps(record).encode()], backup=False)

    def progress(self) -> dict[str, Any]:
        """What progress.json says ({} before a run started)."""
        try:
            return json.loads((self.path / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    # -- results ----------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """Per entry: tail perplexity and NIAH mean score by length, and how far it holds."""
        table: dict[str, dict[str, Any]] = {}
        for entry, measure, evaluation in self.evaluations():
            row = table.setdefault(entry.label, {"label": entry.label, "ppl": {}, "niah": {}})
            by_length: dict[int, list[float]] = {}
            for cell in evaluation.cells():
                value = cell.get("tail_nll") if measure == "perplexity" else cell.get("score")
                if value is not None:
                    by_length.setdefault(int(cell["length"]), []).append(float(value))
            for length, values in by_length.items():
                mean = sum(values) / len(values)
                row["ppl" if measure == "perplexity" else "niah"][length] = (
                    math.exp(mean) if measure == "perplexity" else mean
                )
        rows = list(table.values())
        reference = _reference_ppl(rows)
        for row in rows:
            row["holds_to"] = _holds_to(row, self.config.lengths, reference, self.config.niah)
        return rows

    def figures(self) -> dict[str, Any]:
        """`perplexity` and `niah`: a line per entry against length."""
        rows = self.rows()
        out = {
            "perplexity": _lines(
                rows,
                "ppl",
                f"Perplexity of the last {TAIL_TOKENS:,} positions",
                "perplexity (lower is better)",
                log=True,
            )
        }
        if self.config.niah:
            out["niah"] = _lines(
                rows, "niah", "Needle in a haystack: mean score", "mean score (higher is better)"
            )
        return out

    def table_markdown(self) -> str:
        """The table: each entry's numbers by length, and the longest length where it holds."""
        rows, lengths = self.rows(), self.config.lengths
        head = ["method", *(f"ppl {_k(n)}" for n in lengths)]
        if self.config.niah:
            head += [f"NIAH {_k(n)}" for n in lengths]
        head.append("holds to")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            cells = [row["label"], *(_fmt(row["ppl"].get(n), "{:.2f}") for n in lengths)]
            if self.config.niah:
                cells += [_fmt(row["niah"].get(n), "{:.0%}") for n in lengths]
            cells.append(_k(row["holds_to"]) if row["holds_to"] else "-")
            lines.append("| " + " | ".join(cells) + " |")
        rule = (
            f"Holds to: the longest length up to which the NIAH mean stays at least "
            f"{HOLDS_SCORE:.0%} and the tail perplexity within {HOLDS_PPL:g}x the model's "
            "own at the shortest length."
        )
        return "\n".join(lines) + "\n\n" + rule


def _reference_ppl(rows: list[dict[str, Any]]) -> float | None:
    """The model as it is at its shortest measured length (else the lowest shortest-length
    perplexity of any entry)."""
    firsts = [(r["label"], r["ppl"][min(r["ppl"])]) for r in rows if r["ppl"]]
    own = [v for label, v in firsts if label == "as is"]
    return own[0] if own else min((v for _, v in firsts), default=None)


def _holds_to(row: dict[str, Any], lengths: list[int], reference: float | None, niah: bool) -> int:
    held = 0
    for n in sorted(lengths):
        ppl, score = row["ppl"].get(n), row["niah"].get(n)
        ok_ppl = ppl is not None and reference is not None and ppl <= HOLDS_PPL * reference
        ok_niah = not niah or (score is not None and score >= HOLDS_SCORE)
        if not (ok_ppl and ok_niah):
            break
        held = n
    return held


def _lines(
    rows: list[dict[str, Any]], key: str, title: str, y_title: str, log: bool = False
) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for row in rows:
        xs = sorted(row[key])
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[row[key][n] for n in xs],
                mode="lines+markers",
                name=row["label"],
                hovertemplate=row["label"] + "<br>%{x} tokens: %{y:.3g}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="context length (tokens)",
        yaxis_title=y_title,
        template="plotly_white",
        height=420,
        legend={"orientation": "h", "y": -0.2},
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    fig.update_xaxes(type="log", tickvals=sorted({n for r in rows for n in r[key]}))
    if log:
        fig.update_yaxes(type="log")
    if key == "niah":
        fig.update_yaxes(range=[-0.05, 1.05], tickformat=".0%")
    return fig


def _k(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else f"{n:,}"


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def export_figures(comparison: Comparison, folder: str | os.PathLike | None = None) -> list[Path]:
    """Write the figures (HTML) and the table (Markdown) into the comparison's folder."""
    folder = Path(folder or comparison.path)
    written = [
        figures.export(fig, folder / f"{name}.html") for name, fig in comparison.figures().items()
    ]
    table = folder / "table.md"
    table.write_text(comparison.table_markdown() + "\n")
    return [*written, table]


def command_for(config: MethodsConfig, out: str | os.PathLike) -> list[str]:
    """The `longctx compare-methods` command line of `config` (what the Evaluate tab runs)."""
    argv = ["longctx", "compare-methods", "--model", config.model, "--methods", *config.methods]
    if config.runs:
        argv += ["--runs", *config.runs]
    argv += [
        "--lengths",
        ",".join(str(n) for n in config.lengths),
        "--depths",
        ",".join(f"{d:g}" for d in config.depths),
        "--windows",
        str(config.windows),
    ]
    if not config.niah:
        argv.append("--no-niah")
    return [*argv, "--out", str(out)]


def launch(config: MethodsConfig, out: str | os.PathLike | None = None) -> Path:
    """Start a comparison in a child process (it survives a page reload) and return its folder
    at once; its log goes to log.txt there."""
    comparison = Comparison(config, out)
    folder, last = comparison.path, comparison.progress()
    if last.get("state") == "running" and threads.process_alive(last.get("pid")):
        raise LongCtxError(f"{folder.name} is already being compared; wait or stop it")
    argv = command_for(config, folder)
    children.spawn(children.longctx(*argv[1:]), folder / "log.txt", shown=" ".join(argv))
    return folder


def stop(folder: str | os.PathLike) -> None:
    """Ask a running comparison to stop (its finished cells stay; a rerun resumes)."""
    import signal

    pid = json.loads((Path(folder) / PROGRESS_FILE).read_text()).get("pid")
    if not threads.process_alive(pid):
        raise LongCtxError(f"{Path(folder).name} is not running")
    os.kill(int(pid), signal.SIGTERM)


def state(folder: str | os.PathLike) -> dict[str, Any]:
    """progress.json of a comparison folder, with `running` read as `stopped` once its process
    is gone (killed, or the machine restarted)."""
    try:
        record = json.loads((Path(folder) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return {"state": "created"}
    if record.get("state") == "running" and not threads.process_alive(record.get("pid")):
        record["state"] = "stopped"
    return record


def list_comparisons() -> list[Path]:
    """Comparison folders in the workspace, newest first."""
    root = workspace.subdir("evals")
    found = [p.parent for p in root.glob(f"*/{COMPARISON_FILE}")]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
