"""Open training sets lazily, one row at a time, and save them atomically.

Formats: JSONL (one object per line, whatever the extension: the paper's `*.json` files are
JSONL), a JSON array, and through `columnar` Parquet, a `datasets.save_to_disk` folder and Hub
datasets (`hub:org/name` or `org/name`, with network). A JSONL file (or JSON array) is never
loaded whole: a background
thread records where each row starts, rows are read on demand by seeking, and the first page can
be shown while the rest is still being indexed. `path[N]` takes N random rows (seeded), as in
the paper's data arguments.

Saving writes beside the target, fsyncs, keeps the previous file as `NAME.bak` and renames into
place, so a crash or a failing write leaves the old file untouched.

This module knows where a row's bytes are, not what they mean: decoding and validation are
delegated to `schema`; it knows nothing about tokenizers or the UI.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import random
import re
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data import schema
from core.data.rows import Row, Source, detect_format, parse_spec
from core.errors import LongCtxError

Progress = Callable[[int, int], None]
"""A progress callback: `progress(done, total)`."""

_CHUNK = 8 << 20

# ---------------------------------------------------------------------------------------------
# Byte-indexed text files: JSONL and JSON arrays.


class _FileSource(Source):
    """A file whose rows are byte spans, indexed by a background thread."""

    def __init__(self, path: Path, *, background: bool = True):
        super().__init__(str(path))
        self.path = path
        st = path.stat()
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
        self.indexed_bytes = 0
        if background:
            threading.Thread(target=self._run_index, name=f"index {path.name}", daemon=True).start()
        else:
            self._run_index()
            self.wait()

    def _run_index(self) -> None:
        try:
            self._index()
        except BaseException as exc:  # reported to whoever waits; the thread itself must not die
            self._error = exc
        finally:
            self._done.set()

    def _index(self) -> None:
        raise NotImplementedError

    def span(self, i: int) -> tuple[int, int]:
        """Byte range of row i's content (without terminator)."""
        raise NotImplementedError

    def check_unchanged(self) -> None:
        st = self.path.stat()
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            raise LongCtxError(
                f"{self.path} changed on disk since it was opened; open it again before "
                "reading or saving"
            )

    def read_bytes(self, start: int, end: int) -> bytes:
        self.check_unchanged()
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def raw(self, i: int) -> bytes:
        start, end = self.span(i)
        return self.read_bytes(start, end)

    def raws(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """(index, raw) for rows start..stop-1, reading the file in large sequential blocks."""
        i = start
        while i < stop:
            block_start = self.span(i)[0]
            j = i + 1  # one row per block at least, however long
            while j < stop and self.span(j)[1] - block_start <= _CHUNK:
                j += 1
            data = self.read_bytes(block_start, self.span(j - 1)[1])
            for k in range(i, j):
                a, b = self.span(k)
                yield k, data[a - block_start : b - block_start]
            i = j

    def identity(self) -> dict[str, Any]:
        with open(self.path, "rb") as f:
            head = f.read(65536)
            f.seek(max(0, self.size - 65536))
            tail = f.read(65536)
        digest = hashlib.blake2b(head + b"|" + tail, digest_size=16).hexdigest()
        return {
            "path": str(self.path.resolve()),
            "format": self.format,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "ends": digest,
        }


class JsonlSource(_FileSource):
    """One JSON object per line. Every line is a row (blank ones too, reported as problems)."""

    format = "jsonl"
    unit = "line"

    def __init__(self, path: Path, *, background: bool = True):
        self._starts = array("q")
        super().__init__(path, background=background)

    def _index(self) -> None:
        starts, size = self._starts, self.size
        if size:
            starts.append(0)
        with open(self.path, "rb") as f:
            base = 0
            while chunk := f.read(_CHUNK):
                pos = chunk.find(b"\n")
                while pos != -1:
                    if base + pos + 1 < size:
                        starts.append(base + pos + 1)
                    pos = chunk.find(b"\n", pos + 1)
                base += len(chunk)
                self.indexed_bytes = base

    def __len__(self) -> int:
        n = len(self._starts)
        return n if self.complete else max(n - 1, 0)

    def _end(self, i: int) -> int:
        """Where row i ends, terminator included."""
        return self._starts[i + 1] if i + 1 < len(self._starts) else self.size

    def span(self, i: int) -> tuple[int, int]:
        return self._starts[i], self._end(i)

    def line_span(self, i: int) -> tuple[int, int]:
        """Byte range of row i with its line terminator."""
        return self._starts[i], self._end(i)

    def raw_line(self, i: int) -> bytes:
        """Row i's exact bytes, line terminator included (what an untouched row is saved as)."""
        return self.read_bytes(self._starts[i], self._end(i))

    def raw(self, i: int) -> bytes:
        return _strip_eol(self.raw_line(i))

    def raws(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        for i, data in super().raws(start, stop):
            yield i, _strip_eol(data)


def _strip_eol(data: bytes) -> bytes:
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    return data


_STRUCT = re.compile(rb'["\[\]{},]')
_NON_SPACE = re.compile(rb"[^ \t\r\n]")


class JsonArraySource(_FileSource):
    """A JSON array of objects; each element's byte span is found by a light structural scan."""

    format = "json"
    unit = "item"

    def __init__(self, path: Path, *, background: bool = True):
        self._spans: list[tuple[int, int]] = []
        super().__init__(path, background=background)

    def __len__(self) -> int:
        return len(self._spans)

    def span(self, i: int) -> tuple[int, int]:
        return self._spans[i]

    def _index(self) -> None:
        if not self.size:
            raise ValueError("the file is empty")
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for span in _scan_array(mm):
                self._spans.append(span)
                self.indexed_bytes = span[1]


def _scan_array(mm: Any) -> Iterator[tuple[int, int]]:
    """Yield the byte span of each top-level element of a JSON array, without decoding it."""
    pos = 3 if mm[:3] == b"\xef\xbb\xbf" else 0
    while pos < len(mm) and mm[pos] in b" \t\r\n":
        pos += 1
    if mm[pos : pos + 1] != b"[":
        raise ValueError("not a JSON array (it does not start with '[')")
    depth, start, pos = 1, pos + 1, pos + 1
    while True:
        m = _STRUCT.search(mm, pos)
        if m is None:
            raise ValueError("the JSON array is not closed (truncated file?)")
        ch, pos = m.group(), m.end()
        if ch == b'"':
            pos = _string_end(mm, pos)
        elif ch in (b"[", b"{"):
            depth += 1
        elif ch in (b"]", b"}"):
            depth -= 1
            if depth == 0:
                if mm[start : m.start()].strip():
                    yield _trim(mm, start, m.start())
                if _NON_SPACE.search(mm, m.end()):
                    raise ValueError(
                        "there is more after the array's closing ']' (if this is JSONL, one "
                        "object per line, name the file .jsonl)"
                    )
                return
        elif depth == 1:  # a comma between elements
            yield _trim(mm, start, m.start())
            start = pos


def _string_end(mm: Any, pos: int) -> int:
    """Position just after the closing quote of a string whose body starts at `pos`."""
    while True:
        q = mm.find(b'"', pos)
        if q == -1:
            raise ValueError("a string in the JSON array is not closed (truncated file?)")
        k = q
        while k > pos and mm[k - 1] == 0x5C:  # count the backslashes before the quote
            k -= 1
        if (q - k) % 2 == 0:
            return q + 1
        pos = q + 1


def _trim(mm: Any, start: int, end: int) -> tuple[int, int]:
    while start < end and mm[start] in b" \t\r\n":
        start += 1
    while end > start and mm[end - 1] in b" \t\r\n":
        end -= 1
    return start, end


# ---------------------------------------------------------------------------------------------
# Sampling and opening.


class SampledSource(Source):
    """N rows of another source chosen at random (seeded), kept in file order."""

    def __init__(self, base: Source, n: int, seed: int):
        super().__init__(f"{base.name}[{n}]")
        base.wait()
        self.base, self.format, self.unit = base, base.format, base.unit
        rng = random.Random(seed)
        self.indices = sorted(rng.sample(range(len(base)), min(n, len(base))))
        self._done.set()

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, i: int) -> bytes | None:
        return self.base.raw(self.indices[i])

    def line(self, i: int) -> int:
        return self.base.line(self.indices[i])

    def _record(self, i: int) -> dict | None:
        return self.base._record(self.indices[i])

    def identity(self) -> dict[str, Any]:
        chosen = hashlib.blake2b(array("q", self.indices).tobytes(), digest_size=16).hexdigest()
        return {"base": self.base.identity(), "sample": self.name, "indices": chosen}


def open_source(spec: str | os.PathLike, *, seed: int = 42, wait: bool = True) -> Source:
    """Open a dataset by path (or `path[N]`, or `hub:org/name[:split]`).

    Args:
        spec: the file, folder or Hub name, optionally followed by `[N]` to take N random rows.
        seed: the seed of the `[N]` sampling.
        wait: index the whole file before returning; with False, `len()` grows as a background
            thread indexes and the first rows are readable at once.

    Raises:
        LongCtxError: the path does not exist, is not a dataset, or (Hub) cannot be reached.
    """
    path_text, n = parse_spec(str(spec))
    fmt = detect_format(path_text)
    path = Path(path_text).expanduser()
    source: Source
    if fmt == "jsonl":
        source = JsonlSource(path, background=True)
    elif fmt == "json":
        source = JsonArraySource(path, background=True)
    else:  # column stores need pyarrow / datasets, imported only for them
        from core.data import columnar

        source = columnar.open_columnar(path_text, fmt)
    if n is not None:
        return SampledSource(source, n, seed)
    if wait:
        source.wait()
    return source


def iter_raw(source: Source, start: int = 0, stop: int | None = None) -> Iterator[Row]:
    """Rows in order, reading files in large blocks (faster than `source.row` for whole files)."""
    if stop is None:
        source.wait()
        stop = len(source)
    if isinstance(source, _FileSource):
        for i, raw in source.raws(start, stop):
            record, problems = schema.parse(raw)
            yield Row(i, source.line(i), raw, record, problems)
    else:
        yield from source.rows(start, stop)


@dataclass
class Validation:
    """Every problem of a dataset, and how many rows of each kind it has."""

    rows: int
    kinds: dict[str, int]
    problems: list[schema.Problem]

    @property
    def bad_rows(self) -> int:
        return self.kinds.get(schema.BAD, 0)


def validate(source: Source, *, progress: Progress | None = None) -> Validation:
    """Check every row (no tokenizer needed); problems carry their line numbers."""
    source.wait()
    n, kinds, problems = len(source), {schema.CHAT: 0, schema.TEXT: 0, schema.BAD: 0}, []
    for row in iter_raw(source):
        kinds[row.kind] += 1
        problems += [schema.Problem(row.line, reason, source.unit) for reason in row.problems]
        if progress and (row.index % 1024 == 0 or row.index == n - 1):
            progress(row.index + 1, n)
    return Validation(rows=n, kinds=kinds, problems=problems)


def dumps(record: dict) -> bytes:
    """How an edited or new row is written: compact-ish JSON, non-ASCII kept, key order kept."""
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Atomic save.


@dataclass
class SaveResult:
    path: Path
    backup: Path | None
    rows: int
    bytes: int


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def atomic_write(path: str | os.PathLike, chunks: Iterable[bytes], *, backup: bool = True) -> int:
    """Write `chunks` to a temporary file beside `path`, then rename it into place.

    The previous file (if any) is kept as `NAME.bak` (replacing an older backup). If anything
    fails before the rename, the temporary file is removed and `path` is left as it was.
    Returns the number of bytes written.
    """
    path = Path(path)
    _remove_orphans(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    written = 0
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                written += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        if backup and path.exists():
            _make_backup(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return written


def _remove_orphans(path: Path) -> None:
    """Delete temporary files a killed writer of `path` left behind (its process is gone)."""
    import psutil

    for tmp in path.parent.glob(f".{path.name}.tmp-*-*"):
        pid = tmp.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            tmp.unlink(missing_ok=True)


def _make_backup(path: Path) -> None:
    """Keep the current file as NAME.bak: a hard link when possible (instant), else a copy."""
    import shutil

    bak = backup_path(path)
    bak.unlink(missing_ok=True)
    try:
        os.link(path, bak)
    except OSError:
        shutil.copy2(path, bak)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself already happened
    finally:
        os.close(fd)


def append_jsonl(path: str | os.PathLike, record: dict) -> int:
    """Add one row at the end of a JSONL file (created if missing); returns its line number.

    A file whose last line lacks its newline gets one first, so the new row starts its own line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        f.seek(0)
        data = f.read()
        lines = data.count(b"\n")
        if data and not data.endswith(b"\n"):
            f.write(b"\n")
            lines += 1
        f.write(dumps(record) + b"\n")
    return lines + 1


def write_jsonl(
    path: str | os.PathLike,
    rows: Iterable[bytes | dict],
    *,
    backup: bool = True,
) -> SaveResult:
    """Write rows (raw bytes kept as they are, dicts serialised) as JSONL, atomically."""
    count = 0

    def chunks() -> Iterator[bytes]:
        nonlocal count
        for row in rows:
            count += 1
            data = row if isinstance(row, bytes) else dumps(row)
            yield data if data.endswith(b"\n") else data + b"\n"

    path = Path(path)
    existed = path.exists()
    size = atomic_write(path, chunks(), backup=backup)
    bak = backup_path(path) if backup and existed else None
    return SaveResult(path=path, backup=bak, rows=count, bytes=size)
