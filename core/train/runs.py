"""Run folders: create, launch as a child process, read back, stop, resume.

A run is `runs/<id>/` with `config.yaml`, `status.json`, `metrics.jsonl`, `log.txt`,
`checkpoints/` and `adapter/`. Everything the UI shows comes from these files, so a page refresh,
an app restart or a second browser see the same runs. `status.json` is replaced atomically; a
run whose process died without saying so (SIGKILL, power loss, out-of-memory killer) reads as
`interrupted` and can be resumed from its last checkpoint.

Knows nothing about how training works; `core.train.engine` does the training.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import children, threads, workspace
from core.data.io import atomic_write
from core.errors import LongCtxError
from core.train import allocator
from core.train.config import TrainConfig

ACTIVE = ("starting", "running", "stopping")
FINAL = ("completed", "stopped", "failed", "interrupted")


def runs_dir() -> Path:
    return workspace.subdir("runs")


def slug(name: str) -> str:
    """A run name reduced to letters, digits, '-', '_' and '.': names are never shell or paths."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return cleaned[:48] or "run"


def new_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_dir() / f"{stamp}-{slug(config.name)}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(config.to_yaml())
    write_status(path, {"state": "created", "created": time.time()})
    return path


def run_path(run_id: str) -> Path:
    """The folder of run `run_id`, refusing ids that would leave the runs folder."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id or "") or set(run_id) == {"."}:
        raise LongCtxError(f"{run_id!r} is not a run id")
    path = (runs_dir() / run_id).resolve()
    if path.parent != runs_dir().resolve() or not (path / "config.yaml").exists():
        raise LongCtxError(f"no run {run_id!r} in {runs_dir()}")
    return path


# -- status ---------------------------------------------------------------------------------------


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    tmp = run_dir / f".status.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(status, indent=1))
    os.replace(tmp, run_dir / "status.json")


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        status = {"state": "unknown"}
    if status.get("state") in ACTIVE and not threads.process_alive(status.get("pid")):
        status = {
            **status,
            "state": "interrupted",
            "reason": "the training process ended without a word (killed?)",
        }
    return status


def update_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        status = {}
    status.update(fields, updated=time.time())
    write_status(run_dir, status)
    return status


# -- reading runs ------------------------------------------------------------------------------------


@dataclass
class RunInfo:
    id: str
    path: Path
    status: dict[str, Any]
    config: TrainConfig | None

    @property
    def state(self) -> str:
        return str(self.status.get("state", "unknown"))


def list_runs() -> list[RunInfo]:
    """All runs, newest first (by creation time: ids made in the same second sort by name)."""
    out = []
    for path in runs_dir().iterdir():
        if not (path / "config.yaml").exists():
            continue
        try:
            config = TrainConfig.from_yaml(path / "config.yaml")
        except LongCtxError:
            config = None
        out.append(RunInfo(path.name, path, read_status(path), config))
    return sorted(out, key=lambda r: (r.status.get("created") or 0, r.id), reverse=True)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The metrics lines written so far, one per (step, kind); a half-written line is skipped.

    Runs resumed before `trim_metrics` existed hold a killed attempt's rows twice: the later
    row (the resumed attempt's) wins, so their charts show one point per step too.
    """
    file = run_dir / "metrics.jsonl"
    if not file.exists():
        return []
    rows: dict[tuple[Any, bool], dict[str, Any]] = {}
    for line in file.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = (row.get("step"), "eval_loss" in row)
        rows.pop(key, None)  # re-inserted at the end: rows stay in the order they were written
        rows[key] = row
    return list(rows.values())


def trim_metrics(run_dir: Path, step: int, reevaluates: bool = False) -> int:
    """Drop the metrics rows a resumed run is about to write again; returns how many.

    A run resumed from the checkpoint of step `step` logs steps after it, and (`reevaluates`)
    measures its held-out loss at `step` once more; the killed attempt's rows for those go.
    Rewritten atomically: a kill during the rewrite leaves the old file or the new one, whole.
    """
    file = run_dir / "metrics.jsonl"
    if not file.exists():
        return 0
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the half-written last line of a killed writer
        row_step = row.get("step") or 0
        if row_step < step or (row_step == step and not (reevaluates and "eval_loss" in row)):
            kept.append(line)
    if len(kept) < len(lines):
        atomic_write(file, [("".join(f"{line}\n" for line in kept)).encode()], backup=False)
    return len(lines) - len(kept)


