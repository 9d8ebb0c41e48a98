"""An editable dataset: change turns, add or remove them, duplicate or delete samples, undo, save.

The session is a list of entries over an opened source: an untouched row is just its position
in the source, an edited one holds its new record. Saving writes untouched rows back as their
exact original bytes (malformed ones included: they are reported, never dropped or repaired),
edited rows as JSON, atomically, keeping the previous file as `NAME.bak`.

This module knows nothing about tokenizers or the UI; `stats.refresh` re-measures edited rows.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data import io, schema
from core.data.io import Row, SampledSource, Source
from core.errors import ConfigError, LongCtxError


@dataclass(frozen=True)
class Edited:
    """A row whose record was changed (or a new row: `origin` None)."""

    record: dict
    origin: int | None


Entry = int | Edited


class EditSession:
    """Rows of a source with edits on top, and an undo history."""

    def __init__(self, source: Source):
        source.wait()
        self.source = source
        self._rows: list[Entry] = list(range(len(source)))
        self._undo: list[tuple[str, tuple]] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def dirty(self) -> bool:
        """Whether there are changes not saved yet."""
        return bool(self._undo)

    @property
    def history(self) -> list[str]:
        """Descriptions of the changes that `undo` would revert, oldest first."""
        return [description for description, _ in self._undo]

    def origin(self, i: int) -> int | None:
        """The source row that row i still is byte for byte, or None if it was edited or added."""
        entry = self._rows[i]
        return entry if isinstance(entry, int) else None

    def row(self, i: int) -> Row:
        """Row i as it is now (its `line` is the source line it came from, 0 for new rows)."""
        entry = self._entry(i)
        if isinstance(entry, int):
            row = self.source.row(entry)
            return Row(i, row.line, row.raw, row.record, row.problems)
        line = self.source.line(entry.origin) if entry.origin is not None else 0
        record = copy.deepcopy(entry.record)
        return Row(i, line, None, record, schema.check(record))

    def record(self, i: int) -> dict | None:
        """A copy of row i's record (None when the row is not a JSON object)."""
        row = self.row(i)
        if row.raw is not None:  # decoded exactly, since an edit writes it back
            return schema.parse(row.raw, exact=True)[0]
        return row.record

    def problems(self) -> list[schema.Problem]:
        """Every problem of the current rows; untouched rows keep their source line numbers."""
        out = []
        for i in range(len(self)):
            row = self.row(i)
            if isinstance(self._rows[i], int):
                out += [schema.Problem(row.line, r, self.source.unit) for r in row.problems]
            else:
                out += [schema.Problem(i + 1, r, "edited row") for r in row.problems]
        return out

    # -----------------------------------------------------------------------------------------
    # Changes. Each records how to undo itself.

    def set_turn(
        self, i: int, turn: int, *, content: str | None = None, role: str | None = None
    ) -> None:
        """Change the content and/or role of turn `turn` (0-based) of sample i."""
        record = self._chat_record(i)
        conv = record["conversations"]
        if not 0 <= turn < len(conv):
            raise LongCtxError(f"sample {i} has no turn {turn + 1} (it has {len(conv)})")
        if not isinstance(conv[turn], dict):
            conv[turn] = {}
        if role is not None:
            conv[turn]["role"] = _check_role(role)
        if content is not None:
            conv[turn]["content"] = _check_content(content)
        self._replace(i, record, f"edit turn {turn + 1} of sample {i}")

    def add_turn(self, i: int, role: str, content: str, position: int | None = None) -> None:
        """Insert a turn at `position` (0-based; default: at the end) of sample i."""
        record = self._chat_record(i)
        conv = record["conversations"]
        position = len(conv) if position is None else position
        if not 0 <= position <= len(conv):
            raise LongCtxError(
                f"cannot insert a turn at {position + 1}: sample {i} has {len(conv)}"
            )
        conv.insert(position, {"role": _check_role(role), "content": _check_content(content)})
        self._replace(i, record, f"add turn {position + 1} to sample {i}")

    def remove_turn(self, i: int, turn: int) -> None:
        """Remove turn `turn` (0-based) of sample i."""
        record = self._chat_record(i)
        conv = record["conversations"]
        if not 0 <= turn < len(conv):
            raise LongCtxError(f"sample {i} has no turn {turn + 1} (it has {len(conv)})")
        del conv[turn]
        self._replace(i, record, f"remove turn {turn + 1} of sample {i}")

    def set_text(self, i: int, text: str) -> None:
        """Change the text of a text sample."""
        record = self.record(i)
        if not isinstance(record, dict) or "text" not in record:
            raise LongCtxError(f"sample {i} is not a text sample")
        record["text"] = _check_content(text)
        self._replace(i, record, f"edit text of sample {i}")

    def set_record(self, i: int, record: dict) -> None:
        """Replace sample i's whole record (metadata included)."""
        if not isinstance(record, dict):
            raise ConfigError("a sample must be a JSON object")
        self._replace(i, copy.deepcopy(record), f"replace sample {i}")

    def set_json(self, i: int, text: str) -> None:
        """Replace sample i with JSON typed by the user (how a malformed row gets fixed)."""
        value, error = schema.decode(text.encode("utf-8", "surrogatepass"))
        if error:
            raise LongCtxError(f"sample {i}: {error}; correct it and apply again")
        if not isinstance(value, dict):
            raise LongCtxError(f"sample {i}: a sample must be a JSON object")
        self._replace(i, value, f"replace sample {i}")

    def duplicate(self, i: int) -> int:
        """Insert a copy of sample i right after it; returns the copy's index."""
        self._entry(i)
        self._rows.insert(i + 1, self._rows[i])
        self._undo.append((f"duplicate sample {i}", ("insert", i + 1)))
        return i + 1

    def delete(self, i: int) -> None:
        """Remove sample i."""
        entry = self._entry(i)
        del self._rows[i]
        self._undo.append((f"delete sample {i}", ("delete", i, entry)))

    def delete_many(self, indices: Iterable[int]) -> int:
        """Remove several samples as one change (one `undo` brings them all back); returns how
        many were removed."""
        chosen = sorted(set(indices))
        for i in chosen:
            self._entry(i)
        if not chosen:
            return 0
        removed = [(i, self._rows[i]) for i in chosen]
        for i in reversed(chosen):
            del self._rows[i]
        self._undo.append((f"delete {len(chosen)} samples", ("restore", removed)))
        return len(chosen)

    def append(self, record: dict) -> int:
        """Add a new sample at the end; returns its index."""
        if not isinstance(record, dict):
            raise ConfigError("a sample must be a JSON object")
        self._rows.append(Edited(copy.deepcopy(record), None))
        self._undo.append(("add a sample", ("insert", len(self._rows) - 1)))
        return len(self._rows) - 1

    def undo(self) -> str | None:
        """Revert the last change; returns its description (None when there is nothing to undo)."""
        if not self._undo:
            return None
        description, op = self._undo.pop()
        if op[0] == "set":
            self._rows[op[1]] = op[2]
        elif op[0] == "insert":
            del self._rows[op[1]]
        elif op[0] == "restore":
            for i, entry in op[1]:  # ascending: each goes back where it was
                self._rows.insert(i, entry)
        else:
            self._rows.insert(op[1], op[2])
        return description

    def _entry(self, i: int) -> Entry:
        if not 0 <= i < len(self._rows):
            raise LongCtxError(f"no sample {i}: the dataset has {len(self._rows)}")
        return self._rows[i]

    def _chat_record(self, i: int) -> dict:
        record = self.record(i)
        if record is None:
            raise LongCtxError(
                f"sample {i} is not valid JSON; replace it with corrected JSON (set_json) first"
            )
        conv = record.get("conversations")
        if not isinstance(conv, list):
            raise LongCtxError(f"sample {i} has no 'conversations' list to edit")
        return record

    def _replace(self, i: int, record: dict, description: str) -> None:
        old = self._entry(i)
        origin = old if isinstance(old, int) else old.origin
        self._rows[i] = Edited(record, origin)
        self._undo.append((description, ("set", i, old)))

    # -----------------------------------------------------------------------------------------
    # Saving.

    def save(self, path: str | Path | None = None, *, backup: bool = True) -> io.SaveResult:
        """Write the rows as JSONL (to the source file by default), atomically, with a backup.

        Untouched rows are copied as their original bytes; edited and new rows are written as
        JSON. Afterwards the session continues on the saved file, with an empty history.

        Raises:
            LongCtxError: the source file changed on disk meanwhile, or it cannot be written
                back in place (a sample `path[N]`, or a non-JSONL source without a .jsonl path).
        """
        target = self._target(path)
        base = self.source.base if isinstance(self.source, SampledSource) else self.source
        if isinstance(base, io._FileSource):
            base.check_unchanged()
        existed, rows = target.exists(), len(self._rows)
        size = io.atomic_write(target, self._chunks(), backup=backup)
        bak = io.backup_path(target) if backup and existed else None
        result = io.SaveResult(path=target, backup=bak, rows=rows, bytes=size)
        self.source = io.open_source(str(target))
        self._rows = list(range(len(self.source)))
        self._undo.clear()
        return result

    def _target(self, path: str | Path | None) -> Path:
        src = self.source
        base = src.base if isinstance(src, SampledSource) else src
        if path is None:
            if isinstance(src, SampledSource):
                raise LongCtxError(
                    f"{src.name} is a sample of {base.name}; save it to a new file (writing it "
                    "back would drop the rows not sampled)"
                )
            if not isinstance(src, io.JsonlSource):
                raise LongCtxError(
                    f"{src.name} is {src.format}, not JSONL; save the edited dataset to a .jsonl "
                    "file"
                )
            return src.path
        target = Path(path).expanduser()
        if isinstance(src, SampledSource) and isinstance(base, io._FileSource):
            if target.resolve() == base.path.resolve():
                raise LongCtxError(
                    f"saving a sample over {base.name} would drop the rows not sampled; choose "
                    "another file"
                )
        return target

    def _chunks(self) -> Iterator[bytes]:
        src = self.source
        base = src.base if isinstance(src, SampledSource) else src
        n, eol = len(self._rows), b"\n"
        with _Reader(base) as reader:
            if isinstance(base, io.JsonlSource) and len(base):
                eol = b"\r\n" if reader.line(0, None).endswith(b"\r\n") else eol
            for k, entry in enumerate(self._rows):
                if isinstance(entry, Edited):  # with the line ending of the rows around it
                    yield io.dumps(entry.record) + eol
                    continue
                j = src.indices[entry] if isinstance(src, SampledSource) else entry
                data = reader.line(j, self.row(k) if reader.needs_record else None)
                if data.endswith(b"\n"):
                    eol = b"\r\n" if data.endswith(b"\r\n") else b"\n"
                    yield data
                else:  # a file's last line may lack its newline; it keeps that only if still last
                    yield data if k == n - 1 else data + eol


