"""Streaming generation on the embedded model: answers, stop strings, limits, cancellation."""

from __future__ import annotations

import threading

import pytest

from core.errors import ConfigError
from core.models.generation import (
    PromptTooLong,
    SamplingParams,
    _safe_prefix_len,
    complete_chat,
    stream_chat,
)

pytestmark = pytest.mark.integration
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_greedy_answer_streams_in_pieces_with_usage(embedded):
    chunks = list(stream_chat(embedded, QUESTION, SamplingParams(temperature=0, max_tokens=30)))
    text = "".join(c.text for c in chunks)
    assert "Paris" in text
    assert len([c for c in chunks if c.text]) > 3
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.prompt_tokens == len(
        embedded.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)["input_ids"]
    )
    assert last.completion_tokens == len(embedded.tokenizer(text)["input_ids"])


def test_stop_string_is_cut_from_the_answer(embedded):
    reply = complete_chat(embedded, QUESTION, SamplingParams(temperature=0, stop=["Paris"]))
    assert reply.finish_reason == "stop"
    assert "Paris" not in reply.text and reply.text.startswith("The capital")


def test_max_tokens_and_seed(embedded):
    poem = [{"role": "user", "content": "Write a long poem about the sea."}]
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=12, seed=7)
    first, second = complete_chat(embedded, poem, params), complete_chat(embedded, poem, params)
    assert first.finish_reason == "length" and first.completion_tokens == 12
    assert first.text == second.text


def test_cancel_stops_between_tokens(embedded):
    cancel = threading.Event()
    stream = stream_chat(
        embedded,
        [{"role": "user", "content": "Count from 1 to 500."}],
        SamplingParams(temperature=0, max_tokens=400),
        cancel,
    )
    next(stream)
    cancel.set()
    rest = list(stream)
    assert rest[-1].finish_reason == "cancelled" and rest[-1].completion_tokens < 10


LONG = [
    {
        "role": "user",
        "content": "The harbour log, day by day: "
        + " ".join(f"Day {i}: {i % 7} ships came in and {i % 5} left." for i in range(30))
        + " How many ships came in on day 12?",
    }
]


def test_a_long_prompt_is_read_in_pieces_with_progress_and_the_same_answer(embedded):
    params = SamplingParams(temperature=0, max_tokens=12)
    whole = list(stream_chat(embedded, LONG, params))
    pieces = list(stream_chat(embedded, LONG, params, prefill_chunk=64))
    n = whole[-1].prompt_tokens
    assert n > 300
    reads = [c.read for c in pieces if c.read is not None]
    assert reads == list(range(64, n, 64))[: (n - 1) // 64]  # after every piece but the last
    assert all(c.text == "" for c in pieces if c.read is not None)
    assert [c.read for c in whole] == [None] * len(whole)  # one piece: no progress chunks
    answer = "".join(c.text for c in pieces)
    assert answer == "".join(c.text for c in whole) and answer.strip()
    assert pieces[-1].completion_tokens == whole[-1].completion_tokens


def test_stop_while_a_long_prompt_is_read(embedded):
    cancel = threading.Event()
    stream = stream_chat(embedded, LONG, SamplingParams(temperature=0), cancel, prefill_chunk=64)
    assert next(stream).read == 64
    cancel.set()
    rest = list(stream)
    assert len(rest) == 1 and rest[0].finish_reason == "cancelled"
    assert rest[0].completion_tokens == 0


def test_prompt_longer_than_window_is_refused(embedded):
    long_text = "word " * 9000
    with pytest.raises(PromptTooLong, match="window is 8192"):
        list(stream_chat(embedded, [{"role": "user", "content": long_text}]))


def test_bad_params_are_refused_together():
    with pytest.raises(ConfigError) as info:
        SamplingParams(max_tokens=0, temperature=3, top_p=0)
    assert len(info.value.problems) == 3


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [("hello Ob", ["Observation"], 6), ("hello", ["Observation"], 5), ("a\n", ["\n\n"], 1)],
)
def test_partial_stop_strings_are_held_back(text, stops, expected):
    assert _safe_prefix_len(text, stops) == expected


def test_a_stream_can_be_resumed_from_other_threads(embedded):
    """gradio pulls each chunk of a streaming callback on whichever worker thread is free."""
    stream = stream_chat(embedded, QUESTION, SamplingParams(temperature=0, max_tokens=12))
    chunks: list = []

    def pull() -> None:
        chunks.append(next(stream, None))

    while not chunks or chunks[-1] is not None:
        worker = threading.Thread(target=pull)  # a fresh thread for every chunk
        worker.start()
        worker.join()
    chunks.pop()
    assert "Paris" in "".join(c.text for c in chunks)
