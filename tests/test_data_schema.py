"""Validation reasons (exact), decoding edge cases, and reading the parts of a sample."""

from __future__ import annotations

import pytest

from core.data import schema


@pytest.mark.parametrize(
    ("raw", "reasons"),
    [
        (b'{"text": "hello"}', []),
        (
            b'{"conversations": [{"role": "user", "content": "q"}, '
            b'{"role": "assistant", "content": "a"}], "id": 3}',
            [],
        ),
        (
            b'{"conversations": [{"role": "system", "content": "s"}, '
            b'{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
            [],
        ),
        (b"", ["empty line"]),
        (b"   \r", ["empty line"]),
        (b"{", ["bad JSON: Expecting property name enclosed in double quotes at column 2"]),
        (b'{"a" 1}', ["bad JSON: Expecting ':' delimiter at column 6"]),
        (b"\xff{}", ["bad JSON: not valid UTF-8 at byte 1"]),
        (
            b'{"text": "\\ud800"}',
            ["bad JSON: holds an unpaired UTF-16 surrogate escape (not valid Unicode)"],
        ),
        (b"[1, 2]", ["not a JSON object (got a list)"]),
        (b"7", ["not a JSON object (got a number)"]),
        (b"{}", ["neither 'conversations' nor 'text'"]),
        (b'{"text": "a", "conversations": []}', ["has both 'conversations' and 'text'; keep one"]),
        (b'{"text": "  "}', ["'text' is empty"]),
        (b'{"text": 5}', ["'text' is not a string (got a number)"]),
        (b'{"conversations": {}}', ["'conversations' is not a list (got an object)"]),
        (b'{"conversations": []}', ["'conversations' is empty"]),
        (b'{"conversations": ["hi"]}', ["turn 1 is not an object with 'role' and 'content'"]),
        (
            b'{"conversations": [{"role": "human", "content": "q"}, {"role": "gpt", "content": "a"}]}',
            [
                "turn 1: unknown role 'human'; use system, user or assistant (ShareGPT 'human'/'gpt' must be converted)",
                "turn 2: unknown role 'gpt'; use system, user or assistant (ShareGPT 'human'/'gpt' must be converted)",
            ],
        ),
        (
            b'{"conversations": [{"role": "assistant", "content": "a"}]}',
            ["first turn is not user (it is 'assistant')"],
        ),
        (
            b'{"conversations": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}, '
            b'{"role": "assistant", "content": "a"}]}',
            ["roles do not alternate user/assistant: turn 2 is 'user' after 'user'"],
        ),
        (
            b'{"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}',
            ["turn 2 (assistant) has empty content"],
        ),
        (
            b'{"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 4}]}',
            ["turn 2: 'content' is not a string (got a number)"],
        ),
        (
            b'{"conversations": [{"role": "user", "content": "q"}]}',
            ["last turn is a user question without an answer"],
        ),
        (
            b'{"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, '
            b'{"role": "system", "content": "s"}]}',
            ["turn 3: a system turn is only allowed first"],
        ),
        (
            b'{"conversations": [{"role": "system", "content": "s"}]}',
            ["no user turn after the system turn"],
        ),
    ],
)
def test_parse_gives_exact_reasons(raw, reasons):
    _, problems = schema.parse(raw)
    assert problems == reasons


def test_decode_accepts_what_the_stdlib_accepts_and_a_bom():
    big = b'{"n": 123456789012345678901234567890}'
    assert schema.decode(big, exact=True)[0]["n"] == 123456789012345678901234567890
    assert schema.decode(big)[1] is None
    assert schema.decode(b"\xef\xbb\xbf" + b'{"text": "x"}') == ({"text": "x"}, None)
    value, error = schema.decode(b"[" * 100000 + b"]" * 100000)
    assert value is None and error.startswith("bad JSON")


def test_kind():
    assert schema.kind({"text": "x"}) == "text"
    assert (
        schema.kind(
            {
                "conversations": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        )
        == "chat"
    )
    assert schema.kind({"text": ""}) == "bad"
    assert schema.kind(None) == "bad"


def test_problem_formats_as_line_n_reason():
    assert str(schema.Problem(7, "empty line")) == "line 7: empty line"
    assert str(schema.Problem(2, "x", "item")) == "item 2: x"


def test_split_context_and_qa_pairs():
    assert schema.split_context("A long text.\n\nMore text.\n\nWhat now?") == (
        "A long text.\n\nMore text.",
        "What now?",
    )
    assert schema.split_context("Just a question?") == ("", "Just a question?")
    assert schema.split_context("x" * 3000) == ("x" * 3000, "")
    record = {
        "conversations": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Doc.\n\nQ1?"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2?"},
            {"role": "assistant", "content": "A2"},
        ]
    }
    assert schema.qa_pairs(record) == [(2, "Q1?", "A1"), (4, "Q2?", "A2")]
    assert schema.context(record) == "Doc."
    assert schema.context({"text": "T"}) == "T"


def test_metadata_readers():
    assert schema.sample_id({"id": 17}, 3) == "17"
    assert schema.sample_id({"text": "x"}, 3) == "3"
    assert schema.task({"task": "one_detail"}) == "one_detail"
    assert schema.task({"source": "redpajama"}) == "redpajama"
    assert schema.task(None) == "-"
