"""core.chat: message building, documents, context budget (exact against the tokenizer)."""

from __future__ import annotations

import pytest

from core import chat
from core.errors import ConfigError, LongCtxError
from core.models.loader import ModelSpec


def test_document_goes_before_the_first_user_message():
    history = [
        {"role": "user", "content": "Who wrote it?"},
        {"role": "assistant", "content": "Ann."},
    ]
    messages = chat.build_messages("And when?", history, system="Be brief.", document="DOC")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "DOC\n\nWho wrote it?"},
        {"role": "assistant", "content": "Ann."},
        {"role": "user", "content": "And when?"},
    ]
    # The history itself is not modified: the document is added on every send.
    assert history[0]["content"] == "Who wrote it?"


def test_message_parts_are_flattened_and_empty_chats_refused():
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi "}, {"text": "there"}]}]
    assert chat.build_messages("", parts)[0]["content"] == "hi there"
    with pytest.raises(LongCtxError, match="write a message first"):
        chat.build_messages("  ", [])


def test_read_document_bounds_type_and_size(tmp_path):
    good = tmp_path / "book.md"
    good.write_text("Chapter 1\n\nIt was a dark night.")
    assert chat.read_document(good).startswith("Chapter 1")
    with pytest.raises(LongCtxError, match="paper.docx: not a document this app reads"):
        chat.read_document(tmp_path / "paper.docx")
    with pytest.raises(LongCtxError, match="the limit is"):
        chat.read_document(good, max_bytes=10)


def test_pending_messages_are_what_send_would_send():
    history = [{"role": "user", "content": "doc question"}, {"role": "assistant", "content": "A"}]
    # Typing a follow-up: the whole conversation plus the new message.
    assert chat.pending_messages("next?", history, document="DOC") == chat.build_messages(
        "next?", history, document="DOC"
    )
    # After a reply, with the box empty: the conversation alone, document still first.
    pending = chat.pending_messages("", history, system="S", document="DOC")
    assert [m["role"] for m in pending] == ["system", "user", "assistant"]
    assert pending[1]["content"].startswith("DOC")
    # Nothing written yet: one user turn holding just the document, never an error.
    assert chat.pending_messages("", [], document="DOC") == [{"role": "user", "content": "DOC\n\n"}]
    assert chat.pending_messages("  ", None) == [{"role": "user", "content": ""}]


def test_endpoint_target_is_validated():
    with pytest.raises(ConfigError) as info:
        chat.ChatTarget(kind=chat.ENDPOINT, base_url="localhost:8000")
    assert len(info.value.problems) == 2


@pytest.mark.integration
def test_budget_is_exact_for_local_models(embedded_tokenizer):
    target = chat.ChatTarget(spec=ModelSpec())
    messages = chat.build_messages("Summarize.", [], document="word " * 3000)
    result = chat.budget(target, messages, max_tokens=256)
    expected = len(
        embedded_tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    )
    assert result.exact and result.prompt_tokens == expected and result.window == 8192
    assert not result.over
    over = chat.budget(target, chat.build_messages("x", [], document="word " * 9000), 256)
    assert over.over and "over the window" in over.message()
    # A RoPE window override changes the budget's window, not the count.
    wide = chat.ChatTarget(spec=ModelSpec(max_position_embeddings=32768))
    assert chat.budget(wide, messages, 256).window == 32768


@pytest.mark.integration
def test_endpoint_chat_streams_through_our_server(embedded):
    from core.models.generation import SamplingParams
    from core.serve.background import BackgroundServer

    with BackgroundServer(embedded) as server:
        target = chat.ChatTarget(
            kind=chat.ENDPOINT, base_url=server.base_url, endpoint_model="embedded"
        )
        messages = chat.build_messages("What is the capital of France?")
        chunks = list(
            chat.stream_reply(target, messages, SamplingParams(temperature=0, max_tokens=20))
        )
        assert "Paris" in "".join(c.text for c in chunks)
        assert chunks[-1].finish_reason == "stop" and chunks[-1].prompt_tokens > 10
        assert chat.endpoint_window(server.base_url, "", "embedded") == 8192
        wrong = chat.ChatTarget(
            kind=chat.ENDPOINT, base_url=server.base_url, endpoint_model="gpt-9"
        )
        with pytest.raises(LongCtxError, match="answered 404"):
            list(chat.stream_reply(wrong, messages, SamplingParams(max_tokens=5)))


