"""`longctx harness`: lm-evaluation-harness suites on a local model or an endpoint, into an
evaluation folder (config.json, one cells.jsonl line per answered sample).

Running the same command with the same `--out` again resumes: answered samples are skipped, a
larger `--limit` asks only the new ones.

This module knows nothing about gradio.
"""

from __future__ import annotations

import argparse

from core import workspace
from core.cli.evals import _target, _target_args
from core.evals import mmlu, results
from core.evals.harness import HarnessConfig, HarnessRun, summary
from core.evals.niah import parse_numbers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "harness",
        help="standard suites (LongBench, InfiniteBench, RULER, BABILong, MMLU, ...) through "
        "lm-evaluation-harness",
        description="Run lm-eval tasks on the local model (loaded once, adapters, RoPE "
        "overrides and 4-bit applied) or an OpenAI-compatible endpoint (--base-url), one "
        "cells.jsonl line per answered sample. Example: longctx harness --model embedded "
        "--tasks longbench_passage_count --limit 20 --out evals/lb. Offline: set "
        "HF_DATASETS_OFFLINE=1 to use the datasets cache, or --include-path a folder of task "
        "YAMLs whose dataset_path names local files.",
    )
    _target_args(p)
    p.add_argument("--tasks", required=True, help="lm-eval task or group names, comma-separated")
    p.add_argument("--limit", type=int, default=50, help="the first N documents of each task")
    p.add_argument(
        "--lengths", default="", help="context lengths for suites that take them (RULER, BABILong)"
    )
    p.add_argument("--include-path", default="", help="a folder of extra task YAMLs")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples (default: each task's)")
    p.add_argument(
        "--no-chat",
        dest="chat",
        action="store_false",
        help="local model: plain prompts, without the chat template",
    )
    p.add_argument("--max-new-tokens", type=int, help="cap on generated tokens")
    p.add_argument("--chunk", type=int, default=25, help="documents per lm-eval call")
    p.add_argument("--out", help="result folder (default: a new evals/<id>/ in the workspace)")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "mmlu",
        help="the short-context check: MMLU 0-shot by answer-letter likelihood (lm-eval's task)",
        description="What the extension costs on short prompts, as the paper measures it. "
        "From the Hub (lm-eval's mmlu), or --file: a JSONL of cais/mmlu rows (question, "
        "subject, choices, answer 0-3). Accuracy per subject, then per category, then overall. "
        "Example: longctx mmlu --model embedded --file mmlu.jsonl --out evals/mmlu-base",
    )
    _target_args(p)
    p.add_argument("--file", default="", help="local multiple-choice file (default: the Hub)")
    p.add_argument(
        "--limit", type=int, default=100_000, help="the first N questions of each subject task"
    )
    p.add_argument("--out", help="result folder (default: a new evals/<id>/ in the workspace)")
    p.set_defaults(func=_run_mmlu)


def mmlu_run(
    target, file: str = "", limit: int = 100_000, out: str | None = None, *, models=None
) -> HarnessRun:
    """MMLU 0-shot on `target` into an evaluation folder, from the Hub or a local `file` (its
    task written into the folder's `tasks/`)."""
    folder = results.eval_folder(out, "mmlu", target.slug)
    if file:
        tasks = str(mmlu.write_file_task(file, folder / "tasks"))
        config = HarnessConfig(
            tasks=[mmlu.FILE_TASK], limit=limit, include_path=tasks, num_fewshot=0, chat=False
        )
    else:
        config = HarnessConfig(tasks=[mmlu.HUB_TASK], limit=limit, num_fewshot=0, chat=False)
    return HarnessRun(config, target, folder, models=models)


def _run_mmlu(args: argparse.Namespace) -> int:
    file = workspace.allow_given(args.file) if args.file else ""
    run = mmlu_run(_target(args), file, args.limit, args.out)
    print(f"mmlu: {run.target.label}: {run.path}", flush=True)
    for n, _ in enumerate(run.run(), 1):
        if n % 100 == 0:
            print(f"{n} questions answered", flush=True)
    got = mmlu.scores(run.cells())
    for category, value in got["categories"].items():
        print(f"{category:<18} {value:6.2f}", flush=True)
    overall = "n/a" if got["overall"] is None else f"{got['overall']:.2f}"
    print(
        f"{'overall':<18} {overall:>6} ({got['questions']} questions, "
        f"{len(got['subjects'])} subjects)",
        flush=True,
    )
    return 0


def config_from_args(args: argparse.Namespace) -> HarnessConfig:
    include = workspace.allow_given(args.include_path) if args.include_path else ""
    return HarnessConfig(
        tasks=args.tasks,
        limit=args.limit,
        lengths=parse_numbers(args.lengths or ""),
        include_path=include,
        num_fewshot=args.num_fewshot,
        chat=args.chat,
        max_new_tokens=args.max_new_tokens,
        chunk=args.chunk,
    )


def _run(args: argparse.Namespace) -> int:
    run = HarnessRun(config_from_args(args), _target(args), args.out)
    print(f"harness: {run.target.label}: {', '.join(run.config.tasks)} in {run.path}", flush=True)
    for cell in run.run():
        score = "n/a " if cell["score"] is None else f"{cell['score']:.2f}"
        print(f"{cell['key']:<32} score {score}  {cell['answer'][:70]!r}", flush=True)
    for task, metrics in summary(run.cells()).items():
        shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        print(f"{task:<32} {shown}", flush=True)
    return 0
