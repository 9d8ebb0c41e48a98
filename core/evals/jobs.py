"""Evaluations running in the app: one per browser, on a thread, polled by the Evaluate tab's timer.

A job runs `core.evals.runner.Evaluation.run()` (or an lm-eval folder's
`core.evals.harness.HarnessRun.run()`) on a daemon thread, kept in a `core.jobs.Registry`
under the session that started it; the page keeps that key in the browser's local storage,
so a reload (a new session) finds its job again. Every finished cell is in the evaluation
folder's cells.jsonl before the thread sees it, and the timer redraws the heatmap from that
folder. Stop sets the job's cancel event, which the backend checks between tokens.

Only threads live here; the work is done by `core.evals.runner`, the page by `ui.evaluate`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.evals import harness, results
from core.evals.harness import HarnessRun
from core.evals.runner import Evaluation
from core.hosting import space
from core.jobs import Registry


@dataclass
class Job:
    """One evaluation running (or finished) for one browser."""

    evaluation: Evaluation | HarnessRun
    total: int
    already: int
    """Cells that were in the folder before this run: a rerun resumes after them."""
    done: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    first_cell: float | None = None
    finished: float | None = None
    thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        if self.finished is None:
            if self.cancel.is_set():
                return "stopping"
            return "running" if self.first_cell or self.done == self.total else "loading"
        if self.error:
            return "failed"
        return "stopped" if self.done < self.total else "completed"

    def version(self) -> tuple:
        """Changes whenever what the page shows would change."""
        return (id(self), self.state, self.done, self.error)


_jobs: Registry[Job] = Registry("evaluate", "an evaluation is already running here; stop it first")
get = _jobs.get
stop = _jobs.stop


def reopen(
    path: str | Path, *, api_key: str | None = None, judge_api_key: str | None = None
) -> Evaluation | HarnessRun:
    """An evaluation folder of any kind, reopened to resume: ours, or one lm-eval fills."""
    if results.read_config(path).get("kind") == harness.KIND:
        return HarnessRun.open(path, api_key=api_key)
    return Evaluation.open(path, api_key=api_key, judge_api_key=judge_api_key)


def start(keys: list[str | None], evaluation: Evaluation | HarnessRun) -> Job:
    """Run `evaluation` (ours, or lm-eval's) on a thread under keys[0]; refused while one of
    `keys` has a job running, or while any job writes into the same folder."""
    already, total = evaluation.counts()
    job = Job(evaluation, total=total, already=already, done=already)

    def progress(done: int, total: int, cell: dict[str, Any] | None) -> None:
        job.done, job.total = done, total
        if cell is not None and job.first_cell is None:
            job.first_cell = time.monotonic()

    def work() -> None:
        on_zero_gpu = space.zero_gpu() and evaluation.target.model is not None
        if on_zero_gpu and isinstance(evaluation, Evaluation):
            job.first_cell = time.monotonic()  # the heatmap follows cells.jsonl from here on
            job.done = min(job.total, _evaluate_on_gpu(str(evaluation.path)))
            return
        for _ in evaluation.run(progress=progress, cancel=job.cancel):
            pass

    def clash(other: Job) -> str:
        if other.evaluation.path != evaluation.path:
            return ""
        return f"{evaluation.path.name} is being evaluated in another window"

    return _jobs.start(keys, job, work, clash)


@space.gpu(duration=300)
def _evaluate_on_gpu(path: str) -> int:
    """Run an evaluation while ZeroGPU lends the GPU; returns the cells finished.

    It runs in ZeroGPU's worker process, which rebuilds the evaluation from its folder: this
    thread's Stop event and progress callback cannot cross over, so Stop waits for the call to
    end. A call cut short by ZeroGPU's time limit keeps its finished cells; a rerun resumes."""
    evaluation = Evaluation.open(path)
    evaluation.run_all()
    return len(evaluation.cells())
