"""What the model trains on: a sample rendered by the chat template, tokenized, with its labels.

`render_sample` is THE function the trainer calls, and the Data tab shows its result, so what a
user inspects is exactly what is trained. For chat samples, loss falls on every assistant turn:
its content plus the end-of-turn token(s) the template writes after it (`<|im_end|>`,
`<|eot_id|>`, `</s>`, ...), never on the template's headers, whitespace after the end-of-turn
token, system or user turns. Text samples train on every token.

A sample longer than max_length is dropped, cut in the middle, or (`head`, the paper's handling
of text) cut to its head: a text sample then ends with EOS, appended to every text sample as the
paper's code does, and a conversation, whose answers sit at its end, is dropped.

Spans are found without knowing the template: the conversation's prefixes are rendered, and
turn i is the text by which the rendering of turns 0..i grows over that of 0..i-1; inside an
assistant turn, the content is located and extended over the added tokens that close it. When a
template does not render prefixes as prefixes, contents are located in order instead.

This module knows nothing about files, statistics or the UI.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass, field
from typing import Any

from core.data import schema
from core.data.tokcount import overlaps
from core.errors import ConfigError, LongCtxError, first_line

IGNORE = -100
OVERFLOWS = ("drop", "head", "truncate_middle")


@dataclass
class TurnSpan:
    """One message of the conversation inside the rendered sequence."""

    index: int
    """Position in `conversations` (0 for a text sample)."""
    role: str
    """`system`, `user`, `assistant`, or `text`."""
    chars: tuple[int, int]
    """Its region of the rendered text, template header and end-of-turn included."""
    tokens: tuple[int, int]
    """Its token range [start, end) in the full (untruncated) sequence."""
    loss_tokens: int
    """How many of its tokens carry loss."""

    @property
    def n_tokens(self) -> int:
        return self.tokens[1] - self.tokens[0]


@dataclass
class Layout:
    """A conversation rendered as text, with the character regions of its turns and losses."""

    text: str
    roles: list[str]
    starts: list[int]
    """Start of each message's region; a region runs to the next start (or the end)."""
    loss: list[tuple[int, int]] = field(default_factory=list)
    """Sorted character spans that carry loss (assistant content + end-of-turn tokens)."""


@dataclass
class Rendered:
    """A sample as the trainer sees it."""

    kind: str
    """`chat` or `text`."""
    text: str
    """The rendered sequence (chat template applied), before truncation."""
    input_ids: list[int]
    """Token ids, after `truncate_middle` when that was asked and needed."""
    labels: list[int]
    """Same length as input_ids; -100 where there is no loss."""
    offsets: list[tuple[int, int]]
    """Character span of each token of the full sequence in `text`."""
    turns: list[TurnSpan]
    loss_spans: list[tuple[int, int]]
    """Character spans of `text` that carry loss."""
    length: int
    """Tokens of the full sequence (what `max_length` is compared with)."""
    max_length: int | None = None
    dropped: bool = False
    """Longer than max_length under `drop` (or a conversation under `head`): the trainer skips it."""
    cut: tuple[int, int] | None = None
    """Token range [start, end) of the full sequence removed by truncate_middle or head."""
    overflow: str = "drop"
    """The policy it was rendered under."""

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)

    def per_turn(self) -> list[dict[str, Any]]:
        """Rows for a per-turn table: turn, role, tokens, loss tokens."""
        return [
            {
                "turn": t.index + 1,
                "role": t.role,
                "tokens": t.n_tokens,
                "loss_tokens": t.loss_tokens,
            }
            for t in self.turns
        ]


# ---------------------------------------------------------------------------------------------
# Rendering text.


def chat_text(tokenizer: Any, conv: list[dict], *, add_generation_prompt: bool = False) -> str:
    """`tokenizer.apply_chat_template(conv, tokenize=False)`, with errors a user can act on."""
    if not getattr(tokenizer, "chat_template", None):
        raise LongCtxError(
            "this tokenizer has no chat template; use a chat/instruct model's tokenizer (or set "
            "tokenizer.chat_template) to render conversations"
        )
    try:
        return tokenizer.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:
        reason = first_line(exc)
        raise LongCtxError(f"the chat template cannot render this conversation: {reason}") from exc


@functools.lru_cache(maxsize=16)
def _added_pattern(contents: tuple[str, ...]) -> re.Pattern | None:
    if not contents:
        return None
    return re.compile("|".join(map(re.escape, sorted(contents, key=lambda c: (-len(c), c)))))


def added_tokens_pattern(tokenizer: Any) -> re.Pattern | None:
    """A regex matching the tokenizer's added (special) tokens, longest first."""
    vocab = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    return _added_pattern(tuple(sorted(c for c in vocab if c)))


