"""Generation running in the app: one job per browser, on a thread, polled by the Generate tab.

A job is a `core.synth.job.SynthJob` run or a `core.synth.procedural.make` call on a daemon
thread, kept in a `core.jobs.Registry` under the session that started it. The page keeps that key
in the browser's local storage, so a reload (which gets a new session) finds its job again.

Only threads live here; the work is done by `core.synth`, the page by `ui.generate`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import workspace
from core.data import io
from core.jobs import Registry
from core.models import tokenizers
from core.synth import procedural, sources, text
from core.synth.config import SynthConfig
from core.synth.job import SynthJob, SynthResult

log = logging.getLogger(__name__)
PREVIEW_SAMPLES = 3
"""The newest samples a job shows while it runs."""


class _Stopped(Exception):
    """Raised from the procedural progress callback to stop `procedural.make` between samples."""


@dataclass
class Job:
    """What one browser session runs: a synth run or a procedural set."""

    task: str
    output: Path
    failures_path: Path | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    synth: SynthJob | None = None
    done: int = 0
    total: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    result: SynthResult | None = None
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        if self.finished is None:
            if self.cancel.is_set():
                return "stopping"
            return "running" if self.progress()[1] else "starting"
        if self.error:
            return "failed"
        return "stopped" if self.cancel.is_set() else "completed"

    def progress(self) -> tuple[int, int, int, float]:
        """(done, total, failures, cost so far in USD)."""
        if self.synth is not None:
            s = self.synth.status()
            return s.done, s.total, s.failures, s.cost_usd
        return self.done, self.total, 0, 0.0

    def recent(self) -> list[dict[str, Any]]:
        done = self.synth.samples() if self.synth is not None else self.samples
        return done[-PREVIEW_SAMPLES:][::-1]

    def version(self) -> tuple[tuple, tuple]:
        """(status, preview) keys: each changes when that part of the page would change."""
        made = len(self.synth.samples()) if self.synth is not None else len(self.samples)
        elapsed = int((self.finished or time.monotonic()) - self.started)
        return (id(self), self.state, *self.progress(), elapsed, self.error), (id(self), made)


_jobs: Registry[Job] = Registry("generate", "a generation is already running here; stop it first")
get = _jobs.get
stop = _jobs.stop


def start_synth(keys: list[str | None], config: SynthConfig) -> Job:
    """Run `config` (validated by the caller) on a thread; keys[0] owns it, others are checked."""
    job = Job(config.task, config.output_path(), config.failures_path())

    def work() -> None:
        job.synth = SynthJob(config, tokenizer=tokenizers.cached_tokenizer(config.tokenizer))
        job.result = job.synth.run(cancel=job.cancel)

    return _jobs.start(keys, job, work)


def start_procedural(
    keys: list[str | None],
    task: str,
    n: int,
    length: int,
    tokenizer_name: str,
    seed: int,
    depths: list[float] | None,
    n_topics: int,
    out: Path | None,
    source: str = sources.BUILTIN,
) -> Job:
    """Make a procedural set, or text samples from `source`'s documents, on a thread and write
    it (default: datasets/<task>-<length>.jsonl)."""
    out = out or workspace.subdir("datasets") / f"{task}-{length}.jsonl"
    job = Job(task, out, total=n)

    def progress(done: int, total: int) -> None:
        job.done, job.total = done, total
        if job.cancel.is_set():
            raise _Stopped

    def work() -> None:
        try:
            if task == text.TASK:
                samples = text.text_samples(
                    source,
                    n,
                    length,
                    tokenizers.cached_tokenizer(tokenizer_name),
                    seed=seed,
                    progress=progress,
                )
            else:
                samples = procedural.make(
                    task,
                    n,
                    length,
                    tokenizers.cached_tokenizer(tokenizer_name),
                    seed=seed,
                    depths=depths,
                    n_topics=n_topics,
                    progress=progress,
                )
        except _Stopped:
            log.info("procedural %s stopped before writing", task)
            return
        job.output.parent.mkdir(parents=True, exist_ok=True)
        io.write_jsonl(job.output, samples)
        job.samples = samples

    return _jobs.start(keys, job, work)
