"""Statistics of a whole file: counts equal the tokenizer's, the cache, the worker processes, and
what is built on them (table, figures, duplicates, evidence)."""

from __future__ import annotations

import os
import random

import plotly.graph_objects as go
import pytest
from test_data_support import PAPER_PROBLEMS, PAPER_ROWS, chat, embedded_tokenizer, write_jsonl

from core.data import dedup, evidence, figures, io, render, stats, table
from core.errors import ConfigError


@pytest.fixture(scope="module")
def tok():
    return embedded_tokenizer()


@pytest.fixture(scope="module")
def measurer(tok):
    return stats.Measurer(tok, name="embedded")


def _paper_file(tmp_path):
    return write_jsonl(tmp_path / "paper.jsonl", PAPER_ROWS)


def test_counts_match_the_rendered_template(tmp_path, tok, measurer):
    result = stats.measure(str(_paper_file(tmp_path)), tok, measurer=measurer, use_cache=False)
    assert [s.kind for s in result.samples] == [
        "chat",
        "bad",
        "chat",
        "bad",
        "text",
        "bad",
        "bad",
        "bad",
        "bad",
    ]
    assert [str(p) for p in result.problems()] == PAPER_PROBLEMS
    for s, row in zip(result.samples, PAPER_ROWS, strict=True):
        if s.kind == "chat":
            conv = row["conversations"]
            assert s.total_tokens == len(tok.apply_chat_template(conv, tokenize=True)["input_ids"])
            rendered = render.render_sample(tok, row)
            assert s.answer_tokens == rendered.loss_tokens
            assert s.answer_lengths == [
                t.loss_tokens for t in rendered.turns if t.role == "assistant"
            ]
            assert s.context_tokens == rendered.turns[0].n_tokens
        elif s.kind == "text":
            assert s.total_tokens == len(tok(row["text"])["input_ids"]) and s.answer_tokens == 0
        else:
            assert s.total_tokens is None
    assert result.samples[2].questions == ["When do ships sail?", "Why?"]
    assert result.samples[0].id == "a" and result.samples[0].task == "qa"


def test_second_run_comes_from_the_cache_until_the_file_changes(tmp_path, tok, measurer):
    path = _paper_file(tmp_path)
    seen = []
    first = stats.measure(
        str(path), tok, measurer=measurer, progress=lambda d, n: seen.append((d, n))
    )
    assert not first.cached and seen[-1] == (9, 9)
    second = stats.measure(str(path), tok, measurer=measurer)
    assert second.cached and second.samples == first.samples
    with open(path, "a") as f:
        f.write('{"text": "one more"}\n')
    third = stats.measure(str(path), tok, measurer=measurer)
    assert not third.cached and len(third.samples) == 10