def layout(tokenizer: Any, conv: list[dict]) -> Layout:
    """Render a conversation and find each turn's region and the loss spans."""
    text = chat_text(tokenizer, conv)
    roles = [str(t.get("role")) for t in conv]
    starts = _prefix_starts(tokenizer, conv, text)
    if starts is None:
        starts = _located_starts(conv, text)
    closers = added_tokens_pattern(tokenizer)
    loss = []
    for i, turn in enumerate(conv):
        if turn.get("role") != "assistant":
            continue
        end = starts[i + 1] if i + 1 < len(conv) else len(text)
        span = _loss_span(tokenizer, conv, i, text, starts[i], end, closers)
        if span[1] > span[0]:
            loss.append(span)
    return Layout(text=text, roles=roles, starts=starts, loss=loss)


def _prefix_starts(tokenizer: Any, conv: list[dict], text: str) -> list[int] | None:
    """Region starts from renderings of growing prefixes, or None if they are not prefixes."""
    starts, prev = [0], 0
    for i in range(len(conv) - 1):
        try:
            prefix = chat_text(tokenizer, conv[: i + 1])
        except LongCtxError:
            return None  # e.g. a template that refuses a conversation ending with the system
        if len(prefix) < prev or not text.startswith(prefix):
            return None
        prev = len(prefix)
        starts.append(prev)
    return starts


def _located_starts(conv: list[dict], text: str) -> list[int]:
    """Fallback: each turn starts where its content is found, in order."""
    starts, pos = [0], 0
    for i, turn in enumerate(conv):
        content, found = str(turn.get("content", "")), -1
        for needle in (content, content.strip()):
            if needle and (found := text.find(needle, pos)) >= 0:
                pos = found + len(needle)
                break
        if i:
            starts.append(max(found, starts[-1]))
    return starts


def _loss_span(
    tokenizer: Any,
    conv: list[dict],
    i: int,
    text: str,
    start: int,
    end: int,
    closers: re.Pattern | None,
) -> tuple[int, int]:
    """Assistant turn i's loss span within its region [start, end)."""
    content = str(conv[i].get("content", ""))
    for needle in dict.fromkeys([content, content.strip()]):
        if not needle:
            continue
        pos = text.find(needle, start, end)
        while pos >= 0:
            after = pos + len(needle)
            closed = _closing_end(text[after:end], closers)
            if closed is not None:
                return pos, after + closed
            pos = text.find(needle, pos + 1, end)
    # The template changed the content (escaping, reformatting): take everything after the
    # generation prompt, up to the region's trailing whitespace.
    gen = start
    try:
        prompt = chat_text(tokenizer, conv[:i], add_generation_prompt=True)
        if text.startswith(prompt) and start <= len(prompt) <= end:
            gen = len(prompt)
    except LongCtxError:
        pass  # no generation prompt: the region's own start is the best guess
    return gen, start + len(text[start:end].rstrip())


def _closing_end(trailer: str, closers: re.Pattern | None) -> int | None:
    """If `trailer` is only added tokens and whitespace, where its last added token ends."""
    last, pos = 0, 0
    if closers is not None:
        for m in closers.finditer(trailer):
            if trailer[pos : m.start()].strip():
                return None
            last = pos = m.end()
    return last if not trailer[pos:].strip() else None


# ---------------------------------------------------------------------------------------------
# Tokens and labels.


def _encode(tokenizer: Any, text: str, *, special: bool) -> tuple[list[int], list[tuple]]:
    if not getattr(tokenizer, "is_fast", False):
        raise LongCtxError(
            "rendering needs a fast tokenizer (with tokenizer.json) to map tokens to characters"
        )
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _turn_spans(lay: Layout, offsets: list[tuple], labels: list[int]) -> list[TurnSpan]:
    n = len(lay.starts)
    first, count, loss = [None] * n, [0] * n, [0] * n
    for k, (s, _) in enumerate(offsets):
        r = bisect.bisect_right(lay.starts, s) - 1
        if first[r] is None:
            first[r] = k
        count[r] += 1
        loss[r] += labels[k] != IGNORE
    spans, pos = [], 0
    for r in range(n):
        begin = first[r] if first[r] is not None else pos
        pos = begin + count[r]
        end_char = lay.starts[r + 1] if r + 1 < n else len(lay.text)
        spans.append(TurnSpan(r, lay.roles[r], (lay.starts[r], end_char), (begin, pos), loss[r]))
    return spans


