"""Duplicates in a training set: identical contexts (by hash) and near-identical questions.

Exact duplicate contexts are grouped by the context hash `stats` records. Near-duplicate
questions are pairs whose word sets overlap by at least a Jaccard threshold, found with MinHash
locality-sensitive hashing (candidates), then checked exactly, so every reported pair is real;
with the default bands a pair at similarity 0.8 is found with probability > 0.9999.

This module knows nothing about tokenizers, files or the UI.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.data.stats import SampleStats

_WORD = re.compile(r"\w+")
_PRIME = 4294967311  # > 2**32, so (a * x + b) % p permutes 32-bit hashes
_HASHES, _ROWS = 20, 2  # 10 bands of 2 rows


@dataclass
class DuplicateGroup:
    """Samples sharing one context."""

    context_hash: str
    indices: list[int]
    lines: list[int]


@dataclass
class NearDuplicate:
    """Two questions (sample index, question number from 0) with their similarity."""

    a: tuple[int, int]
    b: tuple[int, int]
    similarity: float
    question_a: str
    question_b: str


def duplicate_contexts(samples: Sequence[SampleStats]) -> list[DuplicateGroup]:
    """Groups of two or more samples with the same context, largest first."""
    groups: dict[str, list[SampleStats]] = defaultdict(list)
    for s in samples:
        if s.context_hash:
            groups[s.context_hash].append(s)
    out = [
        DuplicateGroup(h, [s.index for s in group], [s.line for s in group])
        for h, group in groups.items()
        if len(group) > 1
    ]
    return sorted(out, key=lambda g: (-len(g.indices), g.indices[0]))


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _signatures(word_sets: list[frozenset[str]]) -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.integers(1, _PRIME - 1, size=_HASHES, dtype=np.uint64)
    b = rng.integers(0, _PRIME - 1, size=_HASHES, dtype=np.uint64)
    out = np.empty((len(word_sets), _HASHES), dtype=np.uint64)
    for k, words in enumerate(word_sets):
        x = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
        out[k] = ((np.outer(x, a) + b) % _PRIME).min(axis=0)
    return out


def near_duplicate_questions(
    samples: Sequence[SampleStats], *, threshold: float = 0.8, limit: int = 1000
) -> list[NearDuplicate]:
    """Pairs of questions (across and within samples) with word-set Jaccard >= threshold.

    Questions of fewer than three words are skipped (too short to mean anything). Returns at
    most `limit` pairs, most similar first.
    """
    keys, texts, sets = [], [], []
    for s in samples:
        for q, question in enumerate(s.questions):
            words = _words(question)
            if len(words) >= 3:
                keys.append((s.index, q))
                texts.append(question)
                sets.append(words)
    if len(sets) < 2:
        return []
    sig = _signatures(sets)
    candidates: set[tuple[int, int]] = set()
    for band in range(0, _HASHES, _ROWS):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for k in range(len(sets)):
            buckets[sig[k, band : band + _ROWS].tobytes()].append(k)
        for members in buckets.values():
            if 1 < len(members) <= 2000:  # a giant bucket is a boilerplate question, see below
                candidates.update(
                    (members[x], members[y])
                    for x in range(len(members))
                    for y in range(x + 1, len(members))
                )
            elif len(members) > 2000:
                candidates.update((members[0], m) for m in members[1:])
    pairs = []
    for i, j in candidates:
        sim = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
        if sim >= threshold:
            pairs.append(NearDuplicate(keys[i], keys[j], round(sim, 3), texts[i], texts[j]))
    pairs.sort(key=lambda p: (-p.similarity, p.a, p.b))
    return pairs[:limit]
