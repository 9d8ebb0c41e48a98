"""Import other instruction formats into ours: Alpaca / LongAlpaca, ShareGPT, OpenAI messages.

- Alpaca and LongAlpaca: `{"instruction", "input", "output"}` (optional `system`, and
  LLaMA-Factory's `history` of earlier [question, answer] pairs) -> a user turn (the instruction,
  then the input after a blank line, as Alpaca's own prompt orders them) and an assistant turn;
- ShareGPT: `{"conversations": [{"from": "human" | "gpt" | "system", "value": ...}]}`;
- OpenAI chat: `{"messages": [{"role", "content"}]}`, content a string or a list of text parts;
- rows already in our format (`conversations` with role/content, or `text`) pass unchanged.

Every other key is metadata and is kept as it is; one that would collide with our keys (the
original Alpaca's pre-rendered `text`) is kept as `original_<key>`. Nothing is repaired: a row
that converts into an invalid sample (an empty answer, roles that do not alternate, a tool turn)
is listed with its line and the reason, as `longctx data validate` words it.

Reads through `core.data.io` (JSONL, JSON arrays, Parquet, save_to_disk folders, Hub datasets)
and knows nothing about tokenizers or the UI.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data import io, schema
from core.data.rows import HUB_PREFIX
from core.errors import ConfigError, LongCtxError

FORMATS = ("auto", "alpaca", "sharegpt", "openai")
OURS = "ours"
# ShareGPT speakers, as the common exports name them.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
ALPACA_KEYS = ("instruction", "input", "output", "system", "history")


class RowError(ValueError):
    """A row that cannot be converted; the message is the reason shown with its line."""


def detect(record: Any) -> str:
    """The format one decoded row is in: `alpaca`, `sharegpt`, `openai` or `ours`."""
    if not isinstance(record, dict):
        raise RowError(f"not a JSON object (got {type(record).__name__})")
    if "messages" in record:
        return "openai"
    turns = record.get("conversations")
    if isinstance(turns, list) and any(isinstance(t, dict) and "from" in t for t in turns):
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    if "conversations" in record or "text" in record:
        return OURS
    keys = ", ".join(sorted(map(str, record))[:6]) or "none"
    raise RowError(
        "not Alpaca (instruction/output), ShareGPT (conversations of from/value), OpenAI "
        f"(messages) or ours (conversations/text); its keys: {keys}"
    )


def convert_record(record: Any, fmt: str = "auto") -> tuple[dict, str]:
    """One row in our format, and the format it was read as (`fmt` other than `auto` only
    refuses rows in another format; rows already in ours pass either way).

    Raises:
        RowError: the row is not in that format, or converts into an invalid sample.
    """
    found = detect(record)
    if fmt != "auto" and found not in (fmt, OURS):
        raise RowError(f"not a {fmt} row (it looks like {found})")
    if found == OURS:
        converted = dict(record)
    else:
        convert = {"alpaca": _from_alpaca, "sharegpt": _from_sharegpt, "openai": _from_openai}
        turns, used = convert[found](record)
        converted = {"conversations": turns, **_metadata(record, used)}
    problems = schema.check(converted)
    if problems:
        raise RowError("; ".join(problems))
    return converted, found


def _metadata(record: dict, used: tuple[str, ...]) -> dict:
    """The keys a conversion did not consume, renamed where ours would read them."""
    out = {}
    for key, value in record.items():
        if key in used:
            continue
        out[f"original_{key}" if key in ("conversations", "text") else key] = value
    return out


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"{what} is not a string (got {type(value).__name__})")
    return value


def _from_alpaca(record: dict) -> tuple[list[dict], tuple[str, ...]]:
    turns = []
    system = _text(record.get("system"), "'system'")
    if system.strip():
        turns.append({"role": "system", "content": system})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RowError("'history' is not a list of [question, answer] pairs")
    for n, pair in enumerate(history, 1):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise RowError(f"history item {n} is not a [question, answer] pair")
        turns.append({"role": "user", "content": _text(pair[0], f"history {n} question")})
        turns.append({"role": "assistant", "content": _text(pair[1], f"history {n} answer")})
    instruction = _text(record.get("instruction"), "'instruction'")
    extra = _text(record.get("input"), "'input'")
    prompt = "\n\n".join(part for part in (instruction, extra) if part.strip())
    turns.append({"role": "user", "content": prompt})
    turns.append({"role": "assistant", "content": _text(record.get("output"), "'output'")})
    return turns, ALPACA_KEYS


def _from_sharegpt(record: dict) -> tuple[list[dict], tuple[str, ...]]:
    turns = []
    for n, turn in enumerate(record["conversations"], 1):
        if not isinstance(turn, dict) or "from" not in turn:
            raise RowError(f"turn {n} is not an object with 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise RowError(f"turn {n}: speaker {turn['from']!r} has no role in our format")
        turns.append({"role": role, "content": _text(turn.get("value"), f"turn {n} 'value'")})
    return turns, ("conversations",)


def _from_openai(record: dict) -> tuple[list[dict], tuple[str, ...]]:
    messages = record["messages"]
    if not isinstance(messages, list):
        raise RowError("'messages' is not a list")
    turns = []
    for n, message in enumerate(messages, 1):
        if not isinstance(message, dict) or "role" not in message:
            raise RowError(f"message {n} is not an object with 'role' and 'content'")
        role = OPENAI_ROLES.get(str(message["role"]))
        if role is None:
            raise RowError(f"message {n}: role {message['role']!r} has no role in our format")
        turns.append({"role": role, "content": _content(message.get("content"), n)})
    return turns, ("messages",)


def _content(content: Any, n: int) -> str:
    """A message's text: a string, or the text parts of a list (images cannot be trained on)."""
    if isinstance(content, list):
        kinds = {part.get("type") if isinstance(part, dict) else None for part in content}
        if kinds - {"text"}:
            raise RowError(f"message {n} has non-text parts ({sorted(map(str, kinds))})")
        return "".join(_text(part.get("text"), f"message {n} text") for part in content)
    return _text(content, f"message {n} 'content'")


