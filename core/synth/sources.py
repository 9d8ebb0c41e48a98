"""Documents in, long contexts out: reading a corpus, sizing contexts in tokens, chunking, clustering.

A source is `builtin` (the standard-library corpus of `core.text.corpus`, built on the machine) or a
folder (or single file) of documents (text, Markdown, PDF, EPUB, HTML: `core.text.documents`) and `.jsonl` files with one document per line
(`{"text": ..., "title": ...}`). A context is what one training sample is built on, sized to a
token range: one document (a longer one is cut, on paragraph boundaries, into several contexts;
a shorter one is skipped), or for heterogeneous questions several similar documents concatenated
(similarity: TF-IDF vectors grouped by k-means, scikit-learn). Chunks are cut on paragraph
boundaries too (sentences, then words, only for a paragraph longer than a chunk).

Everything is deterministic for a given corpus, tokenizer and seed, so a rerun builds the same
requests and the reply cache recognises them. This module knows nothing about HTTP or prompts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core import workspace
from core.errors import LongCtxError
from core.text import corpus, documents
from core.text.corpus import Document

log = logging.getLogger(__name__)

BUILTIN = "builtin"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_TEXT_KEYS = ("text", "content", "body")
_TITLE_KEYS = ("title", "name", "id")

Counter = Callable[[str], int]
"""Counts the tokens of a string (no special tokens)."""


# ---------------------------------------------------------------------------------------------
# Reading documents.


def load_documents(
    source: str,
    unreadable: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Document]:
    """The documents of `builtin`, a folder, or one document or `.jsonl` file.

    A folder or file must lie under a root the app may read (see `core.workspace`). Files of a
    folder that cannot be read are left out, their reasons appended to `unreadable`;
    `progress(done, total)` follows a folder's files.

    Raises:
        LongCtxError: nothing readable there.
    """
    if str(source).strip() == BUILTIN:
        return corpus.builtin_documents()
    path = workspace.resolve_inside(source)
    if path.is_file():
        if path.suffix.lower() in JSONL_SUFFIXES:
            docs = _jsonl_documents(path, path.parent)
        elif path.suffix.lower() in documents.SUFFIXES:
            docs = corpus.load_folder(path)  # a single document reads as itself
        else:
            raise LongCtxError(f"{source!r} is not a document ({documents.kinds()}) or .jsonl")
    elif path.is_dir():
        docs = []
        if any(p.suffix.lower() in documents.SUFFIXES for p in path.rglob("*") if p.is_file()):
            docs += corpus.load_folder(path, unreadable=unreadable, progress=progress)
        for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in JSONL_SUFFIXES):
            docs += _jsonl_documents(file, path)
    else:
        raise LongCtxError(f"source {source!r} does not exist; give a folder, a file or 'builtin'")
    if not docs:
        raise LongCtxError(
            f"source {source!r} holds no documents with text ({documents.kinds()}, .jsonl)"
        )
    return docs


def _jsonl_documents(file: Path, root: Path) -> list[Document]:
    docs, rel = [], str(file.relative_to(root)) if file != root else file.name
    with open(file, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise LongCtxError(f"{file}: line {n} is not JSON ({exc})") from None
            if isinstance(row, str):
                row = {"text": row}
            text = next((row[k] for k in _TEXT_KEYS if isinstance(row.get(k), str)), "")
            if not text.strip():
                log.info(
                    "%s: line %d has no text field (%s); skipped", file, n, "/".join(_TEXT_KEYS)
                )
                continue
            title = next((str(row[k]) for k in _TITLE_KEYS if row.get(k)), f"{rel}:{n}")
            docs.append(Document(title, text.strip(), f"{file}:{n}"))
    return docs


# ---------------------------------------------------------------------------------------------
# Paragraphs and chunks.


@dataclass
class Piece:
    """A run of paragraphs of one document, with its token count."""

    paragraphs: list[str]
    tokens: int

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _PARAGRAPH.split(text) if p.strip()]


def _split_long(paragraph: str, limit: int, count: Counter) -> list[str]:
    """A paragraph over `limit` tokens as sentences (or word runs) that each fit."""
    parts: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        if count(sentence) <= limit:
            parts.append(sentence)
            continue
        words, run = sentence.split(), []
        for word in words:
            if run and count(" ".join([*run, word])) > limit:
                parts.append(" ".join(run))
                run = []
            run.append(word)
        if run:
            parts.append(" ".join(run))
    # Sentences go back together up to the limit: a chunk is still text, not a sentence list.
    return [" ".join(piece.paragraphs) for piece in pack(parts, limit, count, sep=" ")]


def pack(parts: list[str], limit: int, count: Counter, sep: str = "\n\n") -> list[Piece]:
    """Consecutive parts joined greedily into pieces of at most `limit` tokens.

    Each piece's count is exact (the joined text is counted); a part longer than `limit` on its
    own is split on sentences first.
    """
    pieces: list[Piece] = []
    run: list[str] = []
    estimate = 0
    for part in parts:
        n = count(part)
        if n > limit:
            if run:
                pieces += _close(run, limit, count, sep)
                run, estimate = [], 0
            pieces += [Piece([p], count(p)) for p in _split_long(part, limit, count)]
            continue
        if run and estimate + n + 1 > limit:
            pieces += _close(run, limit, count, sep)
            run, estimate = [], 0
        run.append(part)
        estimate += n + (1 if len(run) > 1 else 0)
    if run:
        pieces += _close(run, limit, count, sep)
    return pieces


def _close(run: list[str], limit: int, count: Counter, sep: str) -> list[Piece]:
    """The run as one piece, or halves when the exact count (joins merge tokens) is over."""
    n = count(sep.join(run))
    if n <= limit or len(run) == 1:
        return [Piece(run, n)]
    half = len(run) // 2
    return _close(run[:half], limit, count, sep) + _close(run[half:], limit, count, sep)


# ---------------------------------------------------------------------------------------------
# Contexts.


@dataclass
class Part:
    """One document (or a stretch of one) inside a context."""

    title: str
    source: str
    paragraphs: list[str]
    tokens: int


@dataclass
class Passage:
    """A chunk of a context that a request shows the generator."""

    text: str
    tokens: int
    depth: float
    """Where it starts in its context, in % of the context's tokens."""
    doc: int
    """Index of the part (document) it comes from."""
    title: str


