"""`longctx train`, `longctx runs ...` and `longctx export`: the command-line face of training.

`longctx train CONFIG.yaml` is the one way training starts; the UI writes the YAML and runs this
same command as a child process (with `--run-dir`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from core.errors import LongCtxError, first_line
from core.train import allocator, runs
from core.train.config import TrainConfig

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA adapter from a YAML config")
    p.add_argument("config", help="TrainConfig YAML (see assets/presets/)")
    p.add_argument("--run-dir", help="train into this existing run folder (used by the app)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--detach", action="store_true", help="start in the background and return")
    p.set_defaults(func=_train)

    r = sub.add_parser("runs", help="list, show, stop or resume training runs")
    rs = r.add_subparsers(dest="action", required=True)
    rs.add_parser("list", help="all runs, newest first").set_defaults(func=_runs_list)
    for name, func, text in (
        ("show", _runs_show, "status and last metrics of a run"),
        ("stop", _runs_stop, "checkpoint and stop a run"),
        ("resume", _runs_resume, "continue a stopped or interrupted run"),
    ):
        q = rs.add_parser(name, help=text)
        q.add_argument("run_id")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "resume":
            q.add_argument("--wait", action="store_true", help="block until it finishes")
        q.set_defaults(func=func)

    e = sub.add_parser("export", help="merge a run's adapter into its base and/or push to the Hub")
    e.add_argument("run", help="run id or adapter folder")
    e.add_argument("--merge", action="store_true", help="save the merged model (new RoPE base)")
    e.add_argument("--out", help="output folder (default: runs/<id>/merged)")
    e.add_argument("--push", metavar="REPO", help="push to this Hub repo (token: $HF_TOKEN)")
    e.add_argument("--private", action="store_true")
    e.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    config = TrainConfig.from_yaml(Path(args.config)).validate()
    restartable = getattr(args, "process_argv", None) is not None
    if restartable and runs.device_key(config) == "cpu" and not args.detach:
        allocator.reexec_with_allocator(args.process_argv)  # returns if there is nothing to swap
    if args.run_dir:  # started by runs.launch (or an experiment), which made these checks
        run_dir = Path(args.run_dir).resolve()
        if config.num_gpus > 1 and "LOCAL_RANK" not in os.environ:
            return _launch_processes(config, run_dir, args.resume)
        return _train_here(config, run_dir, args.resume)
    if args.detach:
        run_dir = runs.launch(config)  # checks, refuses a busy device, makes the run folder
        print(f"started run {run_dir.name} in the background ({run_dir})")
        return 0
    if config.num_gpus > 1:  # several processes: accelerate starts them, this one waits
        run_dir = runs.launch(config)
        print(f"run {run_dir.name}: {run_dir} ({config.num_gpus} processes, log in log.txt)")
        status = runs.wait(run_dir, timeout=float("inf"))
        print(f"run {run_dir.name} {status['state']}" + _reason(status))
        return 0 if status["state"] in ("completed", "stopped") else 1
    # After the restart above, so the model's config is read once.
    runs.check_launchable(config)
    busy = runs.busy_run(runs.device_key(config))
    if busy is not None:
        raise LongCtxError(f"run {busy.id} is training on this device; stop it or wait")
    run_dir = runs.new_run_dir(config)
    print(f"run {run_dir.name}: {run_dir}", flush=True)
    with _tee(run_dir / "log.txt"):
        return _train_here(config, run_dir, args.resume)


def _train_here(config: TrainConfig, run_dir: Path, resume: bool) -> int:
    if config.engine == "unsloth":
        # unsloth patches transformers and peft as it imports, so it goes first; if it cannot
        # import, load_for_training says why.
        with contextlib.suppress(Exception):
            import unsloth  # noqa: F401
    import torch

    from core.train.engine import run_training

    logging.getLogger().setLevel(logging.INFO)
    # At each save peft asks the Hub whether the base's vocabulary grew (ours never does: the
    # tokenizer is used as it is); offline that prints two warnings per checkpoint into the log.
    for noise in ("Unable to fetch remote file", "Could not find a config file in"):
        warnings.filterwarnings("ignore", message=noise)
    # peft still reads transformers' deprecated name for it; nothing a user can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    if runs.device_key(config) == "cpu":
        # bitsandbytes warns at import that its optional CPU 4-bit kernels are missing (and,
        # with the `kernels` package installed, that package warns that offline it cannot check
        # the Hub kernel's publisher); CPU runs never quantize, so that is noise in every CPU log.
        for name in ("bitsandbytes.backends.cpu.ops", "kernels"):
            logging.getLogger(name).setLevel(logging.ERROR)
        allocator.tune_glibc()
    log.info("memory allocator: %s", allocator.active() or "the system's malloc")
    try:
        final = run_training(config, run_dir, resume=resume)
    except torch.OutOfMemoryError as exc:
        _fail(
            run_dir,
            "out of memory at max_length "
            f"{config.max_length}: lower max_length, use quantization 4bit, or turn on "
            "offload_checkpoints",
            exc,
        )
        return 1
    except LongCtxError as exc:
        _fail(run_dir, str(exc), exc)
        return 1
    except Exception as exc:
        _fail(run_dir, f"{type(exc).__name__}: {first_line(exc)}", exc)
        raise
    if final:
        print(
            f"run {run_dir.name} {final['state']} at step {final['step']}; "
            f"adapter in {final['adapter']}"
        )
    return 0


def _launch_processes(config: TrainConfig, run_dir: Path, resume: bool) -> int:
    """Train `run_dir` in config.num_gpus processes started by `accelerate launch` (an
    experiment's training step comes here: it names the run folder itself), and wait."""
    import subprocess

    from core.train import distributed

    device = runs.device_key(config)
    distributed.require_launchable(config, device)
    distributed.write_config(config, device, run_dir)
    cmd = runs.command_for(run_dir, config, resume)
    return subprocess.call(cmd, env=runs.child_env(config, device))


def _reason(status: dict) -> str:
    return f": {status['reason']}" if status.get("reason") else ""


def _fail(run_dir: Path, reason: str, exc: BaseException) -> None:
    runs.update_status(run_dir, state="failed", reason=reason)
    print(f"training failed: {reason}", file=sys.stderr, flush=True)


class _tee:
    """Copy this process's stdout/stderr into the run's log.txt while training in the foreground."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.file = self.path.open("a", buffering=1)
        self.saved = sys.stdout, sys.stderr
        sys.stdout = _Both(self.saved[0], self.file)
        sys.stderr = _Both(self.saved[1], self.file)
        root = logging.getLogger()
        self.handler = logging.StreamHandler(sys.stderr)
        root.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self.handler)
        sys.stdout, sys.stderr = self.saved
        self.file.close()


class _Both:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


def _runs_list(args: argparse.Namespace) -> int:
    rows = runs.list_runs()
    if not rows:
        print("no runs yet")
    for run in rows:
        s = run.status
        loss = f"loss {s['loss']:.4f}" if isinstance(s.get("loss"), float) else ""
        if isinstance(s.get("eval_loss"), float):
            loss += f" held-out {s['eval_loss']:.4f}"
        print(
            f"{run.id:40s} {run.state:12s} step {s.get('step', 0)}/{s.get('max_steps', '?')} {loss}"
        )
    return 0


def _runs_show(args: argparse.Namespace) -> int:
    run_dir = runs.run_path(args.run_id)
    status = runs.read_status(run_dir)
    metrics = runs.read_metrics(run_dir)
    if args.json:
        print(json.dumps({"status": status, "metrics": metrics[-1:]}, indent=1))
        return 0
    for key in (
        "state",
        "reason",
        "step",
        "max_steps",
        "loss",
        "eval_loss",
        "eval_step",
        "eta_s",
        "threads",
        "adapter",
        "last_checkpoint",
    ):
        if status.get(key) is not None:
            # threads: the count, and why that many ("1 of 2 cores (1 kept for serve)")
            value = status.get("threads_reason") if key == "threads" else None
            print(f"{key:16s} {value or status[key]}")
    if metrics:
        print(f"{'last metrics':16s} {json.dumps(metrics[-1])}")
    return 0


def _runs_stop(args: argparse.Namespace) -> int:
    runs.stop(args.run_id)
    print(f"asked run {args.run_id} to stop; it saves a checkpoint first")
    return 0


def _runs_resume(args: argparse.Namespace) -> int:
    run_dir = runs.resume(args.run_id)
    print(f"resumed run {run_dir.name}")
    if args.wait:
        status = runs.wait(run_dir)
        print(f"run {run_dir.name} {status['state']}")
        return 0 if status["state"] in ("completed", "stopped") else 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from core.train import export

    adapter = export.find_adapter(args.run)
    if not args.merge and not args.push:
        raise LongCtxError("say what to do: --merge and/or --push REPO")
    target = adapter
    if args.merge:
        out = Path(args.out) if args.out else adapter.parent / "merged"
        start = time.monotonic()
        target = export.merge(adapter, out)
        print(f"merged model saved to {target} ({time.monotonic() - start:.0f} s)")
    if args.push:
        url = export.push(target, args.push, private=args.private)
        print(f"pushed to {url}")
    return 0
