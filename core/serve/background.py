"""Running the server: `BackgroundServer` (a daemon thread, for the app and tests) and `longctx serve`.

Knows nothing about the wire format; it serves the app that `core.serve.app.create_app` builds.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import urllib.request
from typing import Any

from fastapi import FastAPI

from core.errors import LongCtxError
from core.models.loader import LoadedModel, ModelSpec
from core.models.names import EMBEDDED
from core.serve.app import create_app
from core.serve.turns import ServerState

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

    def stop(self, timeout_s: float = 5.0, generation_timeout_s: float = 120.0) -> None:
        """Cancel running generations, shut uvicorn down and wait for its thread, then for the
        generation threads: a process that exits while one is inside a forward pass is aborted
        by the C++ runtime ("terminate called without an active exception")."""
        if self._server is None:
            return
        state = getattr(getattr(self.app, "state", None), "longctx", None)
        if isinstance(state, ServerState):
            state.cancel_all()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout_s)
        if isinstance(state, ServerState):
            state.wait_idle(generation_timeout_s)  # a long prompt's prefill ends, then it stops
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
