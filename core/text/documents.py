"""Documents as plain text: the long contexts a user brings (chat attachments, synth corpora).

Reads text and Markdown as they are, HTML by its visible text, PDF through pypdf's text layer
and EPUB books chapter by chapter in reading order. Every reader returns paragraphs separated
by blank lines, which is what chunking (`core.synth.sources`) cuts on.

pypdf extracts a page line by line as laid out, so paragraphs are rebuilt here: lines are joined
until one ends a sentence well short of the page's usual line width, and words hyphenated across
a line break are rejoined. HTML and EPUB need only the standard library (html.parser, zipfile).
"""

from __future__ import annotations

import html.parser
import logging
import posixpath
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

from core.errors import LongCtxError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".tex")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
SUFFIXES = (*TEXT_SUFFIXES, ".pdf", ".epub", *HTML_SUFFIXES)
"""Every file type `read_text` turns into text."""
MAX_FILE_BYTES = 200 * 2**20
"""PDF and EPUB files past this are refused before parsing (and EPUBs that unpack past it)."""

_BLANK_LINES = re.compile(r"\n\s*\n+")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_ENDS_SENTENCE = re.compile(r"[.!?:;\"'\u201d\u2019)\]]$")


def kinds() -> str:
    """The accepted suffixes, for messages: `.txt, .md, ...`."""
    return ", ".join(SUFFIXES)


