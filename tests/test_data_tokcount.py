"""The fast token counter gives the tokenizer's own counts, on any text."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_support import embedded_tokenizer, llama3_tokenizer

from core.data import tokcount
from core.data.tokcount import TokenCounter, overlaps

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|start_header_id|>", "<|endoftext|>"]
TEXT = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(SPECIALS + ["'s", "'LL", " ", "\n\n", "\r\n", "  x", "12345", "é", "👍🏽"]),
    ),
    max_size=30,
).map("".join)


@pytest.fixture(scope="module", params=["chatml", "llama3"])
def tok(request):
    return embedded_tokenizer() if request.param == "chatml" else llama3_tokenizer()


@pytest.fixture(scope="module")
def counter(tok):
    return TokenCounter(tok)


def _reference(tok, text):
    return len(tok(text, add_special_tokens=False)["input_ids"])


def test_fast_path_is_on_for_both_pipelines(counter):
    assert counter.fast and counter.pipeline in ("ByteLevel", "Split+ByteLevel")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=TEXT)
def test_counts_equal_the_tokenizer(tok, counter, text):
    assert counter.count(text) == _reference(tok, text)


def test_every_bmp_character_in_context(tok, counter):
    """All BMP code points (not surrogates) in several positions, as one long text per block."""
    for block in range(0, 0x10000, 0x1000):
        chars = [chr(c) for c in range(block, block + 0x1000) if not 0xD800 <= c < 0xE000]
        text = "".join(f"a{c}b {c}{c}1 '{c}'s {c}\n" for c in chars)
        assert counter.count(text) == _reference(tok, text), hex(block)


def test_count_by_spans_matches_offsets(tok, counter):
    text = tok.apply_chat_template(
        [
            {"role": "user", "content": "Hello there, friend.\n\nQ?"},
            {"role": "assistant", "content": " Sure thing."},
        ],
        tokenize=False,
    )
    for starts, loss in [([0, 10, 40], [(12, 30)]), ([0, 7], [(7, 8), (20, len(text))]), ([0], [])]:
        assert counter.count_by_spans(text, starts, loss) == _by_offsets(tok, text, starts, loss)


def _by_offsets(tok, text, starts, loss):
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    tokens, losses = [0] * len(starts), [0] * len(starts)
    for s, e in enc["offset_mapping"]:
        r = max(k for k, start in enumerate(starts) if start <= s)
        tokens[r] += 1
        losses[r] += overlaps(s, e, loss)
    return tokens, losses


def test_unsupported_pipelines_fall_back_to_the_tokenizer():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(embedded_tokenizer().backend_tokenizer.to_str())
    spec["normalizer"] = {"type": "NFC"}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    counter = TokenCounter(tok)
    assert not counter.fast and "normalizer" in counter.pipeline
    text = "Cafe\u0301 <|im_end|> x"
    assert counter.count(text) == _reference(tok, text)
    spans = ([0, 5], [(6, 16)])
    assert counter.count_by_spans(text, *spans) == _by_offsets(tok, text, *spans)


def test_unassigned_characters_go_to_the_tokenizer(counter, tok):
    text = "abc \U000e0ffe def"  # unassigned: the two regex engines may disagree on it
    assert not tokcount._safe_text(text)
    assert counter.count(text) == _reference(tok, text)


def test_overlaps_rule():
    spans = [(5, 10), (20, 30)]
    assert overlaps(4, 6, spans) and overlaps(9, 12, spans) and overlaps(25, 25, spans)
    assert not overlaps(0, 5, spans) and not overlaps(10, 20, spans) and not overlaps(20, 20, spans)
