"""Generate tab, part 3: how the running job looks (`core.synth.jobs` runs it): its status line,
the newest samples, the output file and the failures.
"""

from __future__ import annotations

import html
import time
from typing import Any

from core.synth.jobs import Job
from ui import theme


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
        f'<div class="run-status gen-status">{theme.badge(state)} '
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
    line = (
        f"Wrote {len(r.samples)} samples from {r.contexts} contexts in {r.seconds:.0f} s "
        f"({r.flagged} answers flagged, {r.duplicates} duplicates); cost ${r.cost_usd:,.4f}, "
        f"${r.saved_usd:,.4f} saved by the cache."
    )
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
    meta_text = " · ".join(
        f"{k}: {str(v)[:60]}" for k, v in meta.items() if isinstance(v, (str, int, float, bool))
    )
    title = f"{sample.get('id', sample.get('task', 'sample'))} · {len(turns)} turns"
    rows = [
        f'<details class="gen-turn"><summary><b>{html.escape(str(t.get("role")))}</b> '
        f"{html.escape(_turn_title(str(t.get('content', ''))))}</summary>"
        f"<pre>{html.escape(fold(str(t.get('content', ''))))}</pre></details>"
        for t in turns
    ]
    return (
        f'<details class="gen-sample"{" open" if open_ else ""}><summary>{html.escape(title)}'
        f'</summary><div class="gen-meta">{html.escape(meta_text)}</div>{"".join(rows)}'
        "</details>"
    )


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