def render_sample(
    tokenizer: Any,
    sample: dict | list,
    max_length: int | None = None,
    overflow: str = "drop",
) -> Rendered:
    """Render one sample the way it is trained.

    Args:
        tokenizer: a fast transformers tokenizer (with a chat template for chat samples).
        sample: a record (`{"conversations": [...]}` or `{"text": ...}`) or a bare conversation.
        max_length: longest sequence kept; None for no limit.
        overflow: what to do with a longer sample: `drop` (the paper's choice for
            conversations: `dropped` is set and the trainer skips it), `truncate_middle` (tokens
            are removed from the middle of the longest stretch without loss, usually the
            context, else from the middle) or `head` (the paper's choice for text: every text
            sample ends with EOS, and a longer one keeps its first max_length - 1 tokens before
            it; a longer conversation is dropped, its answers being at its end).

    Returns:
        input_ids equal to `apply_chat_template(conv, tokenize=True)["input_ids"]` (or
        `tokenizer(text)["input_ids"]` for text, plus EOS under `head`), and labels with loss
        on assistant turns.

    Raises:
        LongCtxError: the sample is malformed, or the tokenizer cannot render it.
    """
    if overflow not in OVERFLOWS:
        raise ConfigError(f"overflow must be one of {OVERFLOWS}, got {overflow!r}")
    if max_length is not None and int(max_length) < 1:
        raise ConfigError(f"max_length must be positive, got {max_length}")
    record = {"conversations": sample} if isinstance(sample, list) else sample
    problems = schema.check(record)
    if problems:
        raise LongCtxError("cannot render a malformed sample: " + "; ".join(problems))
    lay, ids, offsets, labels = _tokens(tokenizer, record)
    if overflow == "head" and "text" in record:
        lay, ids, offsets, labels = _with_eos(tokenizer, lay, ids, offsets)
    out = Rendered(
        kind=schema.TEXT if "text" in record else schema.CHAT,
        text=lay.text,
        input_ids=ids,
        labels=labels,
        offsets=offsets,
        turns=_turn_spans(lay, offsets, labels),
        loss_spans=lay.loss,
        length=len(ids),
        max_length=max_length,
        overflow=overflow,
    )
    if max_length is not None and out.length > max_length:
        if overflow == "drop" or (overflow == "head" and out.kind == schema.CHAT):
            out.dropped = True
        elif overflow == "head":
            _keep_head(out, int(max_length))
        else:
            _truncate_middle(out, int(max_length))
    return out


def _tokens(tokenizer: Any, record: dict) -> tuple[Layout, list[int], list[tuple], list[int]]:
    """(layout, input_ids, offsets, labels) of a valid record."""
    if "text" in record:
        text = record["text"]
        ids, offsets = _encode(tokenizer, text, special=True)
        return Layout(text, ["text"], [0], [(0, len(text))]), ids, offsets, list(ids)
    lay = layout(tokenizer, record["conversations"])
    ids, offsets = _encode(tokenizer, lay.text, special=False)
    labels = [
        t if overlaps(s, e, lay.loss) else IGNORE for t, (s, e) in zip(ids, offsets, strict=True)
    ]
    return lay, ids, offsets, labels


def _with_eos(
    tokenizer: Any, lay: Layout, ids: list[int], offsets: list[tuple]
) -> tuple[Layout, list[int], list[tuple], list[int]]:
    """A text sample with EOS appended (unless its tokenizer already ends it with one), so the
    model learns where a document stops; the EOS string is shown at the end of the text."""
    eos_id, eos = getattr(tokenizer, "eos_token_id", None), getattr(tokenizer, "eos_token", None)
    if eos_id is None or not eos:
        raise LongCtxError(
            "overflow 'head' ends text samples with EOS, and this tokenizer has none; set "
            "tokenizer.eos_token or use overflow drop or truncate_middle"
        )
    if ids and ids[-1] == eos_id:
        return lay, ids, offsets, list(ids)
    end = len(lay.text)
    lay = Layout(lay.text + eos, lay.roles, lay.starts, [(0, end + len(eos))])
    ids = [*ids, eos_id]
    return lay, ids, [*offsets, (end, end + len(eos))], list(ids)


def _keep_head(out: Rendered, max_length: int) -> None:
    """Keep the first max_length - 1 tokens and the final EOS (a text sample under `head`)."""
    start, end = max_length - 1, out.length - 1
    out.cut = (start, end)
    out.input_ids = out.input_ids[:start] + out.input_ids[end:]
    out.labels = out.labels[:start] + out.labels[end:]


def _truncate_middle(out: Rendered, max_length: int) -> None:
    """Remove the excess from the middle of the longest loss-free stretch (else the middle)."""
    n, excess = out.length, out.length - max_length
    best, run_start = (0, 0), None
    for k, label in enumerate([*out.labels, 0]):
        if label == IGNORE and run_start is None:
            run_start = k
        elif label != IGNORE and run_start is not None:
            if k - run_start > best[1] - best[0]:
                best = (run_start, k)
            run_start = None
    if best[1] - best[0] >= excess + 2:  # keep at least one token of the stretch on each side
        start = best[0] + (best[1] - best[0] - excess) // 2
    else:
        start = (n - excess) // 2
    out.cut = (start, start + excess)
    out.input_ids = out.input_ids[:start] + out.input_ids[start + excess :]
    out.labels = out.labels[:start] + out.labels[start + excess :]