@dataclass
class Context:
    """The long context of one training sample."""

    id: str
    kind: str
    """`document` (one document or a stretch of one) or `cluster` (several similar ones)."""
    parts: list[Part]
    text: str
    tokens: int
    headers: list[str] = field(default_factory=list)
    """Cluster contexts: the line heading each document in `text`."""

    @property
    def sources(self) -> list[str]:
        return [p.source for p in self.parts]

    @property
    def titles(self) -> list[str]:
        return [p.title for p in self.parts]

    def passages(self, limit: int, count: Counter) -> list[Passage]:
        """The context cut into chunks of at most `limit` tokens, in order, none across parts."""
        out, offset = [], 0
        for i, part in enumerate(self.parts):
            offset += count(self.headers[i]) + 1 if self.headers else 0
            for piece in pack(part.paragraphs, limit, count):
                depth = 100.0 * offset / max(1, self.tokens)
                out.append(Passage(piece.text, piece.tokens, round(depth, 1), i, part.title))
                offset += piece.tokens + 1
        return out


def context_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def document_contexts(
    docs: list[Document], min_tokens: int, max_tokens: int, count: Counter, limit: int
) -> tuple[list[Context], list[str]]:
    """Up to `limit` one-document contexts of `min_tokens..max_tokens` tokens, in corpus order.

    A document longer than `max_tokens` gives consecutive stretches (a last stretch shorter than
    `min_tokens` is left out). Returns the contexts and why documents were skipped.
    """
    contexts: list[Context] = []
    skipped: list[str] = []
    for doc in docs:
        if len(contexts) >= limit:
            break
        pieces = pack(paragraphs(doc.text), max_tokens, count)
        kept = [p for p in pieces if p.tokens >= min_tokens]
        if not kept:
            total = sum(p.tokens for p in pieces)
            skipped.append(f"{doc.title}: {total} tokens, fewer than min_tokens {min_tokens}")
        for piece in kept[: limit - len(contexts)]:
            part = Part(doc.title, doc.source, piece.paragraphs, piece.tokens)
            text = piece.text
            contexts.append(Context(context_id(text), "document", [part], text, piece.tokens))
    return contexts, skipped


