"""The sample table: filter, sort, search and page per-sample statistics.

Rows are `stats.SampleStats`; a `Query` (a plain dataclass, one field per control) selects and
orders them, and `page` returns one page as lists in `COLUMNS` order, ready for a dataframe
widget. Full-text search reads the rows themselves (questions, answers, contexts), skipping rows
whose raw bytes cannot contain the text without decoding them.

This module knows nothing about tokenizers or the UI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.data import io, schema
from core.data.io import Progress
from core.data.stats import SampleStats
from core.errors import ConfigError

COLUMNS = [
    "#",
    "line",
    "id",
    "kind",
    "task",
    "turns",
    "context tokens",
    "answer tokens",
    "total tokens",
    "problems",
]
SORT_KEYS = (
    "index",
    "id",
    "kind",
    "task",
    "turns",
    "context_tokens",
    "answer_tokens",
    "total_tokens",
    "problems",
)
SEARCH_FIELDS = ("question", "answer", "context")


@dataclass
class Query:
    """Which rows to show, in which order. Every field maps to one control of the Data tab."""

    task: str | None = None
    """Only this task (None: all)."""
    kind: str | None = None
    """Only `chat`, `text` or `bad` rows (None: all)."""
    min_tokens: int | None = None
    """Only rows with at least this many total tokens."""
    max_tokens: int | None = None
    """Only rows with at most this many total tokens."""
    has_problems: bool | None = None
    """True: only rows with problems; False: only rows without; None: both."""
    sort_by: str = "index"
    descending: bool = False
    page: int = 0
    """0-based page number (clamped to the last page)."""
    page_size: int = 50

    def __post_init__(self) -> None:
        problems = []
        if self.sort_by not in SORT_KEYS:
            problems.append(f"sort_by must be one of {SORT_KEYS}, got {self.sort_by!r}")
        if self.kind not in (None, schema.CHAT, schema.TEXT, schema.BAD):
            problems.append(f"kind must be chat, text or bad, got {self.kind!r}")
        if self.page_size < 1:
            problems.append(f"page_size must be at least 1, got {self.page_size}")
        if (
            self.min_tokens is not None
            and self.max_tokens is not None
            and self.min_tokens > self.max_tokens
        ):
            problems.append(
                f"min_tokens ({self.min_tokens}) is above max_tokens ({self.max_tokens})"
            )
        if problems:
            raise ConfigError(problems)


@dataclass
class Page:
    rows: list[list[Any]]
    """One list per sample, in COLUMNS order."""
    indices: list[int]
    """The sample index of each row (for opening it)."""
    total: int
    """Samples matching the query."""
    page: int
    pages: int


def _keep(s: SampleStats, q: Query, matches: set[int] | dict | None) -> bool:
    if matches is not None and s.index not in matches:
        return False
    if q.task is not None and s.task != q.task:
        return False
    if q.kind is not None and s.kind != q.kind:
        return False
    if q.has_problems is not None and bool(s.problems) != q.has_problems:
        return False
    tokens = s.total_tokens
    if q.min_tokens is not None and (tokens is None or tokens < q.min_tokens):
        return False
    return q.max_tokens is None or (tokens is not None and tokens <= q.max_tokens)


def _sort_key(name: str):
    if name == "problems":
        return lambda s: len(s.problems)
    if name in ("context_tokens", "answer_tokens", "total_tokens"):
        return lambda s: -1 if getattr(s, name) is None else getattr(s, name)
    return lambda s: getattr(s, name)


def select(
    samples: Sequence[SampleStats], query: Query, matches: set[int] | dict | None = None
) -> list[SampleStats]:
    """The samples that pass the query's filters (and `matches`, a search result), sorted."""
    kept = [s for s in samples if _keep(s, query, matches)]
    if query.sort_by != "index" or query.descending:
        kept.sort(key=_sort_key(query.sort_by), reverse=query.descending)
    return kept


