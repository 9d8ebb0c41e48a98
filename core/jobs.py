"""Per-browser background jobs: one registry per tab, each job on a daemon thread.

A job is kept under the gradio session that started it. The page keeps that key in the
browser's local storage, so after a reload (a new session) it asks for the job by the old key,
and starting the next job moves it to the new session. What a job computes, and how its
progress and outcome are shown, belong to the tab (core/evals/jobs.py, core/synth/jobs.py);
this module knows nothing about gradio or about what the work is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from core.errors import LongCtxError

log = logging.getLogger(__name__)


class Job(Protocol):
    """What the registry reads and writes on a tab's job; the tab's dataclass holds the rest."""

    cancel: threading.Event
    """Set by `stop`; the work checks it and returns early."""
    error: str
    finished: float | None
    thread: threading.Thread | None


J = TypeVar("J", bound=Job)


class Registry(Generic[J]):
    """The jobs of one tab, at most one per browser session."""

    def __init__(self, name: str, busy: str) -> None:
        self.name = name
        self.busy = busy
        """The refusal shown when this browser already has a job running."""
        self._jobs: dict[str, J] = {}
        self._lock = threading.Lock()

    def get(self, key: str | None) -> J | None:
        with self._lock:
            return self._jobs.get(key or "")

    def stop(self, key: str | None) -> None:
        job = self.get(key)
        if job is not None:
            job.cancel.set()

    def start(
        self,
        keys: list[str | None],
        job: J,
        work: Callable[[], object],
        clash: Callable[[J], str] | None = None,
    ) -> J:
        """Run `work()` for `job` on a daemon thread, kept under keys[0].

        `keys` are this session and the one the page remembers (itself before a reload).
        Refused while one of them has a job running, or while `clash(other)` gives a reason
        for another running job (e.g. one writing into the same folder).
        """
        with self._lock:
            for key in keys:
                old = self._jobs.get(key or "")
                if old is not None and old.finished is None:
                    raise LongCtxError(self.busy)
            for other in self._jobs.values():
                reason = clash(other) if clash is not None and other.finished is None else ""
                if reason:
                    raise LongCtxError(reason)
            # The job moves to this session; the entry it replaces goes, so a finished job of a
            # page that was reloaded does not keep its model, samples or figures alive.
            for key in keys:
                self._jobs.pop(key or "", None)
            self._jobs[keys[0] or ""] = job
        # A daemon: closing the app must not wait for an evaluation or a generation to end.
        job.thread = threading.Thread(
            target=self._run, args=(job, work), daemon=True, name=f"longctx-{self.name}"
        )
        job.thread.start()
        return job

    def _run(self, job: J, work: Callable[[], object]) -> None:
        try:
            work()
        except LongCtxError as exc:
            job.error = str(exc)
        except Exception as exc:  # a bug: keep the traceback in the log, show the message
            log.exception("%s job failed", self.name)
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.monotonic()
