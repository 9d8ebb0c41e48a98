"""`longctx data ...`: the Data tab's engine from the command line.

    longctx data validate FILE                      one `line N: reason` per problem, exit 1 if any
    longctx data stats FILE [--model M] [--max-length N] [--json]
    longctx data show FILE INDEX [--model M]        what the model sees, loss marked ⟦…⟧
    longctx data mix OUT PART [PART ...] [--total N] [--seed S] [--push REPO]
    longctx data split FILE --hold-out N|RATIO|PERCENT [--train OUT] [--eval OUT] [--seed S]
    longctx data push FILE REPO [--token T]
    longctx data import FILE|HUB_ID [--out OUT] [--format auto|alpaca|sharegpt|openai]

This module parses arguments and prints; the work is done by the other `core.data` modules.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.errors import LongCtxError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `longctx data` and its sub-commands."""
    p = subparsers.add_parser(
        "data",
        help="validate, measure, inspect and mix long-context training sets",
        description="Training sets in the paper's format (JSONL of {conversations} or {text}; "
        "also JSON arrays, Parquet, save_to_disk folders). FILE[N] takes N random rows.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    v = sub.add_parser("validate", help="list malformed rows as 'line N: reason' (exit 1 if any)")
    v.add_argument("file", help="dataset file (FILE[N] for a random sample)")
    v.set_defaults(func=_validate)

    s = sub.add_parser("stats", help="token statistics under a tokenizer and its chat template")
    s.add_argument("file", help="dataset file (FILE[N] for a random sample)")
    _model_args(s)
    s.add_argument("--json", action="store_true", help="print the summary and rows as JSON")
    s.add_argument("--workers", type=int, help="processes to use (default: CPU count, max 8)")
    s.add_argument("--no-cache", action="store_true", help="ignore and do not write the cache")
    s.add_argument("--evidence", action="store_true", help="also locate answers' evidence depth")
    s.set_defaults(func=_stats)

    w = sub.add_parser("show", help="print one sample as the model sees it, loss marked ⟦…⟧")
    w.add_argument("file")
    w.add_argument("index", type=int, help="0-based sample index")
    _model_args(w)
    w.add_argument("--overflow", default="drop", choices=("drop", "head", "truncate_middle"))
    w.add_argument("--fold", type=int, default=600, help="characters kept each side of a fold")
    w.set_defaults(func=_show)

    m = sub.add_parser("mix", help="build a training mixture from several files")
    m.add_argument("output", help="the mixture file to write (JSONL)")
    m.add_argument(
        "parts",
        nargs="+",
        metavar="PART",
        help="FILE (all valid rows), FILE:COUNT, FILE:RATIO (0.3) or FILE:PERCENT (30%%)",
    )
    m.add_argument("--total", type=int, help="mixture size when parts are given as ratios")
    m.add_argument("--seed", type=int, default=42)
    m.add_argument("--no-shuffle", action="store_true", help="keep parts in order")
    _push_args(m, repo_flag=True)
    m.set_defaults(func=_mix)

    h = sub.add_parser(
        "split",
        help="hold chat samples out of a training set, to evaluate on (longctx samples)",
        description="Write FILE's rows to a training file and a held-out file of chat samples "
        "the model will not train on. Example: longctx data split datasets/mix.jsonl "
        "--hold-out 50",
    )
    h.add_argument("file", help="the dataset to split")
    h.add_argument(
        "--hold-out",
        required=True,
        help="chat samples to hold out: a count (50), a ratio (0.05) or a percentage (5%%)",
    )
    h.add_argument("--train", help="training file to write (default: datasets/NAME.train.jsonl)")
    h.add_argument("--eval", help="held-out file to write (default: datasets/NAME.eval.jsonl)")
    h.add_argument("--seed", type=int, default=42)
    h.set_defaults(func=_split)

    u = sub.add_parser("push", help="upload a dataset file to a Hugging Face dataset repo")
    u.add_argument("file")
    u.add_argument("repo", help="user/name of the dataset repo (created if needed)")
    _push_args(u, repo_flag=False)
    u.set_defaults(func=_push)

    i = sub.add_parser(
        "import",
        help="convert Alpaca/LongAlpaca, ShareGPT or OpenAI-messages rows to conversations",
        description="Write FILE's rows in our conversations format, metadata kept; rows that do "
        "not convert are listed as 'line N: reason'. FILE may be a Hub dataset id "
        "(Yukang/LongAlpaca-12k, or hub:org/name:split) when the Hub is reachable. Example: "
        "longctx data import LongAlpaca-12k.json --out datasets/longalpaca.jsonl",
    )
    i.add_argument("file", help="the file (FILE[N] for N random rows) or Hub dataset to import")
    i.add_argument("--out", help="JSONL file to write (default: datasets/NAME.jsonl)")
    i.add_argument(
        "--format",
        default="auto",
        choices=("auto", "alpaca", "sharegpt", "openai"),
        help="the input's format (default: detected per row)",
    )
    i.set_defaults(func=_import)

    # `longctx data make passkey|keys|topics`: procedural sets, built by the synth package.
    from core.cli.synth import add_make_parser

    add_make_parser(sub)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded", help="whose tokenizer and chat template")
    p.add_argument("--max-length", type=int, help="longest sample kept (the paper: 81920)")


def _push_args(p: argparse.ArgumentParser, *, repo_flag: bool) -> None:
    if repo_flag:
        p.add_argument("--push", metavar="REPO", help="also upload the result to this Hub repo")
    p.add_argument("--token", help="Hugging Face token with write access (default: HF_TOKEN)")
    p.add_argument("--public", action="store_true", help="create the repo public")


def _validate(args: argparse.Namespace) -> int:
    from core.data import io

    source = io.open_source(args.file)
    result = io.validate(source)
    if result.problems:
        print("\n".join(map(str, result.problems)))
        print(
            f"{len(result.problems)} problem(s) in {result.bad_rows} of {result.rows} rows of "
            f"{source.name}",
            file=sys.stderr,
        )
        return 1
    kinds = result.kinds
    print(f"ok: {result.rows} samples ({kinds['chat']} chat, {kinds['text']} text)")
    return 0


def _progress_printer(enabled: bool) -> Any:
    if not enabled:
        return None

    def show(done: int, total: int) -> None:
        print(f"\rmeasuring {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    return show


def _stats(args: argparse.Namespace) -> int:
    from core.data import dedup, io, stats
    from core.models.tokenizers import load_tokenizer

    source = io.open_source(args.file)
    tokenizer = load_tokenizer(args.model)
    result = stats.measure(
        source,
        tokenizer,
        name=args.model,
        with_evidence=args.evidence,
        workers=args.workers,
        use_cache=not args.no_cache,
        progress=_progress_printer(sys.stderr.isatty()),
    )
    summary = result.summary(args.max_length)
    groups = dedup.duplicate_contexts(result.samples)
    near = dedup.near_duplicate_questions(result.samples)
    summary["duplicate_contexts"] = [g.lines for g in groups]
    summary["near_duplicate_questions"] = len(near)
    if args.json:
        summary["rows"] = [stats.as_dict(s) for s in result.samples]
        print(json.dumps(summary, ensure_ascii=False, indent=1))
        return 0
    print(_format_summary(summary, result.unit, args.file))
    return 0


def _format_summary(s: dict[str, Any], unit: str, file: str) -> str:
    t, a = s["tokens"], s["answer_tokens"]
    lines = [
        f"{s['source']}: {s['samples']} samples ({s['chat']} chat, {s['text']} text, "
        f"{s['malformed']} malformed); tokenizer {s['tokenizer']}",
        f"tokens per sample: min {t['min']:,}  median {t['median']:,.0f}  mean {t['mean']:,.0f}  "
        f"max {t['max']:,}  total {t['sum']:,}",
        f"answer tokens (loss, per answer): median {a['median']:,.0f}  max {a['max']:,}  "
        f"total {a['sum']:,}",
    ]
    if s["max_length"]:
        lines.append(
            f"max_length {s['max_length']:,}: {s['over_max_length']} samples over "
            f"({100 * s['over_share']:.1f} %), dropped by default"
        )
    lines.append("tasks: " + ", ".join(f"{k} {v}" for k, v in s["tasks"].items()))
    dup = s["duplicate_contexts"]
    lines.append(
        f"duplicate contexts: {len(dup)} group(s)"
        + (f" (e.g. {unit}s {', '.join(map(str, dup[0][:5]))})" if dup else "")
        + f"; near-duplicate questions: {s['near_duplicate_questions']} pair(s)"
    )
    if s["problems"]:
        lines.append(f"problems: {s['problems']} (list them: longctx data validate {file})")
    lines.append(f"{'read from cache' if s['cached'] else 'measured'} in {s['seconds']:.2f} s")
    return "\n".join(lines)


def _show(args: argparse.Namespace) -> int:
    from core.data import io, render, view
    from core.models.tokenizers import load_tokenizer

    source = io.open_source(args.file)
    if not 0 <= args.index < len(source):
        raise LongCtxError(f"index {args.index} is out of range: {source.name} has {len(source)}")
    row = source.row(args.index)
    if row.problems:
        raise LongCtxError(f"{source.unit} {row.line}: " + "; ".join(row.problems))
    tokenizer = load_tokenizer(args.model)
    out = render.render_sample(tokenizer, row.record, args.max_length, args.overflow)
    marks = {view.LOSS: ("⟦", "⟧"), view.CUT: ("", ""), view.FOLDED: ("", ""), None: ("", "")}
    for text, tag in view.highlight(out, fold_chars=args.fold):
        opening, closing = marks[tag]
        sys.stdout.write(opening + text + closing)
    print()
    print("-" * 60)
    for t in out.per_turn():
        print(
            f"turn {t['turn']:>2} {t['role']:<9} {t['tokens']:>8,} tokens {t['loss_tokens']:>7,} loss"
        )
    state = " (dropped: over max_length)" if out.dropped else ""
    state = state or (f" (cut {out.cut[1] - out.cut[0]:,} tokens)" if out.cut else "")
    print(f"total {out.length:,} tokens, {out.loss_tokens:,} with loss{state}")
    return 0


def _mix(args: argparse.Namespace) -> int:
    from core.data import mix

    spec = mix.MixSpec(
        parts=[mix.MixPart.parse(p) for p in args.parts],
        output=args.output,
        total=args.total,
        seed=args.seed,
        shuffle=not args.no_shuffle,
    )
    report = mix.build_mix(spec)
    for line in report.skipped():
        print(f"skipped {line}", file=sys.stderr)
    for part in report.parts:
        print(f"{part.path}: {part.taken} of {part.valid} valid rows")
    print(f"wrote {report.rows} samples to {report.output}")
    if args.push:
        url = mix.push_to_hub(report.output, args.push, token=args.token, private=not args.public)
        print(f"pushed to {url}")
    return 0


def _split(args: argparse.Namespace) -> int:
    from core import workspace
    from core.data import mix

    try:
        count, ratio = mix.parse_amount(args.hold_out)
    except LongCtxError:
        raise LongCtxError(f"--hold-out takes 50, 0.05 or 5%, got {args.hold_out!r}") from None
    train, held = mix.split_names(args.file, workspace.subdir("datasets"))
    report = mix.hold_out(
        mix.HoldOut(
            args.file,
            train_output=args.train or str(train),
            eval_output=args.eval or str(held),
            count=count,
            ratio=ratio,
            seed=args.seed,
        )
    )
    for line in report.part.malformed:
        print(f"skipped {line}", file=sys.stderr)
    print(f"held out {report.eval_rows} chat samples: {report.eval}")
    print(f"left {report.train_rows} samples to train on: {report.train}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from core import workspace
    from core.data import convert

    out = args.out or str(convert.default_output(args.file, workspace.subdir("datasets")))
    report = convert.import_file(args.file, out, args.format)
    for problem in report.malformed:
        print(f"skipped {problem}", file=sys.stderr)
    kinds = ", ".join(f"{n} {fmt}" for fmt, n in sorted(report.formats.items()))
    print(f"imported {report.imported} of {report.rows} rows ({kinds}): {report.output}")
    if report.malformed:
        print(f"{len(report.malformed)} row(s) skipped (listed above)")
    return 0


def _push(args: argparse.Namespace) -> int:
    from core.data import mix

    url = mix.push_to_hub(args.file, args.repo, token=args.token, private=not args.public)
    print(f"pushed to {url}")
    return 0
