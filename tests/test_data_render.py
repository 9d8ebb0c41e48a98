"""render_sample: exact label masks on hand-built conversations under a ChatML and a Llama-3 template,
identity with apply_chat_template, truncation and dropping, text samples."""

from __future__ import annotations

import random

import pytest
from test_data_support import TWO_TURNS, embedded_tokenizer, llama3_tokenizer

from core.data import render, view
from core.data.render import IGNORE, render_sample
from core.errors import ConfigError, LongCtxError

CONV = [
    {"role": "user", "content": "Hi there.\n\nWhy?"},
    {"role": "assistant", "content": "Because."},
]
X = IGNORE


def test_chatml_mask_is_exact():
    tok = embedded_tokenizer()
    out = render_sample(tok, {"conversations": CONV})
    # <|im_start|>system\n...<|im_end|>\n<|im_start|>user\nHi there.\n\nWhy?<|im_end|>\n
    # <|im_start|>assistant\n  Because  .  <|im_end|>  \n
    assert out.input_ids[-8:] == [1, 520, 9531, 198, 8653, 30, 2, 198]
    assert out.labels == [X] * 37 + [8653, 30, 2, X]
    assert out.per_turn() == [
        {"turn": 1, "role": "user", "tokens": 33, "loss_tokens": 0},
        {"turn": 2, "role": "assistant", "tokens": 8, "loss_tokens": 3},
    ]
    assert out.text[slice(*out.loss_spans[0])] == "Because.<|im_end|>"


def test_llama3_mask_is_exact():
    tok = llama3_tokenizer()
    out = render_sample(tok, CONV)
    bos, start, end, eot = (
        tok.convert_tokens_to_ids(t)
        for t in ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    )
    assert out.input_ids == [
        bos,
        start,
        4093,
        end,
        1116,
        26843,
        665,
        30,
        1116,
        4898,
        47,
        eot,
        start,
        520,
        9531,
        end,
        1116,
        8653,
        30,
        eot,
    ]
    assert out.labels == [X] * 17 + [8653, 30, eot]
    assert [t.loss_tokens for t in out.turns] == [0, 3]


@pytest.mark.parametrize("make", [embedded_tokenizer, llama3_tokenizer])
def test_two_qa_turns_label_each_answer_and_its_end_token(make):
    tok = make()
    out = render_sample(tok, TWO_TURNS)
    labelled = [
        tok.decode([t]) for t, lab in zip(out.input_ids, out.labels, strict=True) if lab != IGNORE
    ]
    eot = "<|im_end|>" if make is embedded_tokenizer else "<|eot_id|>"
    assert labelled == ["An", " answer", ".", eot, "A", "2", eot]
    assert [t.loss_tokens for t in out.turns] == [0, 4, 0, 3]
    assert sum(t.n_tokens for t in out.turns) == out.length


@pytest.mark.parametrize("make", [embedded_tokenizer, llama3_tokenizer])
def test_ids_equal_apply_chat_template_on_odd_contents(make):
    tok = make()
    rng = random.Random(3)
    alphabet = list("ab é\n\t's1 .,日👍") + ["<|im_end|>", "<|eot_id|>", "  ", "\n\n"]
    for _ in range(60):
        conv = [{"role": "system", "content": "Sys " + "".join(rng.choices(alphabet, k=5))}]
        for _ in range(rng.randint(1, 3)):
            conv.append({"role": "user", "content": "u" + "".join(rng.choices(alphabet, k=20))})
            answer = rng.choice(["", " ", "\n"]) + "a" + "".join(rng.choices(alphabet, k=15))
            conv.append({"role": "assistant", "content": answer})
        out = render_sample(tok, conv)
        assert out.input_ids == tok.apply_chat_template(conv, tokenize=True)["input_ids"]
        assert [t.role for t in out.turns] == [m["role"] for m in conv]
        assert all(t.loss_tokens > 0 for t in out.turns if t.role == "assistant")
        assert all(t.loss_tokens == 0 for t in out.turns if t.role != "assistant")


def test_text_samples_train_on_every_token():
    tok = embedded_tokenizer()
    out = render_sample(tok, {"text": "Plain pretraining text."})
    assert out.input_ids == tok("Plain pretraining text.")["input_ids"]
    assert out.labels == out.input_ids and out.kind == "text"


def test_drop_and_truncate_middle():
    tok = embedded_tokenizer()
    long = [
        {"role": "user", "content": "word " * 300 + "\n\nQ?"},
        {"role": "assistant", "content": "Yes."},
    ]
    full = render_sample(tok, long)
    dropped = render_sample(tok, long, max_length=100)
    assert dropped.dropped and dropped.input_ids == full.input_ids
    cut = render_sample(tok, long, max_length=100, overflow="truncate_middle")
    assert not cut.dropped and len(cut.input_ids) == len(cut.labels) == 100
    assert cut.labels[-4:] == full.labels[-4:] and cut.loss_tokens == full.loss_tokens
    a, b = cut.cut
    assert cut.input_ids == full.input_ids[:a] + full.input_ids[b:]
    assert all(lab == IGNORE for lab in full.labels[a:b])
    kept = render_sample(tok, long, max_length=10_000)
    assert not kept.dropped and kept.cut is None