@dataclass
class ImportReport:
    """What an import read and wrote."""

    source: str
    output: Path
    rows: int
    imported: int
    formats: Counter = field(default_factory=Counter)
    """Rows converted per format they were read as."""
    malformed: list[schema.Problem] = field(default_factory=list)


def default_output(spec: str, folder: Path) -> Path:
    """`folder/<name>.jsonl`, or `<name>.imported.jsonl` when that is the input itself."""
    path, _ = io.parse_spec(spec)
    name = Path(path.removeprefix(HUB_PREFIX).split(":")[0]).name
    stem = name.split(".")[0] or "imported"
    out = folder / f"{stem}.jsonl"
    return out.with_suffix(".imported.jsonl") if out.resolve() == Path(path).resolve() else out


def import_file(spec: str, output: str | Path, fmt: str = "auto") -> ImportReport:
    """Convert every row of `spec` (a file, `file[N]`, or a Hub dataset) into `output` (JSONL).

    Raises:
        ConfigError: an unknown format.
        LongCtxError: the input cannot be read, or no row converts.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
    source = io.open_source(spec)
    report = ImportReport(str(spec), Path(output), rows=len(source), imported=0)
    converted = []
    for row in io.iter_raw(source):
        try:
            if row.record is None:  # not JSON, or not an object: the reader said why
                raise RowError("; ".join(row.problems))
            record, found = convert_record(row.record, fmt)
        except RowError as exc:
            report.malformed.append(schema.Problem(row.line, str(exc), source.unit))
            continue
        converted.append(record)
        report.formats[found] += 1
    if not converted:
        first = f" (e.g. {report.malformed[0]})" if report.malformed else ""
        raise LongCtxError(f"no row of {spec} could be imported{first}")
    io.write_jsonl(report.output, converted)
    report.imported = len(converted)
    return report
