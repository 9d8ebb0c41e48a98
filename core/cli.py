"""The `longctx` command line: one sub-command per feature, each registered by its module.

Every long-running thing the app does can be done from here with the same validation and the
same words (`longctx train CONFIG.yaml` is the only way training starts, even from the UI).
User errors (`LongCtxError`) print as one line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from core import space, threads
from core.errors import LongCtxError

# Each module exposes `register(subparsers)` adding its sub-command(s) with `func` set.
COMMAND_MODULES = [
    "core.serve",
    "core.evals.cli",
    "core.train.cli",
    "core.data.cli",
    "core.synth.cli",
    "core.rope_cli",
]


def add_app_args(p: argparse.ArgumentParser) -> None:
    """The app's flags, shared by `longctx app` and `python app.py`."""
    p.add_argument("--model", default="embedded", help="model the Chat tab starts with")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 on a Space)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--allow", action="append", default=[], help="extra folder the app may read")
    p.add_argument("--auth", help="user:password; required for a non-local address")
    p.add_argument("--share", action="store_true", help="gradio share link (needs --auth)")
    p.add_argument("--public", action="store_true",
                   help="serve strangers without a login: they may chat, browse data and run small "
                        "evaluations; training, paid generation and saving stay refused")  # fmt: skip


def run_app(args: argparse.Namespace) -> int:
    # The UI package is imported lazily and by name so that core/ never imports gradio itself:
    # `longctx app` is only a convenience for `python app.py`.
    space.keep_downloads_persistent()
    space.load_zero_gpu()
    shell = importlib.import_module("ui.shell")
    if args.public:
        os.environ["LONGCTX_PUBLIC"] = "1"  # read by core.space, here and in child processes
    host = args.host or ("0.0.0.0" if space.space_id() else "127.0.0.1")
    # The app chats and evaluates in this process: a training run started from it leaves it
    # a share of the cores, and it keeps to that share (see core/threads.py).
    if threads.owns_process(args):
        threads.governor("app")
    shell.launch(args.model, host, args.port, args.allow, args.auth, args.share)
    return 0


def _register_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the Gradio app (same as `python app.py`)")
    add_app_args(p)
    p.set_defaults(func=run_app)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longctx",
        description="LongCtx Studio: extend the context window of causal LMs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _register_app(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The command line of this process, for a command that restarts itself (`train` swapping
    # its allocator); None when called in-process, where restarting would replace the caller.
    args.process_argv = sys.argv[1:] if argv is None else None
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