def test_a_conversation_becomes_a_training_sample_with_only_answered_questions(tmp_path):
    from core.data import io, schema

    history = [
        {"role": "user", "content": "Where is the harbour?"},
        {"role": "assistant", "content": "In the north."},
        {"role": "user", "content": "How deep is it?"},
        {"role": "assistant", "content": ""},  # stopped before a word came
        {"role": "user", "content": "Who built it?"},
        {"role": "assistant", "content": [{"type": "text", "text": "The monks."}]},
        {"role": "user", "content": "And when?"},  # never answered
    ]
    record = chat.as_sample(history, "Be brief.", "The harbour log.", model="embedded")
    assert record["conversations"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "The harbour log.\n\nWhere is the harbour?"},
        {"role": "assistant", "content": "In the north."},
        {"role": "user", "content": "Who built it?"},
        {"role": "assistant", "content": "The monks."},
    ]
    assert record["source"] == "chat" and record["model"] == "embedded"
    assert not schema.check(record)  # a valid training sample
    with pytest.raises(LongCtxError, match="no answer to keep yet"):
        chat.as_sample(history[-1:])

    path = tmp_path / "kept.jsonl"
    path.write_bytes(b'{"text": "an old row without its newline"}')
    assert io.append_jsonl(path, record) == 2
    assert io.append_jsonl(path, record) == 3
    rows = io.validate(io.open_source(str(path)))
    assert rows.rows == 3 and not rows.problems


@pytest.mark.integration
def test_a_document_too_long_is_cut_in_the_middle_to_fit(embedded):
    target = chat.ChatTarget(kind=chat.LOCAL, spec=embedded.spec)
    document = (
        "START of the log. " + " ".join(f"Entry {i}: calm sea." for i in range(4000)) + " END."
    )
    full = chat.budget(target, chat.build_messages("Summarize.", [], "", document), 256)
    assert full.over and full.prompt_tokens > 20000
    trimmed, cut = chat.fit_document(target, "Summarize.", [], "", document, 256)
    after = chat.budget(target, chat.build_messages("Summarize.", [], "", trimmed), 256)
    assert not after.over and after.prompt_tokens > 8192 - 256 - 200  # uses the room it has
    assert trimmed.startswith("START of the log.") and trimmed.endswith("END.")
    assert f"[… {cut:,} tokens cut from the middle …]" in trimmed and cut > 12000
    assert chat.fit_document(target, "Summarize.", [], "", trimmed, 256) == (
        trimmed,
        0,
    )  # fits already
    long_chat = [{"role": "user", "content": "x " * 9000}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(LongCtxError, match="conversation alone leaves no room"):
        chat.fit_document(target, "", long_chat, "", document, 256)


def test_a_fast_stream_reaches_the_browser_ten_times_a_second_with_nothing_lost():
    from core.models.generation import Chunk

    times = iter([0.0, *(0.01 * i for i in range(1, 40)), 0.395])  # 40 tokens in 0.4 s
    tokens = [Chunk(f"t{i} ") for i in range(39)] + [Chunk("end", "length", 7, 40)]
    reading = Chunk("", read=512, prompt_tokens=1024)
    out = list(chat.coalesced(iter([reading, *tokens]), every=0.1, clock=lambda: next(times)))
    assert out[0] is reading  # progress through the prompt is not held back
    text = out[1:]
    assert len(text) == 4  # at 0.1, 0.2, 0.3 s and the last chunk
    assert "".join(c.text for c in text) == "".join(t.text for t in tokens)
    assert (text[-1].finish_reason, text[-1].prompt_tokens, text[-1].completion_tokens) == (
        "length",
        7,
        40,
    )
    assert all(c.finish_reason is None for c in text[:-1])


def test_a_stream_without_a_last_chunk_keeps_its_tail():
    from core.models.generation import Chunk

    times = iter([0.0, 0.01, 0.02])
    out = list(chat.coalesced(iter([Chunk("a"), Chunk("b")]), every=0.1, clock=lambda: next(times)))
    assert [c.text for c in out] == ["ab"]
