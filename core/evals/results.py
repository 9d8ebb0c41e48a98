"""Evaluation folders: `evals/<id>/` with `config.json`, `cells.jsonl` and a rendered heatmap.

`cells.jsonl` gets one JSON line per cell the moment the cell is finished (flushed and synced),
so a crash loses at most the cell being computed, and a rerun into the same folder skips every
key already there. A line torn by a kill mid-write is dropped when the folder is reopened.
The UI only reads these files, so a reload or a second browser sees the same results.

This module knows nothing about models, prompts or plots.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from core import workspace
from core.errors import LongCtxError

CONFIG_FILE = "config.json"
CELLS_FILE = "cells.jsonl"
HEATMAP_FILE = "heatmap.html"


def new_eval_id(kind: str, label: str) -> str:
    """`niah-embedded-20250101-120000`: kind, a slug of the model, the local time."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label.split("/")[-1]).strip("-").lower()[:48] or "model"
    return f"{kind}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def eval_folder(out: str | os.PathLike | None, kind: str, label: str) -> Path:
    """`out` if given, else a new folder under the workspace's `evals/`."""
    if out:
        return Path(out).expanduser().resolve()
    base = workspace.subdir("evals")
    path = base / new_eval_id(kind, label)
    n = 1
    while path.exists():  # two runs started in the same second
        n += 1
        path = base / f"{new_eval_id(kind, label)}-{n}"
    return path


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's config.json.

    Raises:
        LongCtxError: the folder is not an evaluation.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise LongCtxError(f"{folder} is not an evaluation folder (no {CONFIG_FILE})")
    return json.loads(path.read_text())


def write_config(folder: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write config.json atomically (a reader never sees half a file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CONFIG_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / CONFIG_FILE)


def read_cells(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished cell, in the order they finished; a torn last line is ignored."""
    path = Path(folder) / CELLS_FILE
    if not path.exists():
        return []
    cells = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            cell = json.loads(line)
        except ValueError:
            continue
        if isinstance(cell, dict) and "key" in cell:
            cells.append(cell)
    return cells


class CellLog:
    """Appends finished cells to cells.jsonl and knows which keys are done."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / CELLS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self.keys = {cell["key"] for cell in read_cells(folder)}

    def _repair(self) -> None:
        """Drop a last line left without its newline by a kill, so appends start clean."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def append(self, cell: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(cell, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.keys.add(cell["key"])


def list_evals(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Summaries of the evaluation folders under `root` (default: the workspace's evals/),
    newest first: id, path, kind, label, created, cells done, cells planned, mean score (or,
    for perplexity, the perplexity at the longest length measured: `perplexity` as
    `[length, value]`), and the config's target and task."""
    from core.evals.perplexity import perplexity_by_length

    base = Path(root) if root else workspace.subdir("evals")
    found = []
    for folder in base.iterdir() if base.is_dir() else []:
        try:
            config = read_config(folder)
        except (LongCtxError, ValueError):
            continue
        cells = read_cells(folder)
        scores = [c["score"] for c in cells if isinstance(c.get("score"), (int, float))]
        by_length = perplexity_by_length(cells) if config.get("kind") == "perplexity" else {}
        longest = max(by_length, default=None)
        found.append(
            {
                "id": folder.name,
                "path": str(folder),
                "kind": config.get("kind"),
                "label": config.get("label"),
                "created": config.get("created"),
                "done": len(cells),
                "total": config.get("total"),
                "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
                "perplexity": [longest, round(by_length[longest][0], 3)] if by_length else None,
                "target": config.get("target") or {},
                "task": config.get("task") or {},
            }
        )
    return sorted(found, key=lambda e: e.get("created") or "", reverse=True)


def config_differences(
    old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...]
) -> list[str]:
    """Names of the top-level fields whose values differ, `ignore`d ones aside."""
    keys = sorted(set(old) | set(new))
    return [k for k in keys if k not in ignore and old.get(k) != new.get(k)]


ANSWER_COLUMNS = ["cell", "tokens", "question", "expected", "answer", "score"]


def answer_rows(
    record: dict[str, Any], cells: list[dict[str, Any]], limit: int = 300
) -> list[list[Any]]:
    """The answered cells as table rows (`ANSWER_COLUMNS`), lowest score first: what to read
    to see where the model fails. Texts are cut to `limit` characters; perplexity has none."""
    if record.get("kind") == "perplexity":
        return []
    asked = (record.get("task") or {}).get("question", "")

    def cut(text: Any) -> str:
        text = " ".join(str(text or "").split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    rows = [
        [
            c.get("key"),
            c.get("prompt_tokens") or c.get("length"),
            cut(c.get("question") or asked),
            cut(c.get("expected")),
            cut(c.get("answer")),
            c.get("score"),
        ]
        for c in cells
    ]
    # Unscored cells (a judge that gave no grade) first: they need a look as much as failures.
    return sorted(rows, key=lambda r: (r[5] is not None, r[5] or 0.0))
