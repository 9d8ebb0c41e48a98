"""Helpers shared by the tests/test_data_*.py files (no tests here).

A tokenizer with a Llama-3-style pipeline is built from the embedded one: its vocabulary, the
Llama-3 Split + ByteLevel pre-tokenizer and special tokens, and the Llama-3-Instruct chat
template (which trims contents and writes `<|eot_id|>` after each turn).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

TWO_TURNS = [
    {"role": "user", "content": "Context here.\n\nWhat?"},
    {"role": "assistant", "content": "An answer."},
    {"role": "user", "content": "Q2"},
    {"role": "assistant", "content": "A2"},
]


@functools.cache
def embedded_tokenizer():
    from core.models.tokenizers import load_tokenizer

    return load_tokenizer("embedded")


@functools.cache
def llama3_tokenizer():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from core.data.tokcount import LLAMA3_PATTERN

    spec = json.loads(embedded_tokenizer().backend_tokenizer.to_str())
    spec["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": LLAMA3_PATTERN},
                "behavior": "Isolated",
                "invert": False,
            },
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": True,
                "use_regex": False,
            },
        ],
    }
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    tok.add_special_tokens(
        {
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"],
        }
    )
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


def write_jsonl(path: Path, rows: list, *, newline_at_end: bool = True) -> Path:
    """Rows are dicts (dumped) or str (written as they are, e.g. broken JSON)."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""), encoding="utf-8")
    return path


def chat(context: str, *qa: str, **meta) -> dict:
    """A chat record: the first question follows the context after a blank line."""
    conv = []
    for k in range(0, len(qa), 2):
        question = f"{context}\n\n{qa[k]}" if k == 0 else qa[k]
        conv += [{"role": "user", "content": question}, {"role": "assistant", "content": qa[k + 1]}]
    return {**meta, "conversations": conv}


# A paper-format file with broken rows mixed in, and the exact problems expected.
PAPER_ROWS = [
    chat(
        "The castle stood on a hill. " * 40,
        "Where was the castle?",
        "On a hill.",
        id="a",
        task="qa",
    ),
    '{"conversations": [{"role": "user", "content": "broken',
    chat("Ships sail at dawn. " * 30, "When do ships sail?", "At dawn.", "Why?", "Tides.", id="b"),
    {"conversations": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]},
    {"text": "A plain RedPajama-style text sample."},
    {"id": "c"},
    {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
    "",
    {"conversations": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}]},
]
PAPER_PROBLEMS = [
    "line 2: bad JSON: Unterminated string starting at column 48",
    "line 4: first turn is not user (it is 'assistant')",
    "line 4: last turn is a user question without an answer",
    "line 6: neither 'conversations' nor 'text'",
    "line 7: turn 2 (assistant) has empty content",
    "line 8: empty line",
    "line 9: roles do not alternate user/assistant: turn 2 is 'user' after 'user'",
    "line 9: last turn is a user question without an answer",
]
