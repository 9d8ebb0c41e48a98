"""A training set's rows by position: `Source`, the interface every format implements, `Row`,
and how a name is read (`file.jsonl[N]`, `hub:org/name`, the format from the suffix).

The formats themselves are in `io` (JSONL, JSON arrays, sampling) and `columnar` (Parquet,
`save_to_disk` folders, Hub datasets); both build on this module, which knows nothing of them.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data import schema
from core.errors import LongCtxError

_SPEC = re.compile(r"^(?P<path>.+?)\[(?P<n>\d+)\]$")
HUB_PREFIX = "hub:"
_FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".arrow", ".txt", ".gz")


@dataclass
class Row:
    """One row of a source, decoded and checked."""

    index: int
    """0-based position in the source (or the session)."""
    line: int
    """1-based line / item number in the file it came from (what users are told)."""
    raw: bytes | None
    """The row's original bytes without the line terminator (None for Parquet/Arrow rows)."""
    record: dict | None
    """The decoded object, or None when the row is not valid JSON / not an object."""
    problems: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return schema.kind(self.record, self.problems)


def parse_spec(spec: str) -> tuple[str, int | None]:
    """Split `path[N]` into (path, N); a plain path gives (path, None)."""
    match = _SPEC.match(spec.strip())
    if match:
        return match["path"], int(match["n"])
    return spec.strip(), None


def detect_format(path: str | os.PathLike) -> str:
    """`jsonl`, `json` (an array), `parquet`, `arrow` (save_to_disk folder) or `hub`."""
    text = str(path)
    if text.startswith(HUB_PREFIX):
        return "hub"
    p = Path(text).expanduser()
    if p.is_dir():
        if any((p / name).exists() for name in ("dataset_info.json", "dataset_dict.json")):
            return "arrow"
        raise LongCtxError(
            f"folder {text!r} is not a datasets.save_to_disk folder (no dataset_info.json); "
            "give a .jsonl, .json or .parquet file"
        )
    if not p.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and p.suffix.lower() not in _FILE_SUFFIXES:
            return "hub"
        raise LongCtxError(f"no such file: {text!r}")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    with open(p, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "json" if head.startswith(b"[") else "jsonl"


class Source:
    """Rows by position. Subclasses fill `_raw`/`_record`; `len()` grows while indexing."""

    format = "?"
    unit = "line"

    def __init__(self, name: str):
        self.name = name
        self._done = threading.Event()
        self._error: BaseException | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def complete(self) -> bool:
        """Whether every row is known (indexing finished)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until indexing finishes; re-raise its error. False on timeout."""
        finished = self._done.wait(timeout)
        if self._error is not None:
            raise LongCtxError(f"cannot read {self.name}: {self._error}") from self._error
        return finished

    def raw(self, i: int) -> bytes | None:
        """The row's original bytes without its terminator (None where there are none)."""
        return None

    def line(self, i: int) -> int:
        return i + 1

    def row(self, i: int) -> Row:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} is out of range (0..{len(self) - 1})")
        raw = self.raw(i)
        if raw is not None:
            record, problems = schema.parse(raw)
        else:
            record = self._record(i)
            problems = schema.check(record)
        return Row(index=i, line=self.line(i), raw=raw, record=record, problems=problems)

    def _record(self, i: int) -> dict | None:
        raise NotImplementedError

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[Row]:
        """Rows in order (waits for indexing when `stop` is None)."""
        if stop is None:
            self.wait()
            stop = len(self)
        for i in range(start, stop):
            yield self.row(i)

    def identity(self) -> dict[str, Any]:
        """What identifies the exact content read (for caches)."""
        return {"name": self.name, "format": self.format, "rows": len(self)}
