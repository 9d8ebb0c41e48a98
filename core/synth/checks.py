"""Checks on generated pairs: is an answer supported by its source text, is a question a repeat.

Support is lexical: the share of the answer's content words (see `core.data.evidence`) that
occur in the passage the generator was shown, a word also counting when it shares its first five
letters with a passage word (so "founded" matches "founding") or is a plural of one. An invented answer scores low;
a faithful paraphrase scores high enough. Duplicates are questions equal after normalising case,
punctuation and spacing, or whose content words overlap by a Jaccard index of 0.8 or more.

This module knows nothing about HTTP, prompts or files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.data.evidence import content_words

_WORD = re.compile(r"\w+")
_PREFIX = 5
NEAR_DUPLICATE = 0.8


def _vocabulary(text: str) -> tuple[set[str], set[str]]:
    words = set(_WORD.findall(text.lower()))
    return words, {w[:_PREFIX] for w in words if len(w) > _PREFIX}


def support(answer: str, source: str) -> float:
    """Share (0..1) of the answer's content words found in `source`; 1.0 with nothing to check.

    An answer without content words ("Yes.", "42") is checked on its numbers only.
    """
    words = content_words(answer) or [w for w in _WORD.findall(answer) if any(map(str.isdigit, w))]
    if not words:
        return 1.0
    exact, prefixes = _vocabulary(source)

    def found(w: str) -> bool:
        if w in exact or (w.endswith("s") and w[:-1] in exact):
            return True
        return len(w) > _PREFIX and w[:_PREFIX] in prefixes

    return sum(map(found, words)) / len(words)


def normalize_question(question: str) -> str:
    """Lower case, words only, single spaces: what two copies of a question share."""
    return " ".join(_WORD.findall(question.lower()))


def unique_questions(questions: Sequence[str]) -> tuple[list[int], int]:
    """Indices of the questions to keep (first of each repeat), and how many were dropped."""
    kept: list[int] = []
    keys: set[str] = set()
    word_sets: list[frozenset[str]] = []
    for i, question in enumerate(questions):
        key = normalize_question(question)
        words = frozenset(content_words(question))
        if key in keys or any(_jaccard(words, other) >= NEAR_DUPLICATE for other in word_sets):
            continue
        keys.add(key)
        word_sets.append(words)
        kept.append(i)
    return kept, len(questions) - len(kept)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)
