"""Generate tab, part 3: the jobs behind the page — one per browser, on a thread, polled by a timer.

A job is a `core.synth.engine.SynthJob` run or a `core.synth.procedural.make` call on a daemon
thread, kept in a `ui.jobs.Registry` under the session that started it. The page keeps that key
in the browser's local storage, so a reload (which gets a new session) finds its job again; the
timer renders `view()` of it. The embedded model is served to the generator by one
`core.serve.BackgroundServer`, started on first use and stopped when the app exits.

Only threads and formatting live here; the work is done by `core.synth`.
"""

from __future__ import annotations

import atexit
import functools
import html
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import models, workspace
from core.data import io
from core.serve import BackgroundServer
from core.synth import procedural, sources, text
from core.synth.config import SynthConfig
from core.synth.engine import SynthJob, SynthResult
from ui.jobs import Registry

log = logging.getLogger(__name__)
PREVIEW_SAMPLES = 3
_BADGE = {"starting": "#2563eb", "running": "#2563eb", "stopping": "#d97706",
          "completed": "#059669", "stopped": "#6b7280", "failed": "#dc2626"}  # fmt: skip


@functools.lru_cache(maxsize=4)
def tokenizer(name: str) -> Any:
    """A model's tokenizer, loaded once per name (it counts every context and sample)."""
    return models.load_tokenizer(name)


# ---------------------------------------------------------------------------------------------
# The embedded model behind an OpenAI-compatible server (the default generator).

_server: BackgroundServer | None = None
_server_lock = threading.Lock()


def embedded_server() -> BackgroundServer:
    """The one server of the embedded model, started on first call (it loads the model)."""
    global _server
    with _server_lock:
        if _server is None or not _server.running:
            _server = BackgroundServer(models.EMBEDDED).start()
            atexit.register(_server.stop)
        return _server


def embedded_url() -> str | None:
    """The server's base URL once started, else None (a dry run does not start it)."""
    return _server.base_url if _server is not None and _server.running else None


# ---------------------------------------------------------------------------------------------
# Jobs.


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
        job.synth = SynthJob(config, tokenizer=tokenizer(config.tokenizer))
        job.result = job.synth.run(cancel=job.cancel)

    return _jobs.start(keys, job, work)


def start_procedural(
    keys: list[str | None], task: str, n: int, length: int, tokenizer_name: str, seed: int,
    depths: list[float] | None, n_topics: int, out: Path | None, source: str = sources.BUILTIN,
) -> Job:  # fmt: skip
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
                samples = text.text_samples(source, n, length, tokenizer(tokenizer_name),
                                            seed=seed, progress=progress)  # fmt: skip
            else:
                samples = procedural.make(task, n, length, tokenizer(tokenizer_name), seed=seed,
                                          depths=depths, n_topics=n_topics, progress=progress)  # fmt: skip
        except _Stopped:
            log.info("procedural %s stopped before writing", task)
            return
        job.output.parent.mkdir(parents=True, exist_ok=True)
        io.write_jsonl(job.output, samples)
        job.samples = samples

    return _jobs.start(keys, job, work)


# ---------------------------------------------------------------------------------------------
# What the page shows.


def status_html(job: Job | None) -> str:
    if job is None:
        return '<p class="gen-idle">Nothing generated yet in this browser.</p>'
    state = job.state
    done, total, failures, cost = job.progress()
    unit = "samples" if job.failures_path is None else "requests"
    pct = 100 * done / total if total else 0
    elapsed = (job.finished or time.monotonic()) - job.started
    parts = [f"{done}/{total or '?'} {unit}", f"{elapsed:.0f} s"]
    if job.failures_path:
        parts += [f"${cost:,.4f} so far", f"{failures} failed"]
    out = [
        f'<div class="run-status gen-status"><span class="run-badge" '
        f'style="background:{_BADGE.get(state, "#6b7280")}">{state}</span> '
        f"<b>{html.escape(job.task)}</b> · " + " · ".join(parts),
        f'<div class="run-progress"><div style="width:{pct:.1f}%"></div></div>',
    ]
    if job.error:
        out.append(f'<p class="run-reason">{html.escape(job.error)}</p>')
    elif job.finished is not None:
        out.append(f"<p>{html.escape(_outcome(job))}</p>")
    return "".join(out) + "</div>"


def _outcome(job: Job) -> str:
    r = job.result
    if r is None:
        if job.cancel.is_set() and not job.samples:
            return "Stopped before the end; nothing was written."
        return f"Wrote {len(job.samples)} samples."
    line = (f"Wrote {len(r.samples)} samples from {r.contexts} contexts in {r.seconds:.0f} s "
            f"({r.flagged} answers flagged, {r.duplicates} duplicates); cost ${r.cost_usd:,.4f}, "
            f"${r.saved_usd:,.4f} saved by the cache.")  # fmt: skip
    if r.skipped:
        line += f" {len(r.skipped)} contexts gave no sample: " + "; ".join(r.skipped[:2]) + "."
    return line + (" Stopped early: run it again to resume from the cache." if r.cancelled else "")


def fold(text: str, head: int = 1500, tail: int = 800) -> str:
    if len(text) <= head + tail + 200:
        return text
    return (
        f"{text[:head]}\n\n[… {len(text) - head - tail:,} characters not shown …]\n\n{text[-tail:]}"
    )


def _turn_title(content: str) -> str:
    """The last paragraph (the question, after a long context), shortened."""
    last = content.rstrip().rsplit("\n\n", 1)[-1].strip()
    short = last if len(last) <= 140 else last[:137] + "…"
    return short if len(last) == len(content.strip()) else f"[{len(content):,} chars] … {short}"


def _sample_html(sample: dict[str, Any], open_: bool) -> str:
    turns = sample.get("conversations") or [{"role": "text", "content": sample.get("text", "")}]
    meta = {k: v for k, v in sample.items() if k not in ("conversations", "text")}
    meta_text = " · ".join(f"{k}: {str(v)[:60]}" for k, v in meta.items()
                           if isinstance(v, (str, int, float, bool)))  # fmt: skip
    title = f"{sample.get('id', sample.get('task', 'sample'))} · {len(turns)} turns"
    rows = [
        f'<details class="gen-turn"><summary><b>{html.escape(str(t.get("role")))}</b> '
        f"{html.escape(_turn_title(str(t.get('content', ''))))}</summary>"
        f"<pre>{html.escape(fold(str(t.get('content', ''))))}</pre></details>"
        for t in turns
    ]
    return (f'<details class="gen-sample"{" open" if open_ else ""}><summary>{html.escape(title)}'
            f'</summary><div class="gen-meta">{html.escape(meta_text)}</div>{"".join(rows)}'
            "</details>")  # fmt: skip


def preview_html(job: Job | None) -> str:
    samples = job.recent() if job is not None else []
    if not samples:
        return '<p class="gen-idle">Samples appear here as they are made.</p>'
    return "".join(_sample_html(s, i == 0) for i, s in enumerate(samples))


def view(job: Job | None) -> list[Any]:
    """(status, preview, output path, failures path) for the page."""
    if job is None:
        return [status_html(None), preview_html(None), "", ""]
    failures = str(job.failures_path) if job.failures_path and job.finished else ""
    output = str(job.output) if job.finished and job.output.exists() else ""
    return [status_html(job), preview_html(job), output, failures]
