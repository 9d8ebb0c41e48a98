"""The per-browser job registry of core/jobs.py: jobs run on threads, report errors, stop, move on reload.

Every wait is on an event or a thread join with a timeout, so a broken registry fails fast.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import pytest

from core.errors import LongCtxError
from core.jobs import Registry

WAIT = 10.0


@dataclass
class Job:
    cancel: threading.Event = field(default_factory=threading.Event)
    error: str = ""
    finished: float | None = None
    thread: threading.Thread | None = None
    result: object = None
    path: str = ""


def finish(job: Job) -> None:
    assert job.thread is not None
    job.thread.join(WAIT)
    assert not job.thread.is_alive() and job.finished is not None


def blocked(registry: Registry[Job], keys: list[str | None], **kw) -> tuple[Job, threading.Event]:
    """A job that runs until it is released (or stopped), once it has surely begun."""
    job, began, release = Job(**kw), threading.Event(), threading.Event()

    def work() -> None:
        began.set()
        while not (release.is_set() or job.cancel.is_set()):
            release.wait(0.01)

    registry.start(keys, job, work)
    assert began.wait(WAIT)
    return job, release


def test_a_job_runs_on_a_daemon_thread_and_its_result_is_kept():
    registry = Registry[Job]("test", "busy")
    job = Job()

    def work() -> None:
        job.result = threading.current_thread()

    assert registry.start(["me"], job, work) is job
    finish(job)
    assert job.result is job.thread and job.thread.daemon
    assert job.error == "" and registry.get("me") is job
    assert registry.get("someone else") is None and registry.get(None) is None


def test_errors_are_recorded_in_one_line(caplog):
    registry = Registry[Job]("test", "busy")
    told, bug = Job(), Job()

    def refuse() -> None:
        raise LongCtxError("max_length 81920 does not fit; lower it")

    def crash() -> None:
        raise KeyError("rope_theta")

    registry.start(["a"], told, refuse)
    finish(told)
    assert told.error == "max_length 81920 does not fit; lower it"
    with caplog.at_level(logging.ERROR, logger="core.jobs"):
        registry.start(["b"], bug, crash)
        finish(bug)
    assert bug.error == "KeyError: 'rope_theta'"
    # A bug keeps its traceback in the log; a user error does not need one.
    assert [r.exc_info[0] for r in caplog.records] == [KeyError]


def test_stop_sets_the_flag_the_work_sees_and_a_running_job_blocks_another():
    registry = Registry[Job]("test", "a test is already running here")
    job, _ = blocked(registry, ["me"])
    with pytest.raises(LongCtxError, match="already running here"):
        registry.start(["me"], Job(), lambda: None)
    registry.stop("someone else")  # no job there: nothing happens
    assert not job.cancel.is_set()
    registry.stop("me")
    finish(job)
    assert job.cancel.is_set() and job.error == ""
    again = registry.start(["me"], Job(), lambda: None)
    finish(again)
    assert registry.get("me") is again


def test_after_a_reload_the_new_session_takes_over_and_the_old_entry_goes():
    registry = Registry[Job]("test", "busy")
    first, release = blocked(registry, ["before-reload"])
    # The reloaded page polls with the key it remembers ...
    assert registry.get("before-reload") is first
    # ... and may not start a second job while that one runs.
    with pytest.raises(LongCtxError):
        registry.start(["after-reload", "before-reload"], Job(), lambda: None)
    release.set()
    finish(first)
    second = registry.start(["after-reload", "before-reload"], Job(), lambda: None)
    finish(second)
    assert registry.get("after-reload") is second
    assert registry.get("before-reload") is None


def test_a_clash_with_another_running_job_is_refused_with_its_reason():
    registry = Registry[Job]("test", "busy")
    other, release = blocked(registry, ["other window"], path="evals/a")

    def start(path: str) -> Job:
        def clash(running: Job) -> str:
            return f"{path} is in use" if running.path == path else ""

        return registry.start(["me"], Job(path=path), lambda: None, clash)

    with pytest.raises(LongCtxError, match="evals/a is in use"):
        start("evals/a")
    assert registry.get("me") is None
    finish(start("evals/b"))
    release.set()
    finish(other)
    # Finished jobs do not clash.
    after = start("evals/a")
    finish(after)
    assert after.error == "" and registry.get("me") is after