class _Reader:
    """Original bytes of source rows, through one open file handle."""

    def __init__(self, source: Source):
        self.source = source
        self.needs_record = not isinstance(source, io.JsonlSource)
        self._file: Any = None

    def __enter__(self) -> _Reader:
        if isinstance(self.source, io.JsonlSource):
            self._file = open(self.source.path, "rb")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.close()

    def line(self, j: int, row: Row | None) -> bytes:
        if self._file is not None:
            start, end = self.source.line_span(j)
            self._file.seek(start)
            return self._file.read(end - start)
        # JSON arrays, Parquet, Arrow: valid rows become JSON lines; a malformed JSON array item
        # is kept as its bytes when they fit on one line, and refused otherwise.
        assert row is not None
        if row.record is not None:
            return io.dumps(row.record)
        if row.raw is not None and b"\n" not in row.raw and b"\r" not in row.raw:
            return row.raw
        raise LongCtxError(
            f"{self.source.unit} {row.line} is malformed and spans several lines, so it cannot "
            "become one JSONL line unchanged; fix it (set_json) or delete it, then save"
        )


def _check_role(role: str) -> str:
    if role not in schema.ROLES:
        raise ConfigError(f"role must be one of {schema.ROLES}, got {role!r}")
    return role


def _check_content(content: Any) -> str:
    if not isinstance(content, str):
        raise ConfigError(f"content must be text, got {type(content).__name__}")
    return content


def to_json(record: Any) -> str:
    """A record as indented JSON, for a JSON editor."""
    return json.dumps(record, ensure_ascii=False, indent=2)
