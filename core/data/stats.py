"""Per-sample token statistics of a whole training set, fast and cached on disk.

For each row: its kind, task, turns, problems, and under a given tokenizer + chat template the
tokens of the whole rendered sequence, of the context turn and of each answer (the loss tokens,
exactly as `render.render_sample` labels them). Counting uses `tokcount.TokenCounter` (exact,
several times faster than encoding), JSONL files are split over worker processes (fork, where the
platform has it), and results are cached under `LONGCTX_HOME/cache/data-stats/`, keyed by the
file (path, size, mtime, hash of its first and last 64 KiB), the tokenizer and the template. The
max length is not part of the key: counts do not depend on it; it only draws a line.

This module knows nothing about plots, tables or the UI (see `figures` and `table`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import statistics
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core import workspace
from core.data import evidence as evidence_mod
from core.data import io, render, schema
from core.data.io import Progress, Row, Source
from core.data.tokcount import TokenCounter
from core.errors import LongCtxError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_BATCH_BYTES = 4 << 20
_PARALLEL_MIN_BYTES = 16 << 20


@dataclass
class SampleStats:
    """One row of the table. Token fields are None for malformed rows."""

    index: int
    line: int
    id: str
    kind: str
    task: str
    turns: int
    total_tokens: int | None = None
    """The whole rendered sequence: `len(apply_chat_template(conv, tokenize=True))`."""
    context_tokens: int | None = None
    """Tokens of the first user turn (the long context and its question, template included)."""
    answer_tokens: int | None = None
    """Loss tokens of the assistant turns (0 for text samples, which train on every token)."""
    answer_lengths: list[int] = field(default_factory=list)
    """Loss tokens of each assistant turn."""
    questions: list[str] = field(default_factory=list)
    """Each question (the first one cut from its context), for search and near-duplicates."""
    context_hash: str = ""
    evidence: list[float | None] = field(default_factory=list)
    """Per QA pair, where the answer's evidence sits in the context (depth %), if computed."""
    problems: list[str] = field(default_factory=list)

    def over(self, max_length: int | None) -> bool:
        return bool(max_length and self.total_tokens and self.total_tokens > max_length)


@dataclass
class DatasetStats:
    """Statistics of one dataset under one tokenizer."""

    source: str
    unit: str
    tokenizer: str
    samples: list[SampleStats]
    seconds: float = 0.0
    cached: bool = False
    with_evidence: bool = False

    def problems(self) -> list[schema.Problem]:
        return [
            schema.Problem(s.line, reason, self.unit) for s in self.samples for reason in s.problems
        ]

    def summary(self, max_length: int | None = None) -> dict[str, Any]:
        """Counts and token figures for a summary panel or `--json`."""
        kinds = Counter(s.kind for s in self.samples)
        totals = [s.total_tokens for s in self.samples if s.total_tokens is not None]
        over = sum(1 for s in self.samples if s.over(max_length))
        answers = [n for s in self.samples for n in s.answer_lengths]
        return {
            "source": self.source,
            "tokenizer": self.tokenizer,
            "samples": len(self.samples),
            "chat": kinds.get(schema.CHAT, 0),
            "text": kinds.get(schema.TEXT, 0),
            "malformed": kinds.get(schema.BAD, 0),
            "problems": sum(len(s.problems) for s in self.samples),
            "tokens": _describe(totals),
            "answer_tokens": _describe(answers),
            "max_length": max_length,
            "over_max_length": over,
            "over_share": over / len(totals) if totals else 0.0,
            "tasks": dict(Counter(s.task for s in self.samples).most_common()),
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
        }


def _describe(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0, "sum": 0, "min": 0, "median": 0, "mean": 0, "max": 0}
    return {
        "count": len(values),
        "sum": sum(values),
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 1),
        "max": max(values),
    }


