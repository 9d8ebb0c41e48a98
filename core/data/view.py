"""What the sample view shows: turns with the long context folded, and the rendered sequence cut
into highlighted pieces (loss-bearing or not), ready for a highlighted-text widget.

This module knows nothing about gradio or files; it shapes records and `render.Rendered`
results into plain records.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.data import evidence as evidence_mod
from core.data import schema
from core.data.render import IGNORE, Rendered

LOSS, CUT, FOLDED = "loss", "cut", "folded"


@dataclass
class TurnView:
    """One turn, folded when long."""

    index: int
    role: str
    head: str
    hidden: int
    """Characters left out between head and tail (0: head is the whole turn)."""
    tail: str
    chars: int
    question: str = ""
    """For the context turn: its question (the text after the context)."""
    evidence: evidence_mod.Evidence | None = None
    """For an answer: where its evidence sits in the context."""


def fold(text: str, head: int = 1500, tail: int = 1500) -> tuple[str, int, str]:
    """(head, hidden characters, tail); a text shorter than head + tail is not folded."""
    if len(text) <= head + tail:
        return text, 0, ""
    return text[:head], len(text) - head - tail, text[len(text) - tail :]


def turn_views(record: dict, *, head: int = 1500, tail: int = 1500) -> list[TurnView]:
    """The turns of a chat record (or the text of a text record), folded, with evidence."""
    if isinstance(record.get("text"), str):
        h, hidden, t = fold(record["text"], head, tail)
        return [TurnView(0, "text", h, hidden, t, len(record["text"]))]
    conv = schema.turns(record)
    found = {
        i: e
        for (i, _, _), e in zip(
            schema.qa_pairs(record), evidence_mod.locate_all(record), strict=True
        )
    }
    first_user = next((i for i, t in enumerate(conv) if t.get("role") == "user"), None)
    views = []
    for i, turn in enumerate(conv):
        content = str(turn.get("content", "")) if isinstance(turn, dict) else ""
        h, hidden, t = fold(content, head, tail)
        view = TurnView(i, str(turn.get("role", "?")), h, hidden, t, len(content))
        if i == first_user:
            view.question = schema.split_context(content)[1]
        view.evidence = found.get(i)
        views.append(view)
    return views


def highlight(rendered: Rendered, *, fold_chars: int | None = 2000) -> list[tuple[str, str | None]]:
    """The rendered sequence as (text, tag) pieces: tag `loss` where tokens carry loss, `cut`
    for tokens removed by truncate_middle or head, `folded` for a marker standing in for the middle of
    a long piece without loss, None otherwise."""
    if not rendered.offsets:
        return []
    full_labels = _full_labels(rendered)
    pieces: list[tuple[int, str | None]] = []  # (start char, tag)
    cut = rendered.cut or (-1, -1)
    for k, (start, _) in enumerate(rendered.offsets):
        tag = CUT if cut[0] <= k < cut[1] else (LOSS if full_labels[k] != IGNORE else None)
        if not pieces or pieces[-1][1] != tag:
            pieces.append((start if pieces else 0, tag))
    out: list[tuple[str, str | None]] = []
    for n, (start, tag) in enumerate(pieces):
        end = pieces[n + 1][0] if n + 1 < len(pieces) else len(rendered.text)
        text = rendered.text[start:end]
        if tag == CUT:
            out.append((f"[… {cut[1] - cut[0]:,} tokens cut …]", CUT))
        elif tag is None and fold_chars and len(text) > 2 * fold_chars + 100:
            head, hidden, tail = fold(text, fold_chars, fold_chars)
            out += [(head, None), (f"[… {hidden:,} characters …]", FOLDED), (tail, None)]
        else:
            out.append((text, tag))
    return out


def _full_labels(rendered: Rendered) -> list[int]:
    """Labels over the full (untruncated) sequence, so offsets and labels line up."""
    if rendered.cut is None:
        return rendered.labels
    a, b = rendered.cut
    return rendered.labels[:a] + [IGNORE] * (b - a) + rendered.labels[a:]
