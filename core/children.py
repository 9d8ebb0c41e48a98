"""Child processes the app starts and lets run on: trainings, experiments, method comparisons.

Each is a `longctx` command (or `torchrun`/`accelerate` in front of one) in its own session, so
that a stop signal reaches its own children too and a page reload or an app restart leaves it
running; its output goes to a log file in its folder, under a `$ command` line. The app keeps
the `Popen`s it started only to collect them when they end (`reap`), so that finished children
do not linger as zombies while the app lives.

This module knows nothing about what the children do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from core import workspace

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The folder that holds `core/`: children import the project from here."""

_started: list[subprocess.Popen] = []


def longctx(*argv: str) -> list[str]:
    """The command line that runs `longctx ARGV...` with this interpreter."""
    return [sys.executable, "-m", "core.cli", *argv]


def env() -> dict[str, str]:
    """The environment every child starts with: ours, plus this workspace, unbuffered output
    (its log reads live) and this project importable."""
    out = dict(os.environ)
    out.update(PYTHONUNBUFFERED="1", LONGCTX_HOME=str(workspace.home()))
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), out.get("PYTHONPATH")]))
    return out


def spawn(
    cmd: Sequence[str],
    log: Path,
    *,
    environ: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    shown: str | None = None,
    keep: bool = True,
) -> subprocess.Popen:
    """Start `cmd` in a new session with its output appended to `log` (after a `$ shown` line,
    default the command itself). `keep` False: the caller waits for it itself (no reaping)."""
    with Path(log).open("ab") as out:
        out.write(f"$ {shown or ' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd or PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ if environ is not None else env(),
            start_new_session=True,  # a stop reaches the child's own children too
        )
    if keep:
        _started.append(proc)
    return proc


def reap() -> None:
    """Collect the children that have ended (called from the pages' polls)."""
    for proc in list(_started):
        if proc.poll() is not None:
            _started.remove(proc)
