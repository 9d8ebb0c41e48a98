"""The embedded model behind an OpenAI-compatible server on 127.0.0.1, one per app process: the
Generate tab's default generator. Started on first use, stopped when the process exits.
"""

from __future__ import annotations

import atexit
import threading

from core.models import names
from core.serve.background import BackgroundServer

_server: BackgroundServer | None = None
_server_lock = threading.Lock()


def embedded_server() -> BackgroundServer:
    """The one server of the embedded model, started on first call (it loads the model)."""
    global _server
    with _server_lock:
        if _server is None or not _server.running:
            _server = BackgroundServer(names.EMBEDDED).start()
            atexit.register(_server.stop)
        return _server


def embedded_url() -> str | None:
    """The server's base URL once started, else None (a dry run does not start it)."""
    return _server.base_url if _server is not None and _server.running else None