def read_text(
    path: str | Path,
    max_bytes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """The text of a document, paragraphs separated by blank lines.

    Args:
        path: a file with one of `SUFFIXES`.
        max_bytes: refuse a text file larger than this, or a document whose extracted text
            is (PDF, EPUB and HTML are measured after extraction).
        progress: called as (done, total) after each page of a PDF or chapter of an EPUB (a
            book of hundreds of pages takes a while).

    Raises:
        LongCtxError: an unknown type, a file too large, a damaged or encrypted file, or a
            PDF without a text layer (scanned pages).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LongCtxError(f"{path.name}: not a document this app reads ({kinds()})")
    size = path.stat().st_size
    if suffix in TEXT_SUFFIXES:
        if max_bytes is not None and size > max_bytes:
            raise LongCtxError(f"{path.name} is {_mb(size)}; the limit is {_mb(max_bytes)}")
        return path.read_bytes().decode("utf-8", errors="replace")
    if size > MAX_FILE_BYTES:
        raise LongCtxError(f"{path.name} is {_mb(size)}; the limit is {_mb(MAX_FILE_BYTES)}")
    if suffix == ".pdf":
        text = _pdf_text(path, progress)
    elif suffix == ".epub":
        text = _epub_text(path, progress)
    else:
        text = html_text(path.read_bytes().decode("utf-8", errors="replace"))
    if max_bytes is not None and len(text.encode()) > max_bytes:
        raise LongCtxError(
            f"{path.name} holds {_mb(len(text.encode()))} of text; the limit is {_mb(max_bytes)}"
        )
    return text


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


# ---------------------------------------------------------------------------------------------
# HTML (and the XHTML chapters of an EPUB).

_BLOCKS = frozenset(
    "address article aside blockquote body br dd div dl dt figcaption figure footer h1 h2 h3 h4 "
    "h5 h6 header hr li main nav ol p pre section table td th tr ul".split()
)
_HIDDEN = frozenset(("script", "style", "head", "title", "noscript", "template", "svg"))


class _TextParser(html.parser.HTMLParser):
    """Visible text; a block element starts a new paragraph."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._words: list[str] = []
        self._hidden = 0

    def _flush(self) -> None:
        text = _SPACES.sub(" ", "".join(self._words).replace("\n", " ")).strip()
        if text:
            self.paragraphs.append(text)
        self._words = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCKS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in _BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._words.append(data)


def html_text(markup: str) -> str:
    """The visible text of an HTML page, one paragraph per block element."""
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    parser._flush()
    return "\n\n".join(parser.paragraphs)


# ---------------------------------------------------------------------------------------------
# PDF.


def _pdf_text(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise LongCtxError(f"{path.name} is encrypted; save an unprotected copy first")
        pages = []
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            if progress:
                progress(len(pages), len(reader.pages))
    except LongCtxError:
        raise
    except DependencyError as exc:  # e.g. AES encryption without the `cryptography` package
        raise LongCtxError(f"{path.name} cannot be read here: {exc}") from None
    except (PyPdfError, ValueError, KeyError, OSError) as exc:
        raise LongCtxError(f"{path.name} cannot be read as a PDF: {exc}") from None
    text = "\n\n".join(t for t in (pdf_paragraphs(p) for p in pages) if t)
    if not text.strip():
        raise LongCtxError(
            f"{path.name} has no text layer ({len(pages)} pages of images, e.g. a scan); "
            "run OCR on it first"
        )
    return text


def pdf_paragraphs(page: str) -> str:
    """One PDF page's laid-out lines rebuilt into paragraphs separated by blank lines.

    A paragraph ends at an empty line, or after a line that ends a sentence and stops short
    of the page's usual line width (the last line of a justified paragraph). A word
    hyphenated at a line end is rejoined when the next line goes on in lower case.
    """
    lines = [_SPACES.sub(" ", line).strip() for line in page.splitlines()]
    widths = sorted(len(line) for line in lines if line)
    if not widths:
        return ""
    usual = widths[int(0.8 * (len(widths) - 1))]
    paragraphs: list[str] = []
    current = ""
    for line in lines:
        if not line:
            if current:
                paragraphs.append(current)
            current = ""
            continue
        if current.endswith("-") and line[:1].islower() and current[-2:-1].isalpha():
            current = current[:-1] + line
        else:
            current = f"{current} {line}" if current else line
        if _ENDS_SENTENCE.search(line) and len(line) < 0.8 * usual:
            paragraphs.append(current)
            current = ""
    if current:
        paragraphs.append(current)
    return "\n\n".join(paragraphs)


# ---------------------------------------------------------------------------------------------
# EPUB: a zip of XHTML chapters; the package file's spine gives the reading order.


def _epub_text(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    try:
        with zipfile.ZipFile(path) as book:
            unpacked = sum(info.file_size for info in book.infolist())
            if unpacked > MAX_FILE_BYTES:
                raise LongCtxError(
                    f"{path.name} unpacks to {_mb(unpacked)}; the limit is {_mb(MAX_FILE_BYTES)}"
                )
            chapters = _epub_reading_order(book)
            texts = []
            for name in chapters:
                texts.append(html_text(book.read(name).decode("utf-8", errors="replace")))
                if progress:
                    progress(len(texts), len(chapters))
    except LongCtxError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise LongCtxError(f"{path.name} cannot be read as an EPUB: {exc}") from None
    text = "\n\n".join(t for t in texts if t.strip())
    if not text:
        raise LongCtxError(f"{path.name} holds no text chapters")
    return text


def _epub_reading_order(book: zipfile.ZipFile) -> list[str]:
    """The chapter files in the order of the package's spine; without a readable package,
    every (X)HTML file in name order."""
    names = set(book.namelist())
    try:
        container = ElementTree.fromstring(book.read("META-INF/container.xml"))
        rootfile = container.find(".//{*}rootfile")
        package_path = rootfile.get("full-path", "") if rootfile is not None else ""
        package = ElementTree.fromstring(book.read(package_path))
    except (KeyError, ElementTree.ParseError) as exc:
        log.info("EPUB without a readable package file (%s): chapters in name order", exc)
        return sorted(n for n in names if n.lower().endswith(HTML_SUFFIXES))
    base = posixpath.dirname(package_path)
    manifest = {
        item.get("id"): posixpath.normpath(posixpath.join(base, unquote(item.get("href", ""))))
        for item in package.findall(".//{*}item")
    }
    order = [manifest.get(ref.get("idref")) for ref in package.findall(".//{*}itemref")]
    return [name for name in order if name in names]
