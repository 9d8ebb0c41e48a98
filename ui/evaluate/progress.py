"""Evaluate tab, part 2: how the running evaluation looks (`core.evals.jobs` runs it): its
status line with progress, and its figure as the cells come in.
"""

from __future__ import annotations

import html
import time
from typing import Any

from core import workspace
from core.evals.jobs import Job
from ui import theme


def status_html(job: Job | None) -> str:
    if job is None:
        return (
            '<p class="eval-idle">Nothing evaluated yet in this browser: set up a task and Run.</p>'
        )
    ev, state = job.evaluation, job.state
    pct = 100 * job.done / job.total if job.total else 0
    elapsed = (job.finished or time.monotonic()) - job.started
    parts = [f"{job.done}/{job.total} cells", f"{elapsed:.0f} s"]
    if job.already:
        parts.append(f"{job.already} cells already done (resumed)")
    out = [
        f'<div class="run-status eval-status">{theme.badge(state)} '
        f"<b>{html.escape(ev.path.name)}</b> · " + " · ".join(parts),
        f'<div class="run-progress"><div style="width:{pct:.1f}%"></div></div>',
        f'<p class="eval-target">{html.escape(ev.target.label)} · {html.escape(workspace.shown(ev.path))}</p>',
    ]
    if job.error:
        out.append(f'<p class="run-reason">{html.escape(job.error)}</p>')
    elif state == "loading":
        out.append("<p>Loading the model and building the prompts…</p>")
    elif state == "stopped":
        out.append("<p>Stopped. Run the same folder again to resume where it stopped.</p>")
    return "".join(out) + "</div>"


def figure(job: Job | None) -> Any:
    """The job's heatmap (or topic accuracy) from the cells in its folder so far."""
    return job.evaluation.figure() if job is not None else None
