"""What a training sample is, and what is wrong with one.

The paper's format, one JSON object per row:

- chat: `{"conversations": [{"role": "user", "content": "<context>\\n\\n<Q1>"},
  {"role": "assistant", "content": "<A1>"}, {"role": "user", "content": "<Q2>"}, ...]}`,
  optionally opened by one `system` turn;
- text: `{"text": "..."}`;
- any other key is metadata (`id`, `task`, `source`, ...) that we carry and never touch.

Validation never stops at the first problem and never repairs anything: it returns every reason,
worded so the user knows what to change. This module does no I/O and knows nothing about
tokenizers, files or the UI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

try:  # orjson parses long rows several times faster; the stdlib is the reference either way
    import orjson
except ImportError:  # pragma: no cover - orjson comes with gradio
    orjson = None

ROLES = ("system", "user", "assistant")
CHAT, TEXT, BAD = "chat", "text", "bad"
_BOM = b"\xef\xbb\xbf"
# A first user turn shorter than this with no blank line is a question, not a context.
_SHORT_PROMPT = 2000


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one row. `line` is 1-based (a JSONL line, or an item/row number)."""

    line: int
    reason: str
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.unit} {self.line}: {self.reason}"


def decode(raw: bytes, *, exact: bool = False) -> tuple[Any, str | None]:
    """Parse one JSON row. Returns (value, None) or (None, reason); never raises.

    orjson is used for speed; it reads integers beyond 64 bits as floats, so a record that is
    going to be written back after an edit is decoded with `exact=True` (the stdlib only).
    """
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if not raw.strip():
        return None, "empty line"
    if orjson is not None and not exact:
        try:
            return orjson.loads(raw), None
        except orjson.JSONDecodeError:
            pass  # the stdlib decides: it accepts a few things orjson refuses (NaN, huge ints)
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"bad JSON: not valid UTF-8 at byte {exc.start + 1}"
    except json.JSONDecodeError as exc:
        return None, f"bad JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}"
    except RecursionError:
        return None, "bad JSON: nested too deeply"
    try:  # `\ud800` escapes decode to lone surrogates, which no tokenizer can encode
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return None, "bad JSON: holds an unpaired UTF-16 surrogate escape (not valid Unicode)"
    except (RecursionError, ValueError):
        return None, "bad JSON: nested too deeply"
    return value, None


def check(record: Any) -> list[str]:
    """Every reason this decoded row is not a valid sample; empty when it is one."""
    if not isinstance(record, dict):
        return [f"not a JSON object (got {_json_type(record)})"]
    has_conv, has_text = "conversations" in record, "text" in record
    if has_conv and has_text:
        return ["has both 'conversations' and 'text'; keep one"]
    if has_conv:
        return check_conversation(record["conversations"])
    if has_text:
        text = record["text"]
        if not isinstance(text, str):
            return [f"'text' is not a string (got {_json_type(text)})"]
        return [] if text.strip() else ["'text' is empty"]
    return ["neither 'conversations' nor 'text'"]


def check_conversation(conv: Any) -> list[str]:
    """Reasons a `conversations` list is malformed (turns are numbered from 1)."""
    if not isinstance(conv, list):
        return [f"'conversations' is not a list (got {_json_type(conv)})"]
    if not conv:
        return ["'conversations' is empty"]
    problems: list[str] = []
    roles: list[str | None] = []
    for n, turn in enumerate(conv, 1):
        role, reasons = _check_turn(n, turn)
        roles.append(role)
        problems += reasons
    problems += _check_order(roles)
    return problems


def _check_turn(n: int, turn: Any) -> tuple[str | None, list[str]]:
    if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
        return None, [f"turn {n} is not an object with 'role' and 'content'"]
    role, content = turn["role"], turn["content"]
    reasons = []
    if role not in ROLES:
        hint = " (ShareGPT 'human'/'gpt' must be converted)" if role in ("human", "gpt") else ""
        reasons.append(f"turn {n}: unknown role {role!r}; use system, user or assistant{hint}")
        role = None
    if not isinstance(content, str):
        reasons.append(f"turn {n}: 'content' is not a string (got {_json_type(content)})")
    elif not content.strip():
        reasons.append(f"turn {n} ({role or '?'}) has empty content")
    return role, reasons


