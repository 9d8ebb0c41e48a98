"""`longctx experiment run|status|list|stop|report`: one file runs data -> train -> evaluate ->
report, each step the same `longctx` command a user would type (core/experiments/).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

from core.errors import ConfigError, LongCtxError
from core.experiments import report, runner, spec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run an experiment file: data -> train -> evaluate -> report, resumable",
        description="An experiment file names its data steps, trainings and evaluations "
        "(see assets/experiments/). Each step is a longctx command writing into its own folder "
        "of experiments/<name>/; running the same file again skips the finished steps.",
    )
    ps = p.add_subparsers(dest="action", required=True)
    r = ps.add_parser("run", help="run (or resume) an experiment")
    r.add_argument("file", help=f"experiment YAML, or a preset: {', '.join(spec.list_presets())}")
    r.add_argument("--out", help="experiment folder (default: experiments/<name>/)")
    r.add_argument("--check", action="store_true", help="print the plan, check every command")
    r.add_argument("--detach", action="store_true", help="start in the background and return")
    r.add_argument("--png", action="store_true", help="also export the figures as PNG (kaleido)")
    r.set_defaults(func=_run)
    for name, func, text in (
        ("status", _status, "the steps of an experiment with their state and time"),
        ("stop", _stop, "stop a running experiment (finished steps stay)"),
        ("report", _report, "write report.html again (and PNG figures with --png)"),
    ):
        q = ps.add_parser(name, help=text)
        q.add_argument("experiment", help="its name (under experiments/) or folder")
        if name == "status":
            q.add_argument("--json", action="store_true", help="state.json as it is")
        if name == "report":
            q.add_argument("--png", action="store_true", help="also export PNG figures")
        q.set_defaults(func=func)
    ps.add_parser("list", help="experiments in the workspace").set_defaults(func=_list)


def check_commands(experiment: spec.Experiment, parser: argparse.ArgumentParser) -> None:
    """Parse every step's command line with the real parser, so a misspelled option fails
    before the first step runs rather than an hour in.

    Raises:
        ConfigError: one line per step whose command does not parse.
    """
    problems = []
    for step in experiment.steps:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(step.command("EXPERIMENT"))
        except SystemExit:
            lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
            problems.append(f"step {step.id}: {lines[-1] if lines else 'does not parse'}")
    if problems:
        raise ConfigError(problems)


def _folder(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    folder = runner.experiments_dir() / name
    if not (folder / runner.SPEC_FILE).exists():
        known = ", ".join(p.name for p in runner.list_experiments()) or "none yet"
        raise LongCtxError(f"no experiment {name!r} (experiments: {known})")
    return folder


def _run(args: argparse.Namespace) -> int:
    experiment = spec.load(args.file)
    check_commands(experiment, args.parser)
    folder = runner.folder_of(experiment, args.out)
    if args.check:
        print(f"experiment {experiment.name}: {len(experiment.steps)} steps in {folder}")
        for step in experiment.steps:
            print(f"  {step.id:<28} longctx {' '.join(step.command(folder))}")
        return 0
    if args.detach:
        folder = runner.launch(experiment.to_yaml(), args.out)
        print(f"experiment {experiment.name} started in the background ({folder})")
        return 0
    print(f"experiment {experiment.name}: {folder}", flush=True)
    state = runner.Runner(experiment, folder, say=lambda line: print(line, flush=True)).run()
    if args.png:
        for path in report.write_pngs(folder, experiment):
            print(f"figure: {path}")
    print(f"experiment {experiment.name} {state['state']}; report: {folder / runner.REPORT_FILE}")
    if state["state"] == "failed":
        raise LongCtxError(state.get("reason") or "a step failed")
    return 0 if state["state"] == "completed" else 1


def _status(args: argparse.Namespace) -> int:
    folder = _folder(args.experiment)
    state = runner.read_state(folder)
    if args.json:
        print(json.dumps(state, indent=1))
        return 0
    experiment = runner.load_folder(folder)
    print(
        f"experiment {experiment.name}: {state.get('state')}"
        + (f" ({state['reason']})" if state.get("reason") else "")
    )
    for step in experiment.steps:
        record = state.get("steps", {}).get(step.id, {})
        line = record.get("state", "pending")
        if record.get("state") == "running":
            _, _, progress = runner.step_progress(folder, step)
            line += f" {progress} · {time.time() - record['started']:.0f} s"
        elif record.get("seconds") is not None:
            line += f" in {record['seconds']:.0f} s"
        print(f"  {step.id:<28} {line}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    folder = _folder(args.experiment)
    runner.stop(folder)
    print(f"asked experiment {folder.name} to stop; run it again to resume")
    return 0


def _report(args: argparse.Namespace) -> int:
    folder = _folder(args.experiment)
    experiment = runner.load_folder(folder)
    path = report.write(folder, experiment, runner.read_state(folder))
    print(f"report: {path}")
    if args.png:
        for png in report.write_pngs(folder, experiment):
            print(f"figure: {png}")
    return 0


def _list(args: argparse.Namespace) -> int:
    found = runner.list_experiments()
    if not found:
        print("no experiments yet; try: longctx experiment run miniature-cpu --check")
    for folder in found:
        state = runner.read_state(folder)
        steps = state.get("steps", {})
        done = sum(1 for r in steps.values() if r.get("state") == "done")
        print(
            f"{folder.name:<32} {state.get('state'):<12} {done}/{len(state.get('order', steps))} steps"
        )
    return 0
