"""Run an experiment's steps one after another, each as its own `longctx` child process.

An experiment is a folder (`experiments/<name>/`) holding `experiment.yaml` (the file as run),
one folder per step (the same artefact the step's command writes: a data file, a run folder,
an evaluation folder, each with the command's log.txt), `state.json` and `report.html`.

`state.json` says, per step, its state (`running`, `done`, `failed`, `stopped`), the digest of
what it did, its wall time and its process's peak resident memory (from `wait4`, so nothing has
to be sampled). A rerun skips every step that is `done` with an unchanged digest, so a killed
experiment resumes where it stopped: a training step resumes from its last checkpoint, an
evaluation from the cells it had written. A failed step stops the experiment with its reason;
the steps before it stay done.

SIGTERM or SIGINT (Stop in the app, Ctrl-C in a terminal) is passed on to the running step as
SIGTERM: a training saves a checkpoint and stops, an evaluation keeps its finished cells.

This module knows nothing about gradio or argparse.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import children, threads, workspace
from core.data.io import atomic_write
from core.errors import LongCtxError
from core.experiments.spec import Experiment, Step, load

STATE_FILE = "state.json"
SPEC_FILE = "experiment.yaml"
REPORT_FILE = "report.html"
Say = Callable[[str], None]


def experiments_dir() -> Path:
    return workspace.subdir("experiments")


def folder_of(experiment: Experiment, out: str | os.PathLike | None = None) -> Path:
    """Where an experiment runs: `--out`, else `experiments/<name>/` (so running the same file
    again resumes it)."""
    return Path(out).expanduser().resolve() if out else experiments_dir() / experiment.name


# -- state ---------------------------------------------------------------------------------


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    """state.json of an experiment folder; a `running` experiment or step whose process is gone
    (killed, the machine restarted) reads as `interrupted`."""
    try:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {"state": "created", "steps": {}}
    if state.get("state") == "running" and not threads.process_alive(state.get("pid")):
        state["state"] = "interrupted"
    for record in state.get("steps", {}).values():
        if record.get("state") == "running" and not threads.process_alive(record.get("pid")):
            record["state"] = "interrupted"
    return state


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    atomic_write(folder / STATE_FILE, [json.dumps(state, indent=1).encode()], backup=False)


def list_experiments() -> list[Path]:
    """Experiment folders in the workspace, newest first."""
    found = [p.parent for p in experiments_dir().glob(f"*/{SPEC_FILE}")]
    return sorted(found, key=lambda p: (p / SPEC_FILE).stat().st_mtime, reverse=True)


def load_folder(folder: str | os.PathLike) -> Experiment:
    """The experiment as it was last run in `folder`."""
    return load(Path(folder) / SPEC_FILE)


def step_progress(folder: str | os.PathLike, step: Step) -> tuple[int, int, str]:
    """(done, total, line) of a step, read from what its command has written so far; total 0
    when the step does not count its work."""
    path = Path(folder) / step.id
    if step.kind == "train":
        try:
            status = json.loads((path / "status.json").read_text())
        except (OSError, ValueError):
            return 0, 0, ""
        done, total = int(status.get("step") or 0), int(status.get("max_steps") or 0)
        line = f"step {done}/{total}" if total else str(status.get("state", ""))
        loss = status.get("loss")
        return done, total, line + (f" · loss {loss:.3f}" if isinstance(loss, float) else "")
    if step.kind == "eval":
        try:
            total = int(json.loads((path / "config.json").read_text()).get("total") or 0)
        except (OSError, ValueError):
            return 0, 0, ""
        cells = path / "cells.jsonl"
        done = sum(1 for line in cells.open() if line.strip()) if cells.exists() else 0
        return done, total, f"{done}/{total} cells" if total else ""
    out = path / "data.jsonl"
    rows = sum(1 for line in out.open() if line.strip()) if out.exists() else 0
    return rows, 0, f"{rows} samples" if rows else ""


# -- running -------------------------------------------------------------------------------


class Runner:
    """Runs the steps of `experiment` in `folder`, skipping those already done."""

    def __init__(self, experiment: Experiment, folder: str | os.PathLike, say: Say = print):
        self.experiment = experiment
        self.folder = Path(folder)
        self.say = say
        self.state: dict[str, Any] = {}
        self._child: subprocess.Popen | None = None
        self._stopping = False

    def run(self) -> dict[str, Any]:
        """Run to the end, a failure or a stop; return the final state."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state = self._claim()
        old = {signal.SIGTERM: None, signal.SIGINT: None}
        for sig in old:
            old[sig] = signal.signal(sig, self._on_signal)
        try:
            for step in self.experiment.steps:
                if self._stopping:
                    break
                outcome = self._step(step)
                if outcome != "done":
                    break
            else:
                self._finish("completed")
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        if self.state["state"] == "running":
            self._finish("stopped", "stopped before it finished")
        self._report()
        return self.state

    def _claim(self) -> dict[str, Any]:
        """The state to continue from, refusing while an earlier start is still at work."""
        state = read_state(self.folder)
        if state.get("state") == "running":
            raise LongCtxError(
                f"experiment {self.folder.name} is already running (process {state.get('pid')}); "
                "stop it first (longctx experiment stop)"
            )
        for step_id, record in state.get("steps", {}).items():
            if record.get("state") == "running":
                raise LongCtxError(
                    f"step {step_id} of an earlier start is still running (process "
                    f"{record.get('pid')}); stop it first (longctx experiment stop)"
                )
        spec = self.folder / SPEC_FILE
        text = self.experiment.to_yaml()
        if not spec.exists() or spec.read_text() != text:
            atomic_write(spec, [text.encode()], backup=False)
        state.update(
            experiment=self.experiment.name,
            state="running",
            pid=os.getpid(),
            started=time.time(),
            finished=None,
            reason=None,
            order=[s.id for s in self.experiment.steps],
        )
        state.setdefault("steps", {})
        _write_state(self.folder, state)
        return state

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True
        child = self._child
        if child is not None and child.returncode is None:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    def _finish(self, outcome: str, reason: str | None = None) -> None:
        self.state.update(state=outcome, finished=time.time(), reason=reason)
        _write_state(self.folder, self.state)

    def _step(self, step: Step) -> str:
        records = self.state["steps"]
        record = records.get(step.id, {})
        digest = self.experiment.digest(step)
        path = self.folder / step.id
        if record.get("state") == "done" and record.get("digest") == digest and path.exists():
            self.say(f"[{step.id}] done before, skipped")
            return "done"
        if record.get("digest") not in (None, digest) and path.exists():
            self.say(f"[{step.id}] changed since it last ran: starting it again")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        argv, env = self._prepare(step, path)
        self.say(f"[{step.id}] longctx {' '.join(argv)}")
        started = time.time()
        self._child = children.spawn(
            children.longctx(*argv),
            path / "log.txt",
            environ=env,
            cwd=workspace.home(),  # relative paths in the file are the workspace's
            shown="longctx " + " ".join(argv),
            keep=False,  # waited for below (wait4)
        )
        record = records[step.id] = {
            "state": "running",
            "digest": digest,
            "pid": self._child.pid,
            "started": started,
            "seconds_before": _seconds(record) if record.get("digest") == digest else 0.0,
            "peak_rss": record.get("peak_rss") if record.get("digest") == digest else None,
        }
        _write_state(self.folder, self.state)
        if self._stopping:  # a signal that came while it started
            self._on_signal(signal.SIGTERM, None)
        # wait4, not wait: it also returns the child's peak resident memory.
        _, status, usage = os.wait4(self._child.pid, 0)
        self._child.returncode = code = os.waitstatus_to_exitcode(status)
        self._child = None
        peak = usage.ru_maxrss * 1024  # kilobytes on Linux
        record.update(
            finished=time.time(),
            seconds=round(record["seconds_before"] + time.time() - started, 1),
            peak_rss=max(peak, record.get("peak_rss") or 0),
            returncode=code,
        )
        outcome, reason = self._outcome(step, path, code)
        record.update(state=outcome, reason=reason)
        record.pop("pid", None)
        if outcome == "failed":
            self._finish("failed", f"{step.id}: {reason}")
        elif outcome == "stopped":
            self._finish("stopped", f"stopped during {step.id}")
        else:
            _write_state(self.folder, self.state)
        self.say(
            f"[{step.id}] {outcome} in {record['seconds']:.0f} s"
            + (f": {reason}" if reason else "")
        )
        self._report()
        return outcome

    def _prepare(self, step: Step, path: Path) -> tuple[list[str], dict[str, str]]:
        """The step's command line and environment (a training step gets its config.yaml, and
        resumes from its last checkpoint when it has one)."""
        argv = step.command(self.folder)
        if step.kind != "train":
            return argv, children.env()
        from core.train import runs

        config = step.train_config(self.folder)
        if runs.last_checkpoint(path) is not None:
            argv.append("--resume")
        else:  # from the start: nothing of an attempt that never saved a checkpoint stays
            for stale in ("metrics.jsonl", "status.json", "adapter"):
                target = path / stale
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
            (path / "config.yaml").write_text(config.to_yaml())
            runs.write_status(path, {"state": "created", "created": time.time()})
        return argv, runs.child_env(config, runs.device_key(config))

    def _outcome(self, step: Step, path: Path, code: int) -> tuple[str, str | None]:
        if step.kind == "train":
            from core.train import runs

            status = runs.read_status(path)
            run_state = status.get("state")
            if code == 0 and run_state == "completed":
                return "done", None
            if self._stopping or run_state == "stopped":
                return "stopped", None
            return "failed", status.get("reason") or _last_error(path / "log.txt", code)
        if self._stopping:
            return "stopped", None
        if code != 0:
            return "failed", _last_error(path / "log.txt", code)
        if step.kind == "data" and not any(path.glob("*.jsonl")):
            return "failed", "the command wrote no data file"
        return "done", None

    def _report(self) -> None:
        """Render report.html from what is there; a report that fails says so in the log and
        never fails the experiment."""
        from core.experiments import report

        try:
            report.write(self.folder, self.experiment, self.state)
        except Exception as exc:  # a half-written folder must not stop the experiment
            self.say(f"report not written: {type(exc).__name__}: {exc}")


