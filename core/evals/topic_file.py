"""LongChat's topic-retrieval test files: read them and check every row.

A file is JSON lines (or one JSON array) with a row per conversation. LongChat's own test cases
carry the whole prompt, the recorded conversation and the question after it, in `prompt`; the
copy the paper's code reads carries it as `context` plus `question`, which it joins with a space.
Both carry `topics`, the topics in the order the conversation went through them (the question
asks for the first), and may carry `num_topics` (else the number of topics) and `prompt_length`
(the length LongChat measured, with its own tokenizer). Other keys are ignored.

Every malformed row is reported at once, by line (or item) number, with the field at fault.

This module knows nothing about tokenizers, models or scoring.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.errors import ConfigError

_SHOWN_PROBLEMS = 10


@dataclass(frozen=True)
class TopicRow:
    """One test conversation, ready to send as one user turn."""

    row: int
    """Its line in the file (JSON lines) or its place in the array, from 1."""
    text: str
    """The user's turn: the prompt, or the context then the question."""
    topics: tuple[str, ...]
    num_topics: int
    prompt_length: int | None
    """The length the file gives (LongChat's tokenizer), if any."""

    @property
    def expected(self) -> str:
        """The topic the question asks for: the first."""
        return self.topics[0]


def read_topic_file(path: str | os.PathLike, question: str = "") -> list[TopicRow]:
    """The rows of a LongChat topic-retrieval file.

    Args:
        path: JSON lines, or a JSON array of rows.
        question: asked after a row's `context` when the row has no `question` of its own.

    Raises:
        ConfigError: the file is missing, empty, or has malformed rows (every one listed).
    """
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError as exc:
        raise ConfigError(f"topic file {str(path)!r} cannot be read: {exc.strerror}") from exc
    if not file.is_file():
        raise ConfigError(f"topic file {str(path)!r} is not a file")
    return list(_read(str(file.resolve()), stat.st_mtime_ns, stat.st_size, question))


@lru_cache(maxsize=4)  # the Evaluate tab rebuilds its config on every change of the form
def _read(path: str, _mtime: int, _size: int, question: str) -> tuple[TopicRow, ...]:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    problems: list[str] = []
    rows = []
    for number, item, where in _items(path, text, problems):
        row = _row(number, item, question, problems, where)
        if row is not None:
            rows.append(row)
    if problems:
        shown = problems[:_SHOWN_PROBLEMS]
        more = len(problems) - len(shown)
        raise ConfigError(
            [f"{path}: " + shown[0], *shown[1:], *([f"and {more} more"] if more else [])]
        )
    if not rows:
        raise ConfigError(f"{path} holds no rows")
    return tuple(rows)


def _items(path: str, text: str, problems: list[str]) -> Iterator[tuple[int, object, str]]:
    """(number, parsed row, "line" or "item") for each row, in the file's order; a line that is
    not JSON goes to `problems` in its place."""
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not a JSON array: {exc}") from exc
        for number, item in enumerate(items, 1):
            yield number, item, "item"
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), "line"
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")


def _row(
    number: int, item: object, question: str, problems: list[str], where: str
) -> TopicRow | None:
    """The row, or None with its problems added to `problems`."""
    at = f"{where} {number}"
    if not isinstance(item, dict):
        problems.append(f"{at}: a row must be a JSON object, got {type(item).__name__}")
        return None
    before = len(problems)
    prompt, context = item.get("prompt"), item.get("context")
    if isinstance(prompt, str) and prompt.strip():
        text = prompt
    elif isinstance(context, str) and context.strip():
        asked = item.get("question", question)
        if not isinstance(asked, str) or not asked.strip():
            problems.append(
                f"{at}: 'context' without a 'question' (give one in the row or ask one)"
            )
        text = " ".join([context, str(asked or "")])
    else:
        problems.append(
            f"{at}: no 'prompt' or 'context' holding the conversation (found keys: "
            f"{', '.join(sorted(map(str, item))) or 'none'})"
        )
        text = ""
    topics = item.get("topics")
    if (
        not isinstance(topics, list)
        or not topics
        or not all(isinstance(t, str) and t.strip() for t in topics)
    ):
        problems.append(
            f"{at}: 'topics' must be a non-empty list of topic names, got {topics!r}"[:300]
        )
        topics = []
    num = item.get("num_topics", len(topics) or 1)
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        problems.append(f"{at}: 'num_topics' must be a whole number >= 1, got {num!r}")
    length = item.get("prompt_length")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool)):
        problems.append(f"{at}: 'prompt_length' must be a whole number, got {length!r}")
    if len(problems) > before:
        return None
    return TopicRow(number, text, tuple(t.strip() for t in topics), num, length)