def test_worker_processes_give_the_same_result(tmp_path, tok, measurer, monkeypatch):
    # Words seen by no earlier test: the counter's memo of known words (which forked workers
    # inherit) cannot do the work, so the children spend measurable CPU time on it.
    rng = random.Random(5)

    def words(n: int) -> str:
        return " ".join("".join(rng.choices("bcdfghklmnprstvzaeiou", k=7)) for _ in range(n))

    rows = [chat(words(800), f"Question {i}?", f"Answer {i}.", id=i) for i in range(40)]
    path = write_jsonl(tmp_path / "many.jsonl", rows + ["{bad"])
    monkeypatch.setattr(stats, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(stats, "_BATCH_BYTES", 20000)
    children_before = os.times().children_user
    two = stats.measure(str(path), tok, measurer=measurer, workers=2, use_cache=False)
    assert os.times().children_user > children_before  # the work really ran in child processes
    one = stats.measure(str(path), tok, measurer=measurer, workers=1, use_cache=False)
    assert two.samples == one.samples


def test_summary(tmp_path, tok, measurer):
    result = stats.measure(str(_paper_file(tmp_path)), tok, measurer=measurer, use_cache=False)
    summary = result.summary(max_length=100)
    assert (summary["samples"], summary["chat"], summary["text"], summary["malformed"]) == (
        9,
        2,
        1,
        6,
    )
    assert summary["problems"] == len(PAPER_PROBLEMS)
    totals = [s.total_tokens for s in result.samples if s.total_tokens]
    assert summary["over_max_length"] == sum(t > 100 for t in totals)
    assert summary["tokens"]["max"] == max(totals)


def test_table_filters_sorts_pages_and_searches(tmp_path, tok, measurer):
    path = _paper_file(tmp_path)
    result = stats.measure(str(path), tok, measurer=measurer, use_cache=False)
    samples = result.samples
    page = table.page(samples, table.Query(has_problems=True, page_size=4))
    assert page.total == 6 and page.pages == 2 and page.indices == [1, 3, 5, 6]
    assert len(page.rows[0]) == len(table.COLUMNS)
    big = table.page(samples, table.Query(sort_by="total_tokens", descending=True, kind="chat"))
    assert big.indices == [0, 2] and big.rows[0][8] >= big.rows[1][8]
    assert table.page(samples, table.Query(task="qa")).indices == [0]
    assert table.page(samples, table.Query(min_tokens=1, max_tokens=40)).indices == [4]
    assert table.page(samples, table.Query(page=99, page_size=4)).page == 2
    source = io.open_source(str(path))
    found = table.search(source, "SHIPS sail")
    assert list(found) == [2] and found[2].startswith("question: When do ships sail?")
    assert list(table.search(source, "tides", fields=["answer"])) == [2]
    assert table.search(source, "tides", fields=["question"]) == {}
    assert list(table.search(source, "castle stood")) == [0]
    with pytest.raises(ConfigError, match="sort_by"):
        table.Query(sort_by="colour")


def test_figures(tmp_path, tok, measurer):
    result = stats.measure(str(_paper_file(tmp_path)), tok, measurer=measurer, with_evidence=True)
    fig = figures.length_histogram(result.samples, max_length=100)
    assert isinstance(fig, go.Figure) and "over" in fig.layout.title.text
    assert fig.layout.shapes[0].x0 == 100
    assert isinstance(figures.task_counts(result.samples), go.Figure)
    assert isinstance(figures.answer_length_histogram(result.samples), go.Figure)
    depth = figures.evidence_histogram(result.samples)
    assert list(depth.data[0].x) == [d for s in result.samples for d in s.evidence if d is not None]
    assert figures.length_histogram([], 10).layout.annotations[0].text == "no measured samples"


def test_duplicates(tok, measurer):
    rows = [
        chat("Same context.", "What colour is the sky today?", "Blue."),
        chat("Same context.", "Which colour is the sky today?", "Blue."),
        chat("Other context.", "How many legs does a spider have?", "Eight."),
    ]
    samples = [measurer.measure_record(r, index=i, line=i + 1) for i, r in enumerate(rows)]
    groups = dedup.duplicate_contexts(samples)
    assert [(g.indices, g.lines) for g in groups] == [([0, 1], [1, 2])]
    near = dedup.near_duplicate_questions(samples, threshold=0.7)
    assert [(p.a, p.b) for p in near] == [((0, 0), (1, 0))] and near[0].similarity == 0.714


def test_evidence_depth():
    filler = "Nothing happens in this sentence at all. "
    context = (
        filler * 50 + "The lighthouse keeper named Orsolya painted the door crimson. " + filler * 50
    )
    found = evidence.locate(
        context, "What colour did the keeper paint the door?", "Orsolya painted it crimson."
    )
    assert 45 < found.depth < 55 and found.score == 1.0
    assert context[found.start : found.end] == "keeper named Orsolya painted the door crimson"
    assert evidence.locate(context, "Who?", "zzz qqq") is None


def test_refresh_after_edits(tmp_path, tok, measurer):
    from core.data.edit import EditSession

    path = _paper_file(tmp_path)
    base = stats.measure(str(path), tok, measurer=measurer, use_cache=False)
    session = EditSession(io.open_source(str(path)))
    session.set_turn(0, 1, content="On a very high hill, above the town.")
    session.delete(1)
    new = stats.refresh(base, session, measurer)
    assert len(new.samples) == 8 and [s.index for s in new.samples] == list(range(8))
    assert new.samples[0].answer_tokens > base.samples[0].answer_tokens
    assert new.samples[1] == stats.replace(base.samples[2], index=1)


def test_measurer_is_reused_per_tokenizer(tok):
    assert stats.measurer_for(tok, "x") is stats.measurer_for(tok, "x")
    assert stats.measurer_for(tok, "x") is not stats.measurer_for(tok, "y")