def _seconds(record: dict[str, Any]) -> float:
    return float(record.get("seconds") or 0.0)


def _last_error(log: Path, code: int) -> str:
    """The last line of a failed step's log that names an error, else its exit status."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    for line in reversed(lines[-40:]):
        if "error" in line.lower() or "failed" in line.lower():
            return line[:300]
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit status {code}" + (f"; last line: {lines[-1][:200]}" if lines else "")


def run(source: str | os.PathLike, out: str | os.PathLike | None = None, say: Say = print):
    """Read an experiment (file, preset name or YAML text) and run it in its folder."""
    experiment = load(source)
    folder = folder_of(experiment, out)
    return folder, Runner(experiment, folder, say).run()


# -- from the app: a child process that outlives the page ----------------------------------------


def launch(text: str, out: str | os.PathLike | None = None) -> Path:
    """Start `longctx experiment run` on this YAML text in a child process and return its folder
    at once (the app's Run button); its output goes to the folder's log.txt."""
    experiment = load(text if "\n" in text else text + "\n")
    folder = folder_of(experiment, out)
    state = read_state(folder)
    if state.get("state") == "running":
        raise LongCtxError(f"experiment {experiment.name} is already running; stop it first")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / SPEC_FILE, [experiment.to_yaml().encode()], backup=False)
    argv = ["experiment", "run", str(folder / SPEC_FILE), "--out", str(folder)]
    children.spawn(children.longctx(*argv), folder / "log.txt", shown="longctx " + " ".join(argv))
    return folder


def stop(folder: str | os.PathLike) -> None:
    """Ask a running experiment to stop: its step stops (a training saves a checkpoint), the
    finished steps stay; running it again resumes."""
    folder = Path(folder)
    state = read_state(folder)
    pid = state.get("pid")
    if state.get("state") == "running":
        os.kill(int(pid), signal.SIGTERM)
        return
    # The runner is gone (killed) but a step it started may still be working.
    for record in state.get("steps", {}).values():
        if record.get("state") == "running":
            os.killpg(int(record["pid"]), signal.SIGTERM)
            return
    raise LongCtxError(f"experiment {folder.name} is not running (it is {state.get('state')})")