def _check_order(roles: list[str | None]) -> list[str]:
    """First turn user (after an optional system turn), then user/assistant alternating."""
    problems = []
    start = 1 if roles and roles[0] == "system" else 0
    for n, role in enumerate(roles[start:], start + 1):
        if role == "system":
            problems.append(f"turn {n}: a system turn is only allowed first")
    body = roles[start:]
    if not body:
        return problems + ["no user turn after the system turn"]
    if body[0] is not None and body[0] != "user":
        problems.append(f"first turn is not user (it is {body[0]!r})")
    for k in range(1, len(body)):
        prev, role = body[k - 1], body[k]
        if role is None or prev is None or role == "system" or prev == "system":
            continue
        if role == prev:
            problems.append(
                f"roles do not alternate user/assistant: turn {start + k + 1} is {role!r} "
                f"after {prev!r}"
            )
    if body[-1] == "user":
        problems.append("last turn is a user question without an answer")
    return problems


def parse(raw: bytes, *, exact: bool = False) -> tuple[dict | None, list[str]]:
    """Decode and check one raw row: (record or None, reasons)."""
    value, error = decode(raw, exact=exact)
    if error:
        return None, [error]
    return (value if isinstance(value, dict) else None), check(value)


def kind(record: Any, problems: list[str] | None = None) -> str:
    """`chat`, `text`, or `bad` (a row that is not a valid sample)."""
    if problems is None:
        problems = check(record)
    if problems or not isinstance(record, dict):
        return BAD
    return CHAT if "conversations" in record else TEXT


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


# ---------------------------------------------------------------------------------------------
# Reading the parts of a (valid) sample.


def sample_id(record: dict | None, index: int) -> str:
    """The row's `id` if it has one, else its 0-based position."""
    if isinstance(record, dict) and record.get("id") not in (None, ""):
        return str(record["id"])
    return str(index)


def task(record: dict | None) -> str:
    """The row's `task` (or `source`) metadata, `-` when there is none."""
    if not isinstance(record, dict):
        return "-"
    value = record.get("task") or record.get("source") or "-"
    return str(value)


def split_context(content: str) -> tuple[str, str]:
    """Split a first user turn `<context>\\n\\n<question>` into (context, question).

    The question is the last paragraph; a short turn with no blank line is all question.
    """
    head, sep, tail = content.rpartition("\n\n")
    if sep and tail.strip():
        return head, tail
    if len(content) < _SHORT_PROMPT:
        return "", content
    return content, ""


def turns(record: dict) -> list[dict]:
    """The conversation of a chat record (empty for text records)."""
    conv = record.get("conversations") if isinstance(record, dict) else None
    return conv if isinstance(conv, list) else []


def qa_pairs(record: dict) -> list[tuple[int, str, str]]:
    """(assistant turn index, question, answer) for each answered user turn.

    The first question is taken from the end of the context turn (see `split_context`).
    """
    conv = turns(record)
    pairs = []
    first_user = next((i for i, t in enumerate(conv) if t.get("role") == "user"), None)
    for i in range(1, len(conv)):
        user, answer = conv[i - 1], conv[i]
        if answer.get("role") != "assistant" or user.get("role") != "user":
            continue
        question = str(user.get("content", ""))
        if i - 1 == first_user:
            question = split_context(question)[1]
        pairs.append((i, question, str(answer.get("content", ""))))
    return pairs


def context(record: dict) -> str:
    """The long context: the first user turn without its question (or the whole text)."""
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record["text"]
    for turn in turns(record):
        if turn.get("role") == "user":
            return split_context(str(turn.get("content", "")))[0]
    return ""
