"""The `longctx` command line: one sub-command per feature, each registered by its module.

Every long-running thing the app does can be done from here with the same validation and the
same words (`longctx train CONFIG.yaml` is the only way training starts, even from the UI).
User errors (`LongCtxError`) print as one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from core import threads
from core.cli import (
    data,
    evals,
    experiment,
    harness,
    methods,
    rope,
    scorecard,
    serve,
    synth,
    train,
)
from core.errors import LongCtxError
from core.hosting import space


def add_app_args(p: argparse.ArgumentParser) -> None:
    """The app's flags, shared by `longctx app` and `python app.py`."""
    p.add_argument("--model", default="embedded", help="model the Chat tab starts with")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 on a Space)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--allow", action="append", default=[], help="extra folder the app may read")
    p.add_argument("--auth", help="user:password; required for a non-local address")
    p.add_argument("--share", action="store_true", help="gradio share link (needs --auth)")
    p.add_argument(
        "--public",
        action="store_true",
        help="serve strangers without a login: they may chat, browse data and run small "
        "evaluations; training, paid generation and saving stay refused",
    )


AppLauncher = Callable[[str, str, int, list[str], str | None, bool], None]
"""(model, host, port, allowed folders, auth, share) -> serve the app until stopped."""


def run_app(args: argparse.Namespace, launch: AppLauncher) -> int:
    """`longctx app` / `python app.py`: Space set-up, then `launch` (the UI's, handed in by the
    caller so that core never imports the UI)."""
    space.keep_downloads_persistent()
    space.load_zero_gpu()
    if args.public:
        os.environ["LONGCTX_PUBLIC"] = "1"  # read by core.hosting.space, here and in children
    host = args.host or ("0.0.0.0" if space.space_id() else "127.0.0.1")
    # The app chats and evaluates in this process: a training run started from it leaves it
    # a share of the cores, and it keeps to that share (see core/threads.py).
    if threads.owns_process(args):
        threads.governor("app")
    launch(args.model, host, args.port, args.allow, args.auth, args.share)
    return 0


def _register_app(sub: argparse._SubParsersAction, launch: AppLauncher) -> None:
    p = sub.add_parser("app", help="start the Gradio app (same as `python app.py`)")
    add_app_args(p)
    p.set_defaults(func=lambda args: run_app(args, launch))


def build_parser(launch_app: AppLauncher | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command; `app` only when the caller hands in the UI's launcher."""
    parser = argparse.ArgumentParser(
        prog="longctx",
        description="LongCtx Studio: extend the context window of causal LMs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if launch_app is not None:
        _register_app(sub, launch_app)
    # Each command group's module adds its sub-command(s) with `func` set.
    for group in (serve, evals, harness, scorecard, methods, train, data, synth, rope, experiment):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None, launch_app: AppLauncher | None = None) -> int:
    """Run one command; `launch_app` adds `longctx app` (see `ui.cli`)."""
    parser = build_parser(launch_app)
    args = parser.parse_args(argv)
    # The command line of this process, for a command that restarts itself (`train` swapping
    # its allocator); None when called in-process, where restarting would replace the caller.
    args.process_argv = sys.argv[1:] if argv is None else None
    args.parser = parser  # for a command that checks others' command lines (`experiment`)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except LongCtxError as exc:
        print(f"longctx {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
