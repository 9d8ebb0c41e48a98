"""Perplexity against context length: the first check after changing a model's RoPE base.

A cell is one window of `length` tokens of running text; the model predicts each token from all
the tokens before it in the window, and the cell records the mean negative log-likelihood (NLL)
and its perplexity, plus the NLL by position (the window cut into `POSITION_BUCKETS` equal
parts). A model that uses a long context gets lower perplexity at longer lengths and lower loss
further into the window; one pushed past what its positions were trained for gets worse there.

Windows are taken from one token stream (the built-in corpus or a folder of documents) without
repeating any text: window w starts at w x the longest length, and the shorter lengths are its
prefixes, so every length is measured on the same text. Repeated text would let the model copy
and flatter its perplexity, so a source too short for `windows` x the longest length is refused.

The NLLs are computed without a sequence x vocabulary logit table: the decoder's hidden states
are projected to the vocabulary `chunk` positions at a time (an 80K-token window of a 128K
vocabulary would otherwise need 40 GB in float32).

This module knows nothing about backends, result folders or plots.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.evals.backends import Prompt
from core.evals.niah import BUILTIN, grid_axes

POSITION_BUCKETS = 8
TAIL_TOKENS = 2048
"""`tail_nll` is the mean NLL of a window's last this many positions: at a length past the
model's window, the positions that matter for whether an extension holds."""


def cell_key(length: int, window: int) -> str:
    return f"L{length}-W{window}"


@dataclass
class PerplexityConfig:
    """Perplexity at each context length. Every field has a CLI flag and a UI control."""

    lengths: list[int] | str = field(default_factory=lambda: [1000, 2000, 4000, 8000])
    """Window lengths in tokens (a list, or text such as `1k,2k,8k`)."""
    windows: int = 3
    """Windows per length, each from a different stretch of the text."""
    source: str = BUILTIN
    """`builtin` (the installed Python's documentation) or a folder of documents."""

    kind = "perplexity"
    grid_fields = ("lengths",)
    max_new_tokens = 0  # nothing is generated

    def __post_init__(self) -> None:
        problems: list[str] = []
        lengths, _ = grid_axes(self.lengths, [0], problems)
        if not isinstance(self.windows, int) or not 1 <= self.windows <= 64:
            problems.append(f"windows must be 1..64, got {self.windows!r}")
        if self.source != BUILTIN and not Path(str(self.source or "")).expanduser().exists():
            problems.append(
                f"source {self.source!r} is neither 'builtin' nor a folder or document that exists"
            )
        if problems:
            raise ConfigError(problems)
        self.lengths = lengths

    def cell_keys(self) -> list[str]:
        return [cell_key(n, w) for n in self.lengths for w in range(self.windows)]

    def longest(self) -> int:
        return max(self.lengths)

    def prompts(
        self, tokenizer: Any, skip: set[str] | frozenset[str] = frozenset()
    ) -> Iterator[Prompt]:
        """One prompt per cell not in `skip`: the window's token ids, nothing around them.

        Raises:
            LongCtxError: the source is too short for the windows without repeating text.
        """
        todo = [
            (n, w) for n in self.lengths for w in range(self.windows) if cell_key(n, w) not in skip
        ]
        if not todo:
            return iter(())
        longest = self.longest()
        bos = _bos(tokenizer)
        ids = _token_stream(tokenizer, self.source, self.windows * longest)
        return (
            Prompt(
                cell_key(n, w),
                bos + ids[w * longest : w * longest + n - len(bos)],
                [],
                {"length": n, "window": w, "start": w * longest, "expected": None},
            )
            for n, w in todo
        )


def _bos(tokenizer: Any) -> list[int]:
    """[BOS] where the tokenizer starts a text with it (Llama 3 does), else []: each window
    starts the way the model saw documents start in training."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    return [bos] if tokenizer("x")["input_ids"][:1] == [bos] else []


def _token_stream(tokenizer: Any, source: str, needed: int) -> list[int]:
    """The first `needed` tokens of the source's documents, joined by blank lines.

    Raises:
        LongCtxError: the source holds fewer.
    """
    from core.text.corpus import builtin_documents, load_folder

    docs = builtin_documents() if source == BUILTIN else load_folder(source)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    separator, ids = encode("\n\n"), []
    for doc in docs:  # only as many documents as the windows need
        ids += (separator if ids else []) + encode(doc.text)
        if len(ids) >= needed:
            return ids[:needed]
    name = "the built-in corpus" if source == BUILTIN else repr(source)
    raise LongCtxError(
        f"{name} holds {len(ids):,} tokens, and {needed:,} are needed to give every window its "
        "own text (repeated text lets the model copy and flatters its perplexity): use fewer "
        "windows or shorter lengths, or a folder of long documents (books as EPUB or PDF, say)"
    )


def cell_fields(nlls: list[float]) -> dict[str, Any]:
    """What a cell records of its NLLs: mean, perplexity, the mean of each position bucket and
    of the last `TAIL_TOKENS` positions."""
    mean = sum(nlls) / len(nlls)
    size = len(nlls) / POSITION_BUCKETS
    buckets = [nlls[round(i * size) : round((i + 1) * size)] for i in range(POSITION_BUCKETS)]
    return {
        "tokens": len(nlls),
        "nll": round(mean, 5),
        "ppl": round(math.exp(mean), 4),
        "position_nll": [round(sum(b) / len(b), 5) if b else None for b in buckets],
        "tail_nll": round(sum(nlls[-TAIL_TOKENS:]) / len(nlls[-TAIL_TOKENS:]), 5),
    }


def perplexity_by_length(cells: list[dict[str, Any]]) -> dict[int, tuple[float, int]]:
    """{length: (perplexity over all its windows' tokens, windows)} of the finished cells."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for cell in cells:
        if isinstance(cell.get("nll"), (int, float)):
            groups.setdefault(int(cell["length"]), []).append(cell)
    return {
        n: (
            math.exp(sum(c["nll"] * c["tokens"] for c in g) / sum(c["tokens"] for c in g)),
            len(g),
        )
        for n, g in sorted(groups.items())
    }


def position_losses(cells: list[dict[str, Any]]) -> tuple[int, list[float], list[float]] | None:
    """(length, bucket centres in tokens, mean loss of each bucket over the windows) for the
    longest length with finished cells; None before any."""
    measured = [c for c in cells if isinstance(c.get("position_nll"), list)]
    if not measured:
        return None
    length = max(int(c["length"]) for c in measured)
    rows = [c["position_nll"] for c in measured if int(c["length"]) == length]
    buckets = len(rows[0])
    xs, ys = [], []
    for i in range(buckets):
        values = [row[i] for row in rows if i < len(row) and row[i] is not None]
        if values:
            xs.append(round((i + 0.5) * length / buckets))
            ys.append(sum(values) / len(values))
    return length, xs, ys
