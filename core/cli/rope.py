"""`longctx rope`: the RoPE base advisor on the command line (core/advisor.py does the math).

Example: longctx rope --model embedded --target 80k --base 2e8 --html advisor.html
"""

from __future__ import annotations

import argparse
import re

from core.errors import LongCtxError
from core.evals.niah import parse_numbers
from core.models import loader
from core.rope import advisor, figures, methods


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rope",
        help="choose the new RoPE base for a target context length",
        description="Print a model's RoPE shape, the bases the literature suggests for a target "
        "length (NTK-aware, critical dimension, Men et al. lower bound) and the paper's own "
        "choice; with --base, what that base gives. Example: longctx rope --model embedded "
        "--target 80k --base 2e8 --html advisor.html",
    )
    p.add_argument("--model", default="embedded", help="'embedded', a local folder or a Hub id")
    p.add_argument("--target", required=True, help="target context length, e.g. 81920 or 80k")
    p.add_argument("--base", help="a candidate RoPE base to check, e.g. 2e8 or 200M")
    p.add_argument("--html", metavar="FILE", help="write the figure here (.html, or .png)")
    p.add_argument(
        "--methods-html",
        metavar="FILE",
        help="write the figure of every method's wavelengths here (.html or .png)",
    )
    p.set_defaults(func=_rope)


def _number(text: str, what: str) -> float:
    """`2e8`, `200000000`, `200M` or `80k` -> a float."""
    try:
        return float(text)
    except ValueError:  # not float syntax: the 80k / 200M shorthand of the other commands
        values = parse_numbers(text) if re.fullmatch(r"[0-9]*\.?[0-9]+[kKmM]", text.strip()) else []
    if len(values) != 1:
        raise LongCtxError(
            f"{what} must be one number (e.g. 81920, 80k, 2e8 or 200M), got {text!r}"
        )
    return values[0]


def _rope(args: argparse.Namespace) -> int:
    target = _number(args.target, "--target")
    if target != int(target):
        raise LongCtxError(f"--target must be a whole number of tokens, got {args.target}")
    base = _number(args.base, "--base") if args.base else None
    advice = advisor.advise_model(args.model, int(target), base)
    print(f"{args.model}: {advice.shape_line()}")
    print(
        f"target: {advisor.tokens(advice.target)} tokens "
        f"(x{advice.target / advice.shape.window:.3g} the window)"
    )
    print("\nsuggested RoPE bases:")
    width = max(len(s.name) for s in [*advice.suggestions, advice.reference])
    for s in [*advice.suggestions, advice.reference]:
        # The exact value too where three digits hide it (a narrow bound): that is what to type.
        exact = f" (exactly {s.base:.6g})" if advisor.compact_hides(s.base) else ""
        print(f"  {s.name:<{width}}  {advisor.compact(s.base):>6}{exact}  {s.why}")
        print(f"  {'':<{width}}  {'':>6}  source: {s.source}")
    if base is not None:
        print(f"\nbase {advisor.compact(base)} at {advisor.tokens(advice.target)} tokens:")
        for line in advice.check.summary():
            print(f"  {line}")
    suggested = methods.suggest(advice.shape, advice.target)
    print(
        f"\nextension methods for {advisor.tokens(advice.target)} tokens (--rope on any command "
        "that loads a model, or rope: in a training config):"
    )
    width = max(len(m.method) for m in suggested)
    for m in suggested:
        spelled = m.setting.spelled() if m.setting else "needs a factors file"
        print(f"  {m.method:<{width}}  {spelled}\n  {'':<{width}}  {m.why} ({m.source})")
    from core.evals.figures import export

    if args.html:
        fig = figures.base_figure(advice.shape, advice.check.base, advice.target)
        print(f"\nfigure written to {export(fig, args.html)}")
    if args.methods_html:
        config = loader.load_config(loader.ModelSpec(name=args.model)).config
        fig = figures.methods_figure(
            config, [m.setting for m in suggested if m.setting], advice.target
        )
        print(f"methods figure written to {export(fig, args.methods_html)}")
    return 0
