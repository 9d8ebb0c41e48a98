"""Plain-text corpora: a built-in one made from the installed Python's documentation, or a folder.

Needle-in-a-haystack evaluations and the procedural data generators need long, natural,
licence-free filler text on every machine, offline. The built-in corpus is generated at run time
from the docstrings of the installed standard library (modules, classes, functions, methods),
cleaned down to prose paragraphs and cached under `LONGCTX_HOME/cache/corpus/` — nothing is
copied into the repository. A user's own corpus is a folder of documents (text, Markdown, PDF, EPUB, HTML).

This module knows nothing about tokenizers, models or evaluations: it hands out `Document`s.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from core import workspace
from core.errors import LongCtxError
from core.text import documents

log = logging.getLogger(__name__)

# Well-documented, import-safe modules (no GUI, no side effects on import such as `this` or
# `antigravity`), in a fixed order so every machine with the same Python builds the same corpus.
STDLIB_MODULES = (
    "argparse",
    "base64",
    "calendar",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "fractions",
    "functools",
    "gzip",
    "hashlib",
    "heapq",
    "http.client",
    "http.cookiejar",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "logging.handlers",
    "mailbox",
    "numbers",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "traceback",
    "typing",
    "unittest.case",
    "unittest.mock",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
)
_CACHE_VERSION = 1
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?$")


@dataclass(frozen=True)
class Document:
    """One text of a corpus."""

    title: str
    """A short name: the module (`json`) or the file's path relative to its folder."""
    text: str
    """Plain text; paragraphs separated by blank lines."""
    source: str = ""
    """Where it came from: `stdlib:json` or a file path."""


def builtin_documents(min_chars: int = 0, *, refresh: bool = False) -> list[Document]:
    """The built-in corpus: one document per standard-library module, prose only.

    Built on first use (well under a second) and cached as JSONL under
    `LONGCTX_HOME/cache/corpus/`, keyed by the Python version that produced it.

    Args:
        min_chars: leave out documents shorter than this.
        refresh: rebuild the cache even if it exists.
    """
    path = _builtin_cache_path()
    docs: list[Document] | None = None
    if path.exists() and not refresh:
        try:
            docs = [Document(**json.loads(line)) for line in path.read_text().splitlines()]
        except (ValueError, TypeError) as exc:  # a damaged cache is rebuilt, not trusted
            log.warning("rebuilding corpus cache %s: %s", path, exc)
    if not docs:
        docs = _build_builtin()
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(asdict(d)) + "\n" for d in docs))
        os.replace(tmp, path)
    return [d for d in docs if len(d.text) >= min_chars]


def load_folder(
    path: str | os.PathLike,
    *,
    min_chars: int = 0,
    unreadable: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Document]:
    """Every document under `path` (recursively, sorted by path): text, Markdown, PDF, EPUB
    and HTML files (`core.text.documents.SUFFIXES`). `path` may also be one such document (a book).

    The folder must lie under a root the app may read (the workspace, or a path given on the
    command line via `core.workspace.allow_root`); a relative path is taken from the workspace.
    A file that cannot be read (a scanned PDF, a damaged book) is left out with a warning in
    the log, so one bad file does not sink a corpus of hundreds; pass `unreadable` (a list) to
    receive the reasons, to show them. `progress(done, total)` follows the files (a folder of
    books takes a while).

    Raises:
        LongCtxError: the folder is missing, not allowed, or holds no readable documents.
    """
    root = workspace.resolve_inside(path)
    if root.is_file() and root.suffix.lower() in documents.SUFFIXES:
        text = documents.read_text(root).strip()  # one document: its own errors, not skipped
        if not text or len(text) < min_chars:
            raise LongCtxError(f"{root.name} holds {len(text):,} characters of text, too few")
        return [Document(root.name, text, str(root))]
    if not root.is_dir():
        raise LongCtxError(
            f"corpus {str(path)!r} is neither a folder nor a document ({documents.kinds()})"
        )
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in documents.SUFFIXES
    )
    docs, skipped = [], [] if unreadable is None else unreadable
    for n, file in enumerate(files, 1):
        try:
            text = documents.read_text(file).strip()
        except LongCtxError as exc:
            log.warning("corpus %s: %s; left out", root, exc)
            skipped.append(str(exc))
            text = ""
        if text and len(text) >= min_chars:
            docs.append(Document(str(file.relative_to(root)), text, str(file)))
        if progress:
            progress(n, len(files))
    if not docs:
        raise LongCtxError(
            f"corpus folder {str(path)!r} holds no documents ({documents.kinds()})"
            + (f" of at least {min_chars} characters" if min_chars else "")
            + (f"; {len(skipped)} could not be read, e.g. {skipped[0]}" if skipped else "")
        )
    return docs


def joined_text(documents: list[Document], min_chars: int = 0, separator: str = "\n\n") -> str:
    """The documents' texts in order, repeated from the start until at least `min_chars` long."""
    if not documents:
        raise LongCtxError("the corpus is empty")
    parts: list[str] = []
    total = 0
    while True:
        for doc in documents:
            parts.append(doc.text)
            total += len(doc.text) + len(separator)
            if total >= min_chars:
                return separator.join(parts)


# ---------------------------------------------------------------------------------------------
# Building the built-in corpus.


def _builtin_cache_path() -> Path:
    folder = workspace.subdir("cache") / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    major, minor = sys.version_info[:2]
    return folder / f"stdlib-py{major}.{minor}-v{_CACHE_VERSION}.jsonl"


def _build_builtin() -> list[Document]:
    docs = []
    for name in STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a trimmed Python (no sqlite3, say) still gives the rest
            log.info("corpus: skipping %s (%s)", name, exc)
            continue
        paragraphs = [p for doc in _docstrings(module) for p in prose_paragraphs(doc)]
        if paragraphs:
            docs.append(Document(name, "\n\n".join(paragraphs), f"stdlib:{name}"))
    if not docs:
        raise LongCtxError("could not build the built-in corpus: no standard-library docs found")
    return docs


def _docstrings(module) -> list[str]:
    """The module's docstring, then those of its public classes (with methods) and functions."""
    found = [inspect.getdoc(module) or ""]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            found.append(inspect.getdoc(obj) or "")
        elif inspect.isclass(obj):
            found.append(inspect.getdoc(obj) or "")
            for attr, member in sorted(vars(obj).items()):
                if not attr.startswith("_") and inspect.isfunction(member):
                    found.append(inspect.getdoc(member) or "")
    seen: set[str] = set()
    return [d for d in found if d and not (d in seen or seen.add(d))]


def prose_paragraphs(docstring: str) -> list[str]:
    """The paragraphs of a docstring that read as prose, each joined onto one line.

    Code examples, doctests, indented blocks, parameter lists and headings are dropped: a
    haystack should be running text with sentence boundaries to put a needle between.
    """
    kept = []
    for block in re.split(r"\n\s*\n", docstring):
        lines = block.splitlines()
        if not lines or any(
            line.startswith((" ", "\t", ">>>", "...", "-", "*", "|", ":", "=")) for line in lines
        ):
            continue
        text = " ".join(line.strip() for line in lines)
        words = text.split()
        letters = sum(c.isalpha() or c.isspace() for c in text)
        if (
            len(words) >= 8
            and _SENTENCE_END.search(text)
            and letters >= 0.85 * len(text)
            and text[0].isupper()
        ):
            kept.append(text)
    return kept
