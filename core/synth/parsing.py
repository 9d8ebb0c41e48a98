"""Reading a generator's answers leniently: JSON where there is some, plain lines where there is not.

Generators wrap JSON in prose and code fences, leave trailing commas, stop mid-array when they
run out of tokens, or ignore the format and write `Q: ... A: ...` lines. The readers here take
the first JSON value in the text (with small repairs), else every complete object found in a
cut-off one, else the line format, and return what they could use; an empty result means the
answer is broken (the client then re-asks once).

This module knows nothing about HTTP, prompts or samples; pure functions on strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?")
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_SMART = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
_QA_LINE = re.compile(
    r"^\s*(?:[-*#\d.)\s]*)(?:\*\*)?(?P<tag>Q|Question|A|Answer)\s*\d*\s*(?:\*\*)?\s*[:：]\s*"
    r"(?:\*\*)?\s*(?P<text>.*)$",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(?P<text>.+?)\s*$")
_QUESTION_KEYS = ("question", "q", "query", "prompt")
_ANSWER_KEYS = ("answer", "a", "response", "reply")
_NAME_KEYS = ("name", "character", "entity", "title")
_SUMMARY_KEYS = ("summary", "biography", "bio", "description", "text")
# A name and its summary as two complete string fields of an object that may be cut off.
_NAMED_SUMMARY = re.compile(
    r'"name"\s*:\s*"(?P<name>[^"\n]{1,80})"\s*,\s*"(?:summary|biography|bio|description)"\s*:'
    r'\s*"(?P<text>(?:[^"\\]|\\.)+)"'
)
_QUOTED = re.compile(r'"([^"\n]{2,80})"')
_KEYS = frozenset({"name", "names", "character", "characters", "id", "description", "json"})


@dataclass(frozen=True)
class QA:
    """One question-answer pair read from an answer."""

    question: str
    answer: str


def first_json(text: str) -> Any | None:
    """The first JSON value (array or object) in `text`, or None when it cannot be read.

    Code fences and prose around it are ignored; curly quotes and trailing commas are repaired.
    """
    cleaned = _FENCE.sub("", text or "")
    starts = [i for i in (cleaned.find("["), cleaned.find("{")) if i >= 0]
    if not starts:
        return None
    body = cleaned[min(starts) :]
    decoder = json.JSONDecoder()
    for candidate in (body, _TRAILING_COMMA.sub(r"\1", body.translate(_SMART))):
        try:
            return decoder.raw_decode(candidate)[0]
        except ValueError:
            continue
    return None


def complete_objects(text: str) -> list[dict]:
    """Every complete `{...}` object in `text`, outermost first: what survives of a cut array."""
    found, decoder, pos = [], json.JSONDecoder(), 0
    text = text or ""
    while (start := text.find("{", pos)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        if isinstance(value, dict):
            found.append(value)
        pos = end
    return found


def _pick(item: dict, keys: tuple[str, ...]) -> str:
    lowered = {str(k).strip().lower(): v for k, v in item.items()}
    for key in keys:
        value = lowered.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                return text
    return ""


def _items(value: Any) -> list[Any]:
    """A list of items from a JSON value: the list itself, a list inside an object, or [object]."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        return lists[0] if len(lists) == 1 else [value]
    return []


def _qa_from(items: list[Any]) -> list[QA]:
    pairs = []
    for item in items:
        if isinstance(item, dict):
            question, answer = _pick(item, _QUESTION_KEYS), _pick(item, _ANSWER_KEYS)
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
            question, answer = item[0].strip(), item[1].strip()
        else:
            continue
        if question and answer:
            pairs.append(QA(question, answer))
    return pairs


def qa_lines(text: str) -> list[QA]:
    """Pairs written as `Q: ...` / `A: ...` lines (also `Question:`/`Answer:`, numbered, bold)."""
    pairs, question, answer, current = [], None, [], None
    for line in (text or "").splitlines():
        match = _QA_LINE.match(line)
        if match:
            tag = match["tag"].lower()[0]
            body = match["text"].strip().strip("*").strip()
            if tag == "q":
                if question and answer:
                    pairs.append(QA(question, " ".join(answer)))
                question, answer, current = body, [], "q"
            else:
                answer, current = ([body] if body else []), "a"
        elif line.strip() and current == "a":
            answer.append(line.strip())
        elif line.strip() and current == "q" and question is not None:
            question = f"{question} {line.strip()}"
    if question and answer:
        pairs.append(QA(question, " ".join(answer)))
    return pairs


def parse_qa(text: str) -> list[QA]:
    """Question-answer pairs from an answer; empty when none can be read."""
    pairs = _qa_from(_items(first_json(text)))
    if not pairs:
        pairs = _qa_from(complete_objects(text))
    if not pairs:
        pairs = qa_lines(text)
    return pairs


def parse_names(text: str) -> list[str]:
    """Names from an answer: a JSON array of strings (or of objects with a name), else a bulleted
    list, else the capitalised quoted strings of broken JSON. Callers keep only names that occur
    in the text, so a stray string costs nothing."""
    names: list[str] = []
    for item in _items(first_json(text)):
        if isinstance(item, str):
            names.append(item.strip())
        elif isinstance(item, dict):
            names.append(_pick(item, _NAME_KEYS))
    if not any(names):
        # A bulleted or numbered list of short lines.
        for line in (text or "").splitlines():
            match = _LIST_ITEM.match(line)
            if match and len(match["text"].split()) <= 6:
                names.append(match["text"].strip("*\"' "))
    if not any(names):
        # Cut-off or odd JSON: its capitalised quoted strings (keys included) are the names.
        for quoted in _QUOTED.findall(text or ""):
            words = quoted.split()
            if words and quoted[0].isupper() and len(words) <= 6 and quoted.lower() not in _KEYS:
                names.append(quoted.strip())
    seen: set[str] = set()
    unique = []
    for name in names:
        key = name.casefold()
        if name and key not in seen:
            seen.add(key)
            unique.append(name)
    return unique


def parse_biographies(text: str) -> list[tuple[str, str]]:
    """(name, biography) pairs from a JSON array of objects, else the complete name and summary
    fields of a cut-off one (a reply stopped at max_tokens). Empty when none can be read (the
    client then re-asks once)."""
    items = _items(first_json(text)) or complete_objects(text)
    pairs = []
    for item in items:
        if isinstance(item, dict):
            name, summary = _pick(item, _NAME_KEYS), _pick(item, _SUMMARY_KEYS)
            if name and summary:
                pairs.append((name, summary))
    if not pairs:
        for match in _NAMED_SUMMARY.finditer(text or ""):
            try:
                summary = json.loads(f'"{match["text"]}"')
            except ValueError:  # an escape JSON does not know (\x): keep the text as written
                summary = match["text"]
            pairs.append((match["name"].strip(), summary.strip()))
    return pairs


def parse_text(text: str) -> str:
    """A free-text answer (a biography): stripped of fences; empty means broken."""
    return _FENCE.sub("", text or "").replace("```", "").strip()
