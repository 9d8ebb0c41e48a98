"""Documents a user brings (PDF, EPUB, HTML, text) read as paragraphs of plain text."""

from __future__ import annotations

import pytest
from conftest import make_epub, make_pdf

from core import chat, workspace
from core.errors import LongCtxError
from core.synth import sources
from core.text import documents
from core.text.corpus import load_folder

# A justified paragraph as a PDF lays it out: full lines, a word hyphenated at a line end, a short
# last line that ends the sentence.
PARAGRAPH = [
    "The lighthouse keeper wrote every evening in a leather log that his daughter",
    "kept after him; the entries describe ships, storms and the slow arrival of elec-",
    "tricity on the island, one lamp at a time, across forty years of winters.",
    "Then the log stops.",
]
SECOND = ["A second paragraph begins on its own line and ends short."]


def test_a_pdf_is_read_page_by_page_as_paragraphs(tmp_path):
    pdf = make_pdf(tmp_path / "log.pdf", [PARAGRAPH + SECOND, ["Page two (the end)."]])
    pages: list[tuple[int, int]] = []
    text = documents.read_text(pdf, progress=lambda done, total: pages.append((done, total)))
    assert pages == [(1, 2), (2, 2)]  # a book's progress, page by page
    paragraphs = text.split("\n\n")
    assert paragraphs[0].startswith("The lighthouse keeper wrote every evening")
    assert "of electricity on the island" in paragraphs[0]  # rejoined across the line break
    assert paragraphs[0].endswith("forty years of winters. Then the log stops.")
    assert paragraphs[1:] == [SECOND[0], "Page two (the end)."]


def test_pdf_paragraphs_keep_a_hyphen_that_belongs_to_the_word():
    lines = [
        "A line that is long enough to count as the usual width of the page, with a",
        "well-",
        "Known name.",
    ]
    assert "well- Known name." in documents.pdf_paragraphs("\n".join(lines))


def test_pdfs_without_text_encrypted_or_damaged_are_refused_with_the_reason(tmp_path):
    scanned = make_pdf(tmp_path / "scan.pdf", [[], []])
    with pytest.raises(LongCtxError, match=r"scan.pdf has no text layer \(2 pages.*OCR"):
        documents.read_text(scanned)

    from pypdf import PdfWriter

    locked = tmp_path / "locked.pdf"
    writer = PdfWriter(clone_from=make_pdf(tmp_path / "open.pdf", [SECOND]))
    writer.encrypt("secret", algorithm="RC4-128")
    writer.write(locked)
    with pytest.raises(LongCtxError, match="locked.pdf is encrypted"):
        documents.read_text(locked)

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not the rest of a PDF")
    with pytest.raises(LongCtxError, match="broken.pdf cannot be read as a PDF"):
        documents.read_text(broken)


def test_an_epub_is_read_in_spine_order_without_its_head_or_styles(tmp_path):
    book = make_epub(
        tmp_path / "novel.epub",
        [
            ("chapter two.xhtml", "<h1>Two</h1><p>The storm came at night.</p>"),
            ("chapter one.xhtml", "<h1>One</h1><p>The <em>harbour</em> was calm &amp; grey.</p>"),
        ],
        spine=[1, 0],
    )
    chapters: list[tuple[int, int]] = []
    text = documents.read_text(book, progress=lambda *step: chapters.append(step))
    assert chapters == [(1, 2), (2, 2)]
    assert text.split("\n\n") == [
        "One",
        "The harbour was calm & grey.",
        "Two",
        "The storm came at night.",
    ]


def test_an_epub_that_is_not_a_zip_is_refused(tmp_path):
    fake = tmp_path / "fake.epub"
    fake.write_text("plain text")
    with pytest.raises(LongCtxError, match="fake.epub cannot be read as an EPUB"):
        documents.read_text(fake)


def test_html_keeps_the_visible_text_one_paragraph_per_block(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>Tab title</title><script>var x = 1;</script></head><body>"
        "<nav>Home</nav><article><h2>Tides</h2><p>Tides   rise\n twice a <b>day</b>.</p>"
        "<ul><li>spring</li><li>neap</li></ul><p>Moon&nbsp;&gt; sun</p></article>"
        "<style>.x{}</style></body></html>"
    )
    assert documents.read_text(page).split("\n\n") == [
        "Home",
        "Tides",
        "Tides rise twice a day.",
        "spring",
        "neap",
        "Moon > sun",
    ]


def test_type_and_size_limits(tmp_path):
    with pytest.raises(LongCtxError, match=r"report.docx: not a document this app reads \(.txt"):
        documents.read_text(tmp_path / "report.docx")
    pdf = make_pdf(tmp_path / "small.pdf", [SECOND])
    assert documents.read_text(pdf, max_bytes=1000) == SECOND[0]
    with pytest.raises(LongCtxError, match="small.pdf holds 0.0 MB of text; the limit is"):
        documents.read_text(pdf, max_bytes=20)  # measured on the text, not the file


def test_chat_attaches_a_pdf(tmp_path):
    pdf = make_pdf(tmp_path / "paper.pdf", [PARAGRAPH])
    assert "Then the log stops." in chat.read_document(pdf)


def test_a_corpus_folder_reads_every_kind_and_leaves_out_unreadable_files(tmp_path, caplog):
    make_pdf(tmp_path / "a-log.pdf", [PARAGRAPH])
    make_pdf(tmp_path / "b-scan.pdf", [[]])
    make_epub(tmp_path / "c-book.epub", [("one.xhtml", "<p>Chapter text.</p>")])
    (tmp_path / "d-notes.txt").write_text("Plain notes.")
    workspace.allow_root(tmp_path)
    unreadable: list[str] = []
    steps: list[tuple[int, int]] = []
    docs = load_folder(tmp_path, unreadable=unreadable, progress=lambda *s: steps.append(s))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # file by file, the unreadable one too
    assert [d.title for d in docs] == ["a-log.pdf", "c-book.epub", "d-notes.txt"]
    assert docs[1].text == "Chapter text."
    # Said where, not dropped silently: in the log, and to a caller that shows it.
    assert [r.split(" (")[0] for r in unreadable] == ["b-scan.pdf has no text layer"]
    assert "b-scan.pdf has no text layer" in caplog.text
    # A synth source can be a single PDF too.
    [single] = sources.load_documents(str(tmp_path / "a-log.pdf"))
    assert single.title == "a-log.pdf" and "lighthouse keeper" in single.text


def test_a_folder_of_only_unreadable_documents_says_why(tmp_path):
    make_pdf(tmp_path / "scan.pdf", [[]])
    workspace.allow_root(tmp_path)
    with pytest.raises(LongCtxError, match="1 could not be read, e.g. scan.pdf has no text layer"):
        load_folder(tmp_path)