class Measurer:
    """Measures rows under one tokenizer and its chat template."""

    def __init__(self, tokenizer: Any, *, name: str = ""):
        self.tokenizer = tokenizer
        self.counter = TokenCounter(tokenizer)
        self.name = name or str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        template = getattr(tokenizer, "chat_template", None) or ""
        special = json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True)
        with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
        self._text_extra = len(with_specials) - len(
            tokenizer("a", add_special_tokens=False)["input_ids"]
        )
        digest = hashlib.blake2b(digest_size=16)
        for part in (self.counter.fingerprint, str(template), special, str(self._text_extra)):
            digest.update(part.encode() + b"\0")
        self.key = digest.hexdigest()

    def measure(self, row: Row, *, with_evidence: bool = False) -> SampleStats:
        """Statistics of one row (never raises for a bad row: its problems say what is wrong)."""
        record, problems = row.record, list(row.problems)
        conv = schema.turns(record) if isinstance(record, dict) else []
        out = SampleStats(
            index=row.index,
            line=row.line,
            id=schema.sample_id(record, row.index),
            kind=schema.kind(record, problems),
            task=schema.task(record),
            turns=len(conv) if conv else (1 if isinstance(record, dict) else 0),
            problems=problems,
        )
        if out.kind == schema.BAD:
            return out
        out.questions = [q[:300] for _, q, _ in schema.qa_pairs(record)]
        ctx = schema.context(record)
        out.context_hash = hashlib.blake2b(ctx.encode(), digest_size=8).hexdigest() if ctx else ""
        try:
            if out.kind == schema.TEXT:
                out.total_tokens = self.counter.count(record["text"]) + self._text_extra
                out.context_tokens, out.answer_tokens = out.total_tokens, 0
            else:
                self._measure_chat(conv, out)
        except LongCtxError as exc:  # e.g. the chat template refuses this conversation
            out.problems.append(str(exc))
            out.kind = schema.BAD
            return out
        except Exception as exc:  # one row the tokenizer chokes on must not sink a whole file
            log.warning("row %s cannot be tokenized: %r", row.line, exc)
            out.problems.append(
                f"cannot be tokenized: {str(exc).strip()[:200] or type(exc).__name__}"
            )
            out.kind, out.total_tokens = schema.BAD, None
            return out
        if with_evidence:
            out.evidence = [e.depth if e else None for e in evidence_mod.locate_all(record)]
        return out

    def _measure_chat(self, conv: list[dict], out: SampleStats) -> None:
        lay = render.layout(self.tokenizer, conv)
        tokens, losses = self.counter.count_by_spans(lay.text, lay.starts, lay.loss)
        out.total_tokens = sum(tokens)
        out.answer_tokens = sum(losses)
        out.answer_lengths = [losses[i] for i, t in enumerate(conv) if t.get("role") == "assistant"]
        first_user = next((i for i, t in enumerate(conv) if t.get("role") == "user"), 0)
        out.context_tokens = tokens[first_user]

    def measure_record(self, record: dict, index: int = 0, line: int = 0, **kw: Any) -> SampleStats:
        """Statistics of an in-memory record (an edited or new row)."""
        row = Row(index, line, None, record, schema.check(record))
        return self.measure(row, **kw)


_measurers: dict[tuple[int, str], tuple[Any, Measurer]] = {}


def measurer_for(tokenizer: Any, name: str = "") -> Measurer:
    """A `Measurer` for this tokenizer, reused while the tokenizer lives (its pre-token cache
    stays warm and its setup, a few tenths of a second, is paid once)."""
    key = (id(tokenizer), name)
    held = _measurers.get(key)
    if held is not None and held[0]() is tokenizer:
        return held[1]
    measurer = Measurer(tokenizer, name=name)
    try:
        _measurers[key] = (weakref.ref(tokenizer), measurer)
    except TypeError:  # not weak-referenceable: do not keep it alive either
        pass
    for stale in [k for k, (ref, _) in _measurers.items() if ref() is None]:
        del _measurers[stale]
    return measurer


# ---------------------------------------------------------------------------------------------
# Whole files.

_worker: tuple[Measurer, Source, bool] | None = None


def _init_worker(measurer: Measurer, source: Source, with_evidence: bool) -> None:
    global _worker
    # The parent may have used the tokenizers thread pool before forking; its threads are not
    # in the child, so the child must not try to use them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker = (measurer, source, with_evidence)


def _work(batch: tuple[int, int]) -> list[SampleStats]:
    assert _worker is not None
    measurer, source, with_evidence = _worker
    return [measurer.measure(r, with_evidence=with_evidence) for r in io.iter_raw(source, *batch)]


def _batches(source: Source, n: int) -> list[tuple[int, int]]:
    if not isinstance(source, io._FileSource):
        return [(0, n)]
    out, start, start_byte = [], 0, 0
    for i in range(n):
        if source.span(i)[1] - start_byte >= _BATCH_BYTES:
            out.append((start, i + 1))
            start = i + 1
            start_byte = source.span(i)[1]
    if start < n:
        out.append((start, n))
    return out


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _measure_all(
    source: Source,
    measurer: Measurer,
    with_evidence: bool,
    workers: int,
    progress: Progress | None,
) -> list[SampleStats]:
    n = len(source)
    batches = _batches(source, n)
    parallel = (
        workers > 1
        and len(batches) > 1
        and isinstance(source, io._FileSource)
        and source.size >= _PARALLEL_MIN_BYTES
        and "fork" in multiprocessing.get_all_start_methods()
    )
    results: list[SampleStats] = []
    done = 0
    if progress:
        progress(0, n)
    if not parallel:
        for row in io.iter_raw(source, 0, n):
            results.append(measurer.measure(row, with_evidence=with_evidence))
            done += 1
            if progress and (done % 64 == 0 or done == n):
                progress(done, n)
        return results
    # fork: the children inherit the tokenizer and counter (and its warm cache) without pickling
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(
        min(workers, len(batches)), _init_worker, (measurer, source, with_evidence)
    ) as pool:
        for part in pool.imap_unordered(_work, batches):
            results.extend(part)
            done += len(part)
            if progress:
                progress(done, n)
    results.sort(key=lambda s: s.index)
    return results


