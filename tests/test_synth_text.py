"""Plain-text samples cut from documents (the paper's RedPajama part, from the user's own texts)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import make_epub, make_pdf

from core import workspace
from core.errors import ConfigError, LongCtxError
from core.synth.text import text_samples


@pytest.fixture
def library(tmp_path):
    chapters = [
        (
            f"c{i}.xhtml",
            "".join(
                f"<p>Chapter {i}, paragraph {j}: the keeper logged the "
                f"ships that passed the point on day {j}.</p>"
                for j in range(60)
            ),
        )
        for i in range(3)
    ]
    make_epub(tmp_path / "log-book.epub", chapters)
    make_pdf(tmp_path / "short-note.pdf", [["A note far too short to make a sample."]])
    make_pdf(tmp_path / "scan.pdf", [[]])
    workspace.allow_root(tmp_path)
    return tmp_path


def test_stretches_of_documents_within_the_length_without_overlap(library, embedded_tokenizer):
    unreadable: list[str] = []
    samples = text_samples(str(library), 50, 300, embedded_tokenizer, unreadable=unreadable)
    assert unreadable and "scan.pdf" in unreadable[0]
    assert {s["source"] for s in samples} == {"log-book.epub"}  # the note is too short
    for s in samples:
        tokens = len(embedded_tokenizer(s["text"], add_special_tokens=False)["input_ids"])
        assert 150 <= tokens <= 300 and s["length"] == tokens
        assert set(s) == {"text", "id", "task", "source", "length"} and s["task"] == "text"
    paragraphs = [p for s in samples for p in s["text"].split("\n\n")]
    assert len(paragraphs) == len(set(paragraphs))  # no paragraph in two samples
    assert len(samples) < 50  # as many as the book holds, not more


def test_same_seed_same_samples(library, embedded_tokenizer):
    first = text_samples(str(library), 3, 300, embedded_tokenizer, seed=7)
    assert first == text_samples(str(library), 3, 300, embedded_tokenizer, seed=7)
    assert [s["id"] for s in first] == ["text-7-0", "text-7-1", "text-7-2"]


def test_bad_settings_and_sources_too_short_are_refused(library, embedded_tokenizer):
    with pytest.raises(ConfigError, match="length >= 64"):
        text_samples(str(library), 3, 10, embedded_tokenizer)
    note = str(library / "short-note.pdf")
    with pytest.raises(LongCtxError, match=r"no stretch of 1,000..2,000 tokens .*lower the length"):
        text_samples(note, 3, 2000, embedded_tokenizer)


@pytest.mark.integration
def test_cli_writes_a_valid_text_set(library, tmp_path, workspace_home):
    out = tmp_path / "books.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "data",
            "make",
            "text",
            "--source",
            str(library),
            "--n",
            "4",
            "--length",
            "300",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 4 text samples" in proc.stdout
    assert "left out: scan.pdf has no text layer" in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["text"].startswith("Chapter") for r in rows)
    check = subprocess.run(
        [sys.executable, "-m", "core.cli", "data", "validate", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and "4 text" in check.stdout
