"""The on-disk reply cache: every answer the generator gave, kept so it is never paid for twice.

A request's key is the SHA-256 of its model, messages and sampling parameters (canonical JSON);
its reply is one small JSON file `LONGCTX_HOME/cache/synth/<key[:2]>/<key>.json`, written
atomically the moment it arrives. A rerun, or a run resumed after a crash or a stop, finds the
replies it already has and sends only the missing requests. Files hold the reply text, its
token usage and the request's parameters, never the messages' text and never an API key.

This module knows nothing about HTTP or what the replies mean.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from core import workspace
from core.data import io

log = logging.getLogger(__name__)


def request_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """The cache key of one chat request: same model, messages and parameters, same key."""
    canonical = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def default_folder() -> Path:
    return workspace.subdir("cache") / "synth"


class ReplyCache:
    """Replies by request key, one file each. Safe to share between threads and processes."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder else default_folder()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored reply, or None (also for a damaged file, which is then ignored)."""
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring damaged cache file %s: %s", path, exc)
            return None
        if not isinstance(record, dict) or not isinstance(record.get("content"), str):
            log.warning("ignoring cache file %s: no reply text in it", path)
            return None
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store a reply atomically (a reader never sees half a file)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"key": key, **record}, ensure_ascii=False).encode("utf-8")
        io.atomic_write(path, [data], backup=False)

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.json")) if self.folder.is_dir() else 0
