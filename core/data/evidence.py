"""Where in the long context an answer's evidence sits, found by word overlap.

For a question/answer pair, the content words of the answer (and, with half the weight, of the
question) are looked up in the context; the window of the context that holds the most of them,
rarer words weighing more, is the evidence. Its position is reported as a depth: 0 % is the
start of the context, 100 % its end, the axis of Needle-in-a-Haystack plots. An answer that
paraphrases or summarises the whole context has little overlap anywhere, and its `score` (the
share of the answer's words found in the window) says so.

This module knows nothing about tokenizers, files or the UI; it works on strings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from core.data import schema

WINDOW_CHARS = 2000
_MAX_OCCURRENCES = 200  # a word found more often than this locates nothing
_WORD = re.compile(r"\w+")
_STOP = frozenset(
    """the and for are but not you all any can had her was one our out has him his how its may
    new now old see two way who did get she too use that with have this will your from they
    know want been good much some time very when come here just like long make many more only
    over such take than them well were what which their there these would about other could
    into then also after first most where those being does each both through while before
    should because between under again same own why yes answer question context text said""".split()
)


@dataclass
class Evidence:
    depth: float
    """Centre of the evidence window, in % of the context's length."""
    start: int
    end: int
    """Character span of the window in the context."""
    score: float
    """Share of the answer's content words found in the window (0..1)."""
    words: list[str]
    """The matched words."""


def content_words(text: str) -> list[str]:
    """Lower-cased words of 3+ characters that are not stop words."""
    return [w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOP]


def _occurrences(low: str, word: str) -> list[int]:
    """Start offsets of `word` as a whole word in `low`, or [] if it is too common to help."""
    out, pos, n = [], low.find(word), len(word)
    while pos >= 0:
        before = low[pos - 1] if pos else " "
        after = low[pos + n] if pos + n < len(low) else " "
        if not (before.isalnum() or before == "_" or after.isalnum() or after == "_"):
            out.append(pos)
            if len(out) > _MAX_OCCURRENCES:
                return []
        pos = low.find(word, pos + n)
    return out


def locate(
    context: str, question: str, answer: str, *, window: int = WINDOW_CHARS, low: str | None = None
) -> Evidence | None:
    """The window of `context` that best supports `answer`; None when no word is shared.

    Args:
        low: `context.lower()`, when the caller already has it (several answers, one context).
    """
    if not context or not answer:
        return None
    low = context.lower() if low is None else low
    answer_words = set(content_words(answer))
    weights = dict.fromkeys(answer_words, 1.0)
    for word in set(content_words(question)):
        weights.setdefault(word, 0.5)
    hits: list[tuple[int, str, float]] = []
    for word, weight in weights.items():
        found = _occurrences(low, word)
        idf = weight / math.log(2 + len(found))
        hits += [(pos, word, idf) for pos in found]
    if not hits:
        return None
    hits.sort()
    best, best_span, in_window = 0.0, (0, 0), {}
    score, left = 0.0, 0
    for right, (pos, word, idf) in enumerate(hits):
        in_window[word] = in_window.get(word, 0) + 1
        if in_window[word] == 1:
            score += idf
        while pos - hits[left][0] > window:
            old = hits[left][1]
            in_window[old] -= 1
            if in_window[old] == 0:
                score -= hits[left][2]
            left += 1
        if score > best + 1e-12:
            best, best_span = score, (left, right)
    chosen = hits[best_span[0] : best_span[1] + 1]
    words = sorted({w for _, w, _ in chosen})
    start, end = chosen[0][0], chosen[-1][0] + len(chosen[-1][1])
    centre = (start + end) / 2
    matched = len(answer_words.intersection(words))
    return Evidence(
        depth=round(100.0 * centre / max(1, len(context)), 2),
        start=start,
        end=end,
        score=round(matched / len(answer_words), 3) if answer_words else 0.0,
        words=words,
    )


def locate_all(record: dict) -> list[Evidence | None]:
    """Evidence for each QA pair of a chat record, in order (empty for text records)."""
    pairs = schema.qa_pairs(record)
    context = schema.context(record)
    if not context:
        return [None] * len(pairs)
    low = context.lower()
    return [locate(context, q, a, low=low) for _, q, a in pairs]
