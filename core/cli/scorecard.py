"""`longctx scorecard`: one table and one figure of every suite and length evaluated for a base
model and its tuned runs, with the paper's and RULER's published references beside ours; and
`longctx rescore`: an evaluation's saved answers scored again by another scorer.

This module knows nothing about gradio.
"""

from __future__ import annotations

import argparse

from core.errors import LongCtxError
from core.evals import figures, results, scorecard
from core.evals.backends import Endpoint
from core.evals.rescore import rescore
from core.evals.scoring import SCORERS, Scorer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scorecard",
        help="base vs. tuned across every suite and length evaluated, beside published numbers",
        description="Collect the evaluation folders of a base model and its tuned runs (or the "
        "folders given) into one table and one figure. Example: longctx scorecard --base "
        "embedded -o scorecard.html --markdown scorecard.md",
    )
    p.add_argument("folders", nargs="*", help="evaluation folders (default: --base's, found)")
    p.add_argument("--base", help="the base model's name: its evaluations and its tuned runs'")
    p.add_argument("--root", help="where to look for evaluations (default: the workspace's)")
    p.add_argument("-o", "--output", help="figure file: .html or .png")
    p.add_argument("--markdown", help="also write the table as Markdown (for a model card)")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "rescore",
        help="score an evaluation's saved answers again with another scorer (no generation)",
        description="Example: longctx rescore evals/ruler-base --scorer match_part --out "
        "evals/ruler-base-part",
    )
    p.add_argument("folder", help="the evaluation folder whose answers to rescore")
    p.add_argument("--scorer", required=True, choices=SCORERS)
    p.add_argument("--judge-base-url", help="judge endpoint (scorer 'judge')")
    p.add_argument("--judge-model", help="judge model name")
    p.add_argument("--judge-api-key", help="judge key (default $OPENAI_API_KEY); never saved")
    p.add_argument("--out", required=True, help="the new folder")
    p.set_defaults(func=_rescore)


def _rescore(args: argparse.Namespace) -> int:
    judge = None
    if args.scorer == "judge" and (args.judge_base_url or args.judge_model):
        judge = Endpoint(args.judge_base_url or "", args.judge_model or "", args.judge_api_key)
    out = rescore(args.folder, Scorer(args.scorer, judge), args.out)
    cells = results.read_cells(out)
    scores = [c["score"] for c in cells if isinstance(c.get("score"), (int, float))]
    mean = f"{sum(scores) / len(scores):.3f}" if scores else "n/a"
    print(
        f"rescored {len(scores)} answers with {args.scorer}: mean score {mean}; {out}", flush=True
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    folders = list(args.folders)
    if args.base:
        folders += scorecard.folders_for(args.base, args.root)
    if not folders:
        raise LongCtxError("name evaluation folders, or --base MODEL to find its evaluations")
    card = scorecard.build(folders)
    header, *body = card.table()
    widths = [
        max(len(str(v if v is not None else "")) for v in col)
        for col in zip(header, *body, strict=True)
    ]
    for line in (header, *body):
        shown = ["" if v is None else str(v) for v in line]
        print(
            "  ".join(s.ljust(w) for s, w in zip(shown, widths, strict=True)).rstrip(), flush=True
        )
    if args.output:
        print(f"wrote {figures.export(card.figure(), args.output)}", flush=True)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(card.markdown())
        print(f"wrote {args.markdown}", flush=True)
    return 0