def cluster_labels(docs: list[Document], n_clusters: int, seed: int) -> list[int]:
    """A cluster number per document: TF-IDF (English stop words, sublinear tf) + k-means."""
    if n_clusters <= 1 or len(docs) <= 2:
        return [0] * len(docs)
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectors = TfidfVectorizer(
        stop_words="english", sublinear_tf=True, max_features=50_000, min_df=1
    ).fit_transform([d.text for d in docs])
    k = min(n_clusters, len(docs))
    model = KMeans(n_clusters=k, n_init=10, random_state=seed)
    return [int(x) for x in model.fit_predict(vectors)]


def cluster_contexts(
    docs: list[Document],
    labels: list[int],
    min_tokens: int,
    max_tokens: int,
    count: Counter,
    limit: int,
    header: Callable[[int, str], str],
) -> tuple[list[Context], list[str]]:
    """Contexts of 2+ documents of one cluster, concatenated, within the token range.

    Each document contributes at most about half of `max_tokens` (its opening stretch), so that
    at least two fit; clusters take turns so that the first contexts come from different clusters.
    """
    per_doc = max(32, (max_tokens - 64) // 2)  # two fit, with their headers
    by_cluster: dict[int, list[Context]] = {}
    skipped: list[str] = []
    groups: dict[int, list[Document]] = {}
    for doc, label in zip(docs, labels, strict=True):
        groups.setdefault(label, []).append(doc)
    for label, members in sorted(groups.items()):
        found: list[Context] = []
        run: list[Part] = []
        total = 0
        for doc in members:
            first = next(iter(pack(_opening(doc.text, per_doc), per_doc, count)), None)
            if first is None:
                continue
            part = Part(doc.title, doc.source, first.paragraphs, first.tokens)
            cost = part.tokens + count(header(len(run) + 1, doc.title)) + 2
            if run and total + cost > max_tokens:
                found += _cluster_context(run, min_tokens, max_tokens, count, header)
                run, total = [], 0
                cost = part.tokens + count(header(1, doc.title)) + 2
            run.append(part)
            total += cost
        found += _cluster_context(run, min_tokens, max_tokens, count, header)
        if not found:
            skipped.append(f"cluster {label} ({len(members)} documents) gives no context in range")
        by_cluster[label] = found
    contexts: list[Context] = []
    queues = [found for _, found in sorted(by_cluster.items())]
    while len(contexts) < limit and any(queues):
        for queue in queues:
            if queue and len(contexts) < limit:
                contexts.append(queue.pop(0))
    return contexts, skipped


def _opening(text: str, tokens: int) -> list[str]:
    """The first paragraphs of a text, enough for `tokens` tokens without counting a whole book."""
    head = text[: tokens * 12]  # no tokenizer averages 12 characters a token
    paras = paragraphs(head)
    if len(head) < len(text) and len(paras) > 1:
        paras = paras[:-1]  # it may be cut in the middle
    return paras


def _cluster_context(
    parts: list[Part], min_tokens: int, max_tokens: int, count: Counter, header: Callable
) -> list[Context]:
    # Trim from the end until the exact count fits: joins can add a token or two per document.
    while len(parts) >= 2:
        headers = [header(i, p.title) for i, p in enumerate(parts, 1)]
        text = "\n\n".join(
            f"{h}\n\n{p_text}" for h, p_text in zip(headers, _texts(parts), strict=True)
        )
        n = count(text)
        if n > max_tokens:
            parts = parts[:-1]
            continue
        if n < min_tokens:
            return []
        return [Context(context_id(text), "cluster", list(parts), text, n, headers)]
    return []


def _texts(parts: list[Part]) -> list[str]:
    return ["\n\n".join(p.paragraphs) for p in parts]


def token_counter(tokenizer: object) -> Counter:
    """A cached token counter for `tokenizer` (exact; fast on long texts where possible)."""
    cache: dict[str, int] = {}
    try:
        from core.data.tokcount import TokenCounter

        fast = TokenCounter(tokenizer)

        def raw(text: str) -> int:
            return fast.count(text)
    except (LongCtxError, ValueError, AttributeError, ImportError) as exc:
        log.info("plain token counting (%s)", exc)

        def raw(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

    lock = threading.Lock()  # the fast counter keeps state; drivers count from threads

    def count(text: str) -> int:
        with lock:
            if len(text) > 20_000:  # long texts are counted once each; keep the cache small
                return raw(text)
            if text not in cache:
                cache[text] = raw(text)
            return cache[text]

    return count