def row(s: SampleStats) -> list[Any]:
    """One table row, in COLUMNS order."""
    return [
        s.index,
        s.line,
        s.id,
        s.kind,
        s.task,
        s.turns,
        s.context_tokens,
        s.answer_tokens,
        s.total_tokens,
        "; ".join(s.problems),
    ]


def page(
    samples: Sequence[SampleStats], query: Query, matches: set[int] | dict | None = None
) -> Page:
    """One page of the table."""
    kept = select(samples, query, matches)
    pages = max(1, math.ceil(len(kept) / query.page_size))
    number = min(max(0, query.page), pages - 1)
    chunk = kept[number * query.page_size : (number + 1) * query.page_size]
    return Page(
        rows=[row(s) for s in chunk],
        indices=[s.index for s in chunk],
        total=len(kept),
        page=number,
        pages=pages,
    )


def tasks(samples: Sequence[SampleStats]) -> list[str]:
    """The distinct tasks, for a filter dropdown."""
    return sorted({s.task for s in samples})


# ---------------------------------------------------------------------------------------------
# Full-text search.


def _fields(record: dict, wanted: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    if "question" in wanted or "answer" in wanted:
        for _, question, answer in schema.qa_pairs(record):
            if "question" in wanted:
                out.append(("question", question))
            if "answer" in wanted:
                out.append(("answer", answer))
    if "context" in wanted:
        out.append(("context", schema.context(record)))
    return out


def _snippet(name: str, text: str, pos: int, length: int, width: int = 60) -> str:
    start, end = max(0, pos - width), min(len(text), pos + length + width)
    body = text[start:end].replace("\n", " ")
    return f"{name}: {'…' if start else ''}{body}{'…' if end < len(text) else ''}"


def _raw_can_hold(needle: str) -> bool:
    """Whether a lower-cased needle must appear as-is in a row's raw JSON if a string holds it.

    True for printable ASCII without the characters JSON writers escape (quotes, backslash,
    slash, and the <>&' some escape for HTML).
    """
    return needle.isascii() and needle.isprintable() and not any(c in needle for c in "\"\\/<>&'")


def search(
    rows: Any,
    text: str,
    *,
    fields: Sequence[str] = SEARCH_FIELDS,
    limit: int | None = None,
    progress: Progress | None = None,
) -> dict[int, str]:
    """Rows whose questions, answers or contexts contain `text` (case-insensitive).

    Args:
        rows: a `Source` or an `edit.EditSession` (anything with `len()` and `row(i)`).
        text: what to look for.
        fields: any of `question`, `answer`, `context`.
        limit: stop after this many matches.
        progress: called as `progress(done, total)`.

    Returns:
        {row index: a snippet around the first match}.
    """
    bad = [f for f in fields if f not in SEARCH_FIELDS]
    if bad:
        raise ConfigError(f"search fields must be among {SEARCH_FIELDS}, got {bad}")
    needle = text.strip().lower()
    if not needle:
        return {}
    prefilter = _raw_can_hold(needle)
    found: dict[int, str] = {}
    n = len(rows)
    for i in range(n):
        if progress and i % 256 == 0:
            progress(i, n)
        raw = _untouched_raw(rows, i)
        if prefilter and raw is not None and needle.encode() not in raw.lower():
            continue
        record = rows.row(i).record
        if not isinstance(record, dict):
            continue
        for name, value in _fields(record, fields):
            pos = value.lower().find(needle)
            if pos >= 0:
                found[i] = _snippet(name, value, pos, len(needle))
                break
        if limit is not None and len(found) >= limit:
            break
    if progress:
        progress(n, n)
    return found


def _untouched_raw(rows: Any, i: int) -> bytes | None:
    """Row i's raw bytes when they are its current content (cheap to scan before decoding)."""
    source = getattr(rows, "source", None)
    if source is not None:  # an edit session: only untouched rows still are their bytes
        j = rows.origin(i)
        return None if j is None else source.raw(j)
    if isinstance(rows, io.Source):
        return rows.raw(i)
    return None
