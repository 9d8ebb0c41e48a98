"""Plain-text training samples cut from documents: the paper's RedPajama part, from your own texts.

The paper mixes 5K RedPajama samples (`{"text": ...}`, loss on every token) into the synthetic
QA, so the model keeps modelling long running text while it learns to answer over it. Offline,
the same role is played by long documents the user has (books as EPUB or PDF, papers, reports):
each sample is a stretch of one document of `length // 2 .. length` tokens, cut on paragraph
boundaries (`core.synth.sources`), no two overlapping. Documents are taken in a seeded random
order, so a different seed draws from different documents first.

This module knows nothing about HTTP, prompts or training.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.synth import sources

TASK = "text"


def text_samples(
    source: str,
    n: int,
    length: int,
    tokenizer: Any,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    unreadable: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Up to `n` samples `{"text", "id", "task", "source", "length"}` of at most `length` tokens.

    Args:
        source: `builtin`, a folder of documents, or one document (see `core.synth.sources`).
        tokenizer: counts the tokens (without special tokens).
        progress: called with (done, total) after each sample.
        unreadable: receives the reasons for files of a folder that could not be read.

    Raises:
        ConfigError: n or length out of range.
        LongCtxError: no document has a stretch of at least `length // 2` tokens.
    """
    if n < 1 or length < 64:
        raise ConfigError("text samples need n >= 1 and length >= 64 tokens")
    docs = sources.load_documents(source, unreadable)
    random.Random(seed).shuffle(docs)
    count = sources.token_counter(tokenizer)
    contexts, skipped = sources.document_contexts(docs, length // 2, length, count, n)
    if not contexts:
        why = "; ".join(skipped[:3]) or "no documents"
        raise LongCtxError(
            f"no stretch of {length // 2:,}..{length:,} tokens in {source!r} ({why}); lower the "
            "length or add longer documents"
        )
    samples = []
    for i, context in enumerate(contexts):
        samples.append(
            {
                "text": context.text,
                "id": f"{TASK}-{seed}-{i}",
                "task": TASK,
                "source": context.parts[0].title,
                "length": context.tokens,
            }
        )
        if progress:
            progress(i + 1, len(contexts))
    return samples