def tail_log(run_dir: Path, lines: int = 40) -> str:
    """The last `lines` non-blank lines of a run's log, as a terminal would show them."""
    file = run_dir / "log.txt"
    if not file.exists():
        return ""
    with file.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode("utf-8", errors="replace")
    # tqdm redraws a line with carriage returns: keep what a terminal would show, the text after
    # the last one (str.splitlines would split at each of them, so split at newlines only).
    shown = [line.rstrip("\r").rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return "\n".join([line for line in shown if line][-lines:])


def last_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted(
        (p for p in (run_dir / "checkpoints").glob("checkpoint-*") if p.is_dir()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    # A checkpoint folder is complete once the trainer state is written (it is written last).
    complete = [p for p in ckpts if (p / "trainer_state.json").exists()]
    return complete[-1] if complete else None


# -- launching, stopping -------------------------------------------------------------------------------


def device_key(config: TrainConfig) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and config.num_gpus >= 1 else "cpu"


def busy_run(device: str) -> RunInfo | None:
    """The run currently training on `device`, if any."""
    for run in list_runs():
        if run.state in ACTIVE and run.status.get("device") == device:
            return run
    return None


def command_for(run_dir: Path, config: TrainConfig, resume: bool = False) -> list[str]:
    """The argument list that trains `run_dir`. Never a shell string.

    Several processes go through `accelerate launch` with the config `launch` writes into the
    run folder (see core/train/distributed.py)."""
    from core.train import distributed

    tail = ["core.cli", "train", str(run_dir / "config.yaml"), "--run-dir", str(run_dir)]
    if resume:
        tail.append("--resume")
    if config.num_gpus > 1:
        launcher = [sys.executable, "-m", "accelerate.commands.launch"]
        return [*launcher, "--config_file", str(run_dir / distributed.CONFIG_FILE), "-m", *tail]
    return [sys.executable, "-m", *tail]


def display_command(cmd: list[str]) -> str:
    """The command as a user would type it: `python`, paths relative to $LONGCTX_HOME."""
    import shlex

    home = str(workspace.home())
    parts = []
    for arg in cmd:
        if arg == sys.executable:
            parts.append("python")
        elif arg.startswith(home):
            parts.append('"$LONGCTX_HOME' + arg[len(home) :] + '"')  # double quotes: $ expands
        else:
            parts.append(shlex.quote(arg))
    return " ".join(parts)


def short_path(path: str | Path) -> str:
    """A workspace path shown relative to the workspace (`runs/<id>/adapter`)."""
    try:
        return str(Path(path).resolve().relative_to(workspace.home()))
    except ValueError:
        return str(path)


def check_engine(config: TrainConfig) -> None:
    """Refuse, before any run folder exists, an engine this machine cannot run."""
    if config.engine == "unsloth":
        from core.train import unsloth_engine

        unsloth_engine.require(try_import=False)  # importing would patch this process


def check_launchable(config: TrainConfig) -> None:
    """Refuse, before any run folder exists, what would fail as the run starts: an engine this
    machine cannot run, or a model it cannot find (a config file is read, no weights)."""
    from core.models import loader

    check_engine(config)
    loader.load_config(loader.ModelSpec(name=config.model))


def child_env(config: TrainConfig, device: str) -> dict[str, str]:
    """The environment a training child starts with: the workspace, this project importable,
    and on a CPU the allocator and the thread budget."""
    env = children.env()
    if device == "cpu":
        env = allocator.child_env(env)
        # Sized before torch starts in the child (OpenMP reads these once); the child re-plans
        # as it runs (callbacks.RunMonitor), so this is only its start.
        budget = threads.plan("train", config.threads or None)
        env = threads.child_env(env, max(1, budget.threads // max(1, config.num_gpus)))
    return env


def launch(config: TrainConfig, run_dir: Path | None = None, resume: bool = False) -> Path:
    """Start training in a child process and return its run folder at once.

    Refuses when another run is training on the same device.
    """
    config.validate()
    check_launchable(config)
    device = device_key(config)
    busy = busy_run(device)
    if busy is not None and (run_dir is None or busy.path != run_dir):
        raise LongCtxError(
            f"run {busy.id} is training on {device}; stop it or wait for it to finish "
            "(one run per device at a time)"
        )
    if config.num_gpus > 1:
        from core.train import distributed

        distributed.require_launchable(config, device)
    run_dir = run_dir or new_run_dir(config)
    if config.num_gpus > 1:
        distributed.write_config(config, device, run_dir)
    cmd = command_for(run_dir, config, resume)
    # In its own session, apart from the app. A stop signal goes to the first training process
    # (status `pid`), which tells the others at the next step (callbacks.RunMonitor).
    proc = children.spawn(cmd, run_dir / "log.txt", environ=child_env(config, device))
    update_status(
        run_dir,
        state="starting",
        pid=proc.pid,
        group=proc.pid,  # the launched session: every process of the run (pid becomes rank 0's)
        device=device,
        command=cmd,
        started=time.time(),
        reason=None,
    )
    return run_dir


def stop(run_id: str) -> dict[str, Any]:
    """Ask a run to stop: it saves a checkpoint and its adapter, then exits as `stopped`."""
    run_dir = run_path(run_id)
    status = read_status(run_dir)
    if status.get("state") not in ACTIVE:
        raise LongCtxError(f"run {run_id} is not running (it is {status.get('state')})")
    try:
        os.killpg(int(status["pid"]), signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        os.kill(int(status["pid"]), signal.SIGTERM)
    return update_status(run_dir, state="stopping")


def resume(run_id: str) -> Path:
    """Continue a stopped, failed or interrupted run from its last complete checkpoint."""
    run_dir = run_path(run_id)
    status = read_status(run_dir)
    if status.get("state") in ACTIVE:
        raise LongCtxError(f"run {run_id} is still {status['state']}")
    if status.get("state") == "completed":
        raise LongCtxError(f"run {run_id} has completed; start a new run to train further")
    config = TrainConfig.from_yaml(run_dir / "config.yaml")
    return launch(config, run_dir=run_dir, resume=True)


def wait(run_dir: Path, timeout: float = 3600, poll: float = 0.5) -> dict[str, Any]:
    """Block until the run reaches a final state (used by the CLI and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children.reap()
        status = read_status(run_dir)
        if status.get("state") in FINAL:
            return status
        time.sleep(poll)
    raise LongCtxError(f"run {run_dir.name} did not finish within {timeout:.0f} s")