def test_head_keeps_a_texts_first_tokens_and_eos_and_drops_a_long_conversation():
    tok = embedded_tokenizer()
    text = "The river ran past old mills and quiet farms toward a grey sea. " * 30
    ids = tok(text)["input_ids"]
    assert len(ids) > 100
    head = render_sample(tok, {"text": text}, max_length=100, overflow="head")
    assert head.input_ids == ids[:99] + [tok.eos_token_id] and head.labels == head.input_ids
    assert head.cut == (99, len(ids)) and not head.dropped
    # What the Data tab shows: the head, a cut marker for the tail, EOS carrying loss.
    pieces = view.highlight(head, fold_chars=None)
    assert [tag for _, tag in pieces] == [view.LOSS, view.CUT, view.LOSS]
    assert pieces[1][0] == f"[… {len(ids) - 99:,} tokens cut …]"
    assert pieces[2][0].endswith(tok.eos_token)
    # A text that fits ends with EOS too (the paper appends it to every text sample).
    short = render_sample(tok, {"text": "Plain text."}, max_length=100, overflow="head")
    assert short.input_ids == tok("Plain text.")["input_ids"] + [tok.eos_token_id]
    assert short.cut is None and short.text == "Plain text." + tok.eos_token
    # A conversation's answers are at its end: its head would train on none of them.
    long_chat = [
        {"role": "user", "content": "word " * 300 + "\n\nQ?"},
        {"role": "assistant", "content": "Yes."},
    ]
    assert render_sample(tok, long_chat, max_length=100, overflow="head").dropped
    fits = render_sample(tok, CONV, max_length=100, overflow="head")
    assert fits.input_ids == render_sample(tok, CONV).input_ids and not fits.dropped


def test_errors_say_what_to_fix():
    tok = embedded_tokenizer()
    with pytest.raises(LongCtxError, match="malformed sample: first turn is not user"):
        render_sample(tok, [{"role": "assistant", "content": "a"}])
    with pytest.raises(ConfigError, match="overflow"):
        render_sample(tok, CONV, overflow="wrap")
    bare = llama3_tokenizer().__class__(tokenizer_object=tok.backend_tokenizer)
    with pytest.raises(LongCtxError, match="no chat template"):
        render_sample(bare, CONV)


def test_template_that_rewrites_contents_falls_back_to_the_generation_prompt():
    tok = embedded_tokenizer()
    upper = tok.chat_template.replace("message['content']", "message['content'] | upper")
    lay = render.layout(_with_template(tok, upper), CONV)
    assert lay.text[slice(*lay.loss[0])] == "BECAUSE.<|im_end|>"


def _with_template(tok, template):
    import copy

    clone = copy.deepcopy(tok)
    clone.chat_template = template
    return clone


def test_highlight_marks_loss_and_folds_long_context():
    tok = embedded_tokenizer()
    conv = [
        {"role": "user", "content": "word " * 2000 + "\n\nQ?"},
        {"role": "assistant", "content": "Yes."},
    ]
    out = render_sample(tok, conv, max_length=1000, overflow="truncate_middle")
    pieces = view.highlight(out, fold_chars=200)
    assert [tag for _, tag in pieces].count("loss") == 1
    assert ("Yes.<|im_end|>", "loss") in pieces
    assert any(tag == "cut" for _, tag in pieces)
    assert sum(len(text) for text, tag in pieces if tag is None) < 2000


def test_turn_views_fold_the_context_and_locate_evidence():
    record = {
        "conversations": [
            {
                "role": "user",
                "content": "Filler words here. " * 200
                + "The key is under the blue mat.\n\nWhere is the key?",
            },
            {"role": "assistant", "content": "Under the blue mat."},
            {"role": "user", "content": "Short follow-up?"},
            {"role": "assistant", "content": "Yes."},
        ]
    }
    views = view.turn_views(record, head=100, tail=100)
    assert [v.role for v in views] == ["user", "assistant", "user", "assistant"]
    first = views[0]
    assert len(first.head) == 100 and first.tail.endswith("Where is the key?")
    assert first.hidden == first.chars - 200 and first.question == "Where is the key?"
    assert views[1].evidence.depth > 90 and views[1].evidence.score == 1.0
    assert views[2].hidden == 0 and views[2].head == "Short follow-up?"
    no_context = {"conversations": record["conversations"][2:]}
    assert [v.evidence for v in view.turn_views(no_context)] == [None, None]
