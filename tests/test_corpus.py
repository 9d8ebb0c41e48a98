"""The built-in corpus (stdlib docs, cached in the workspace) and reading a folder of texts."""

from __future__ import annotations

import pytest

from core import workspace
from core.errors import LongCtxError
from core.text.corpus import builtin_documents, joined_text, load_folder, prose_paragraphs


def test_builtin_corpus_is_cached_in_the_workspace_and_stable(workspace_home):
    docs = builtin_documents()
    cached = list((workspace_home / "cache" / "corpus").glob("stdlib-py*.jsonl"))
    assert len(cached) == 1
    assert len(docs) > 40 and sum(len(d.text) for d in docs) > 150_000
    assert {"json", "argparse", "difflib"} <= {d.title for d in docs}
    assert builtin_documents() == docs  # read back from the cache
    assert builtin_documents(refresh=True) == docs  # rebuilt: the same text
    long_only = builtin_documents(min_chars=5000)
    assert long_only and all(len(d.text) >= 5000 for d in long_only)


def test_a_damaged_cache_is_rebuilt(workspace_home):
    docs = builtin_documents()
    path = next((workspace_home / "cache" / "corpus").glob("stdlib-py*.jsonl"))
    path.write_text("{not json\n")
    assert builtin_documents() == docs


def test_prose_paragraphs_drop_code_lists_and_fragments():
    doc = """Return the thing you asked for, fully formed and ready to use.

    >>> thing()
    42

Args:
    x: a parameter.

- a bullet point that goes on for a while longer

short.

Lines that wrap
onto a second line are joined into one paragraph here."""
    assert prose_paragraphs(doc) == [
        "Return the thing you asked for, fully formed and ready to use.",
        "Lines that wrap onto a second line are joined into one paragraph here.",
    ]


def test_joined_text_repeats_to_reach_the_length():
    docs = builtin_documents()[:2]
    once = len(docs[0].text) + len(docs[1].text) + 2
    text = joined_text(docs, min_chars=3 * once)
    assert len(text) >= 3 * once and text.startswith(docs[0].text)


def test_load_folder_reads_txt_and_md_in_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.md").write_text("# Two\n\nSecond.")
    (tmp_path / "a.txt").write_text("First text.")
    (tmp_path / "skip.json").write_text("{}")
    (tmp_path / "empty.txt").write_text("  ")
    workspace.allow_root(tmp_path)
    docs = load_folder(tmp_path)
    assert [(d.title, d.text) for d in docs] == [
        ("a.txt", "First text."),
        ("b/two.md", "# Two\n\nSecond."),
    ]
    assert load_folder(tmp_path, min_chars=12)[0].title == "b/two.md"


def test_load_folder_refuses_outside_and_empty_folders(tmp_path, workspace_home):
    with pytest.raises(LongCtxError, match="outside the folders"):
        load_folder("/etc")
    empty = workspace_home / "datasets" / "empty-corpus"
    empty.mkdir()
    with pytest.raises(LongCtxError, match=r"holds no documents \(.txt, .md"):
        load_folder(empty)
