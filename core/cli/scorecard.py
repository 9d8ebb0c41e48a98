"""`longctx scorecard`: one table and one figure of every suite and length evaluated for a base
model and its tuned runs, with the paper's and RULER's published references beside ours.

This module knows nothing about gradio.
"""

from __future__ import annotations

import argparse

from core.errors import LongCtxError
from core.evals import figures, scorecard


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
