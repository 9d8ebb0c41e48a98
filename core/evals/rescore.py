"""Rescoring: the saved answers of an evaluation scored again by another scorer, into a new
folder, without generating anything again (RULER's part match instead of its all match,
ROUGE-L instead of exact, an LLM judge after the fact).

This module knows nothing about models, backends or gradio.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.errors import LongCtxError
from core.evals import results
from core.evals.scoring import PERPLEXITY, Scorer


def rescore(folder: str | os.PathLike, scorer: Scorer, out: str | os.PathLike) -> Path:
    """Score every answered cell of `folder` with `scorer`; write config.json and cells.jsonl
    to `out` (a new folder; the original is left as it is).

    Raises:
        LongCtxError: a perplexity evaluation (nothing to score), or `out` already holds cells.
    """
    record = results.read_config(folder)
    if record.get("kind") == PERPLEXITY or scorer.kind == PERPLEXITY:
        raise LongCtxError("perplexity is measured, not scored: there are no answers to rescore")
    target = Path(out).expanduser().resolve()
    if results.read_cells(target):
        raise LongCtxError(f"{target} already holds cells; rescore into a new folder")
    asked = (record.get("task") or {}).get("question", "")
    results.write_config(
        target,
        {
            **record,
            "scorer": scorer.public(),
            "rescored_from": str(Path(folder).resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    log = results.CellLog(target)
    for cell in results.read_cells(folder):
        if "answer" in cell and cell.get("expected") is not None:
            scored = scorer.score(
                str(cell["answer"]), cell["expected"], cell.get("question") or asked
            )
            cell = {k: v for k, v in cell.items() if k not in ("grade", "judge_reply")} | scored
        log.append(cell)
    return target
