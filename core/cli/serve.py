"""`longctx serve`: an OpenAI-compatible server over one local model, in the foreground
(`core.serve.background.BackgroundServer` does the same in a thread for the app and the tests).
"""

from __future__ import annotations

import argparse
import signal
import threading

from core import threads
from core.errors import LongCtxError
from core.models.loader import add_spec_args, spec_from_args
from core.models.names import EMBEDDED
from core.serve.background import BackgroundServer


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `longctx serve`."""
    p = subparsers.add_parser(
        "serve",
        help="serve a local model over an OpenAI-compatible HTTP API",
        description="Serve one model at /v1/chat/completions and /v1/models (OpenAI API). "
        "Prints the base URL once ready; stop with Ctrl-C.",
    )
    p.add_argument("--model", default=EMBEDDED, help="'embedded', a local folder or a Hub id")
    add_spec_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free one)")
    p.add_argument("--served-name", help="model id clients ask for (default: --model)")
    p.add_argument(
        "--max-queue", type=int, default=16, help="requests that may wait; more get HTTP 429"
    )
    p.add_argument(
        "--queue-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a request may wait for the model before it gets HTTP 503 with Retry-After "
        "(0: no limit)",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads for generation (default: the thread budget: all cores, or a share "
        f"while a training run uses this CPU; {threads.ENV} sets it for every process)",
    )
    p.add_argument(
        "--fault-injection",
        action="store_true",
        help="enable /_faults and /_stats (for testing OpenAI clients; never in production)",
    )
    p.add_argument(
        "--refuse-max-tokens",
        action="store_true",
        help="refuse max_tokens like OpenAI's newest models do (for testing clients)",
    )
    p.set_defaults(func=_run_serve)


def _threads(governor: threads.Governor | None) -> str:
    return f"; threads: {governor.tick().reason}" if governor is not None else ""


def _run_serve(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    setting = threads.parse_setting(args.threads, "--threads")
    governor = threads.governor("serve", setting) if threads.owns_process(args) else None
    server = BackgroundServer(
        spec,
        host=args.host,
        port=args.port,
        max_queue=args.max_queue,
        queue_timeout=args.queue_timeout or None,
        served_name=args.served_name,
        fault_injection=args.fault_injection,
        refuse_max_tokens=args.refuse_max_tokens,
        governor=governor,
    )
    server.start()
    stop = threading.Event()
    # uvicorn runs on a thread, where it cannot catch signals: the main thread turns Ctrl-C
    # and SIGTERM into a clean stop instead.
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        state = server.app.state.longctx
        print(
            f"longctx serve: {state.served_name} ({state.loaded.window} tokens{_threads(governor)}) "
            f"ready at {server.base_url}",
            flush=True,
        )
        while not stop.wait(0.5):
            if not server.running:
                raise LongCtxError("the server stopped unexpectedly; see the log above")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
