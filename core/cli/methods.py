"""`longctx compare-methods`: context-extension methods side by side on one model, no training
(core/evals/methods.py does the work).

Example: longctx compare-methods --model embedded --methods none yarn:factor=4 linear:factor=4
         --lengths 4k,16k --depths 10,50,90 --out evals/methods-smollm
"""

from __future__ import annotations

import argparse
import sys

from core.evals import methods


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare-methods",
        help="perplexity and NIAH of several RoPE extension methods (and trained runs) side by side",
        description="For one model and a list of RoPE settings (none = the model as it is; "
        "yarn:factor=4, linear:factor=4, dynamic:factor=4, llama3:factor=4, base:theta=1e6, ...), "
        "with no training, measure the perplexity of the last positions and a NIAH grid at each "
        "length, and write one figure per measure and a table of how far each method holds. "
        "A rerun into the same --out resumes. Example: longctx compare-methods --model embedded "
        "--methods none yarn:factor=4 linear:factor=4 --lengths 4k,16k --out evals/methods",
    )
    p.add_argument("--model", default="embedded", help="'embedded', a local folder or a Hub id")
    p.add_argument(
        "--methods",
        nargs="+",
        default=[methods.AS_IS, "yarn:factor=4"],
        help="RoPE settings to compare; 'none' is the model as it is",
    )
    p.add_argument(
        "--runs",
        nargs="*",
        default=[],
        help="trained runs (ids or adapter folders) to add; each brings its own RoPE",
    )
    p.add_argument("--lengths", default="4k,16k,32k", help="lengths in tokens, e.g. 4k,16k,32k")
    p.add_argument("--depths", default="10,50,90", help="NIAH needle depths in percent")
    p.add_argument("--windows", type=int, default=1, help="perplexity windows per length")
    p.add_argument("--no-niah", action="store_true", help="perplexity only (much faster)")
    p.add_argument("--out", help="the comparison folder (default: evals/methods-<date>)")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    config = methods.MethodsConfig(
        model=args.model,
        methods=args.methods,
        runs=args.runs,
        lengths=args.lengths,
        depths=args.depths,
        windows=args.windows,
        niah=not args.no_niah,
    )
    comparison = methods.Comparison(config, args.out)
    print(f"comparing {len(config.entries())} entries in {comparison.path}", flush=True)

    def progress(what: str, done: int, total: int) -> None:
        print(
            f"\r{what}: {done}/{total} cells",
            end="\n" if done == total else "",
            flush=True,
            file=sys.stderr,
        )

    comparison.run(progress)
    print(comparison.table_markdown())
    for path in methods.export_figures(comparison):
        print(f"written: {path}")
    return 0