def measure(
    source: Source | str,
    tokenizer: Any,
    *,
    name: str = "",
    with_evidence: bool = False,
    workers: int | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
    measurer: Measurer | None = None,
) -> DatasetStats:
    """Token statistics of every row of a dataset.

    Args:
        source: an open `Source` or a path (`path[N]` works too).
        tokenizer: a fast transformers tokenizer with the chat template to render with.
        name: the model name shown in summaries (defaults to the tokenizer's).
        with_evidence: also locate each answer's evidence in its context (slower).
        workers: processes to split a large JSONL file over (default: the CPU count, at most 8).
        use_cache: read and write the on-disk cache.
        progress: called as `progress(done_rows, total_rows)`.
        measurer: the `Measurer` to use (default: `measurer_for(tokenizer, name)`).
    """
    if isinstance(source, str):
        source = io.open_source(source)
    source.wait()
    measurer = measurer or measurer_for(tokenizer, name)
    path = _cache_path(source, measurer) if use_cache else None
    if path is not None:
        cached = _load(path, source, measurer, with_evidence)
        if cached is not None:
            if progress:
                progress(len(cached.samples), len(cached.samples))
            return cached
    start = time.perf_counter()
    samples = _measure_all(source, measurer, with_evidence, workers or default_workers(), progress)
    result = DatasetStats(
        source=source.name,
        unit=source.unit,
        tokenizer=measurer.name,
        samples=samples,
        seconds=time.perf_counter() - start,
        with_evidence=with_evidence,
    )
    if path is not None:
        _store(path, result)
    return result


# ---------------------------------------------------------------------------------------------
# The on-disk cache.

_FIELDS = [f.name for f in fields(SampleStats)]


def _cache_path(source: Source, measurer: Measurer) -> Path:
    ident = json.dumps({"v": CACHE_VERSION, "src": source.identity(), "tok": measurer.key})
    key = hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()
    return workspace.subdir("cache") / "data-stats" / f"{key}.json"


def _load(
    path: Path, source: Source, measurer: Measurer, with_evidence: bool
) -> DatasetStats | None:
    start = time.perf_counter()
    try:
        data = json.loads(path.read_bytes())
        if data.get("version") != CACHE_VERSION or (with_evidence and not data["with_evidence"]):
            return None
        samples = [
            SampleStats(**dict(zip(_FIELDS, values, strict=True))) for values in data["samples"]
        ]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring a damaged stats cache %s: %s", path, exc)
        return None
    return DatasetStats(
        source=source.name,
        unit=source.unit,
        tokenizer=measurer.name,
        samples=samples,
        seconds=time.perf_counter() - start,
        cached=True,
        with_evidence=data["with_evidence"],
    )


def _store(path: Path, result: DatasetStats) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [[getattr(s, f) for f in _FIELDS] for s in result.samples]
    data = {"version": CACHE_VERSION, "with_evidence": result.with_evidence, "samples": rows}
    try:
        io.atomic_write(path, [json.dumps(data, ensure_ascii=False).encode()], backup=False)
    except OSError as exc:  # a full or read-only disk must not lose the statistics themselves
        log.warning("could not write the stats cache %s: %s", path, exc)


def scan(source: Source, indices: Iterable[int]) -> list[SampleStats]:
    """Token-free rows (kind, task, turns, problems) for a first page shown before `measure`."""
    out = []
    for i in indices:
        row = source.row(i)
        record = row.record
        conv = schema.turns(record) if isinstance(record, dict) else []
        out.append(
            SampleStats(
                index=i,
                line=row.line,
                id=schema.sample_id(record, i),
                kind=row.kind,
                task=schema.task(record),
                turns=len(conv) if conv else (1 if isinstance(record, dict) else 0),
                questions=[q[:300] for _, q, _ in schema.qa_pairs(record)] if record else [],
                problems=row.problems,
            )
        )
    return out


def as_dict(sample: SampleStats) -> dict[str, Any]:
    return asdict(sample)


def refresh(
    base: DatasetStats | None,
    session: Any,
    measurer: Measurer,
    *,
    with_evidence: bool = False,
) -> DatasetStats:
    """Statistics of an edit session: untouched rows reuse `base`, edited ones are measured.

    Args:
        base: statistics of the session's source (or None to measure everything).
        session: an `edit.EditSession`.
    """
    start = time.perf_counter()
    known = {s.index: s for s in base.samples} if base is not None else {}
    samples = []
    for i in range(len(session)):
        j = session.origin(i)
        if j is not None and j in known:
            samples.append(replace(known[j], index=i))
        else:
            samples.append(measurer.measure(session.row(i), with_evidence=with_evidence))
    return DatasetStats(
        source=session.source.name,
        unit=session.source.unit,
        tokenizer=measurer.name,
        samples=samples,
        seconds=time.perf_counter() - start,
        with_evidence=with_evidence and (base is None or base.with_evidence),
    )
