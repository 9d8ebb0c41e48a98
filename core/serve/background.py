"""Running the server: `BackgroundServer` (a daemon thread, for the app and tests) and `longctx serve`.

Knows nothing about the wire format; it serves the app that `core.serve.app.create_app` builds.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import threading
import time
import urllib.request
from typing import Any

from fastapi import FastAPI

from core import threads
from core.errors import LongCtxError
from core.models import EMBEDDED, LoadedModel, ModelSpec, add_spec_args, spec_from_args
from core.serve.app import _State, create_app

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Running it: in a background thread (app, tests) or as `longctx serve`.


class BackgroundServer:
    """Serve a model with uvicorn on a daemon thread; a context manager.

    Example:
        with BackgroundServer(loaded) as server:
            OpenAI(base_url=server.base_url, api_key="local").chat.completions.create(...)
    """

    def __init__(
        self,
        model: FastAPI | LoadedModel | ModelSpec | str = EMBEDDED,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 60.0,
        **app_options: Any,
    ):
        """
        Args:
            model: an app from `create_app`, or what `create_app` should serve.
            host: address to listen on.
            port: 0 picks a free port.
            startup_timeout_s: how long `start()` waits for /health to answer.
            **app_options: `max_queue`, `queue_timeout`, `served_name`, `fault_injection`
                for `create_app`.
        """
        self.model, self.host, self.port = model, host, port
        self.startup_timeout_s, self.app_options = startup_timeout_s, app_options
        self.app: FastAPI | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's root, e.g. `http://127.0.0.1:8000`."""
        # A wildcard address is not one a client can dial; loopback reaches it.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as `base_url`, e.g. `http://127.0.0.1:8000/v1`."""
        return self.url + "/v1"

    def start(self) -> BackgroundServer:
        """Bind, load the model if needed, and return once /health answers.

        The address is taken first: a busy port fails in a moment, not after a model load."""
        import uvicorn

        sock = _bind(self.host, self.port)
        try:
            self.app = (
                self.model
                if isinstance(self.model, FastAPI)
                else create_app(self.model, **self.app_options)
            )
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        # No log config and no level: uvicorn must not reconfigure the loggers of a process
        # that may already run another uvicorn (gradio) with its own logging.
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            daemon=True,
            name=f"longctx-serve-{self.port}",
        )
        self._thread.start()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                raise LongCtxError(f"the server on {self.url} stopped while starting; see the log")
            with contextlib.suppress(OSError):  # not listening yet
                with opener.open(self.url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.05)
        self.stop()
        raise LongCtxError(
            f"the server on {self.url} did not answer /health within {self.startup_timeout_s:g} s"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel running generations, shut uvicorn down and wait for its thread."""
        if self._server is None:
            return
        state = getattr(getattr(self.app, "state", None), "longctx", None)
        if isinstance(state, _State):
            state.cancel_all()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout_s)
        self._server, self._thread = None, None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LongCtxError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host"
        ) from None
    return sock


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
