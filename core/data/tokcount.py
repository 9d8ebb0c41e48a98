"""Exact token counts for long texts, several times faster than encoding them.

A Hugging Face fast tokenizer works in stages that never look across each other's boundaries:
added tokens (`<|im_start|>`, ...) are cut out of the text first; each remaining stretch is split
into pre-tokens by a regex; the model (BPE) encodes each pre-token on its own. So the number of
tokens of a text is one per added token plus, for each pre-token, that pre-token's own count.
Long contexts reuse the same few tens of thousands of pre-tokens, so we find them with the
`regex` module (several times faster than the tokenizer's Oniguruma regex), look their counts up
in a dict, and ask the BPE model only about pre-tokens never seen before.

That shortcut is taken only where it is provably the same computation: a pipeline we reproduce
exactly (no normalizer; a ByteLevel, or Split + ByteLevel, pre-tokenizer without prefix space;
BPE without dropout; added tokens without strip flags) and text whose characters both regex
engines classify alike (text holding characters unassigned in Python's Unicode database goes to
the tokenizer itself). Anything else is encoded by the tokenizer, so counts are always exact; a
self-check at construction compares both paths on a probe text and turns the shortcut off on any
difference.

This module knows nothing about chat templates, samples or files: it counts strings, and splits
counts by character spans.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import logging
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import regex

from core.errors import LongCtxError

log = logging.getLogger(__name__)

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# The same split as GPT2_PATTERN, ~1.6x faster in the `regex` module: letter and number
# branches tried first. Equivalent because a contraction starts with an apostrophe, which
# neither of them can match, so at any position at most one of those branches applies.
_GPT2_FAST = r""" ?\p{L}+| ?\p{N}+|'(?:s|t|re|ve|m|ll|d)| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_FASTER = {GPT2_PATTERN: _GPT2_FAST}
# Patterns that match every character (letters, numbers, other, whitespace each have a branch
# that takes one), so `findall` never skips text and needs no coverage check.
_COVERING = frozenset({GPT2_PATTERN, LLAMA3_PATTERN})
_CACHE_LIMIT = 2_000_000
_PROBE = (
    "The quick brown fox's 3 jumps -- over 12345 lazy dogs!!! It's, they'll, WE'VE, I'M ok.\n\n"
    "  indented\tline\r\nCafé naïve résumé — “quoted” ‘single’ … ß ſ K Å µ\u00a0nbsp\u2003em\n"
    "日本語のテキスト 中文 한국어 العربية עברית Ελληνικά Кириллица ไทย देवनागरी\n"
    "emoji 👍🏽 👨‍👩‍👧 🇫🇷 math ∑∫√ ½ ² ① Ⅻ 𝔘𝔫𝔦 \x00\x01\x7f ''' \"\"\" ```code```\n"
    "    \n\n\n   trailing   "
)


def _byte_table() -> dict[int, str]:
    """GPT-2's byte -> printable character map, as a `str.translate` table over latin-1."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTES = _byte_table()


_NON_ASCII = regex.compile(r"[^\x00-\x7f]")


@functools.lru_cache(maxsize=1 << 16)
def _unsafe_char(ch: str) -> bool:
    """Whether the two regex engines may classify `ch` differently: it is unassigned (or a
    surrogate) in Python's Unicode database. The `regex` module may know newer letters than the
    tokenizer's Oniguruma; every difference we measured over all code points lies there."""
    return unicodedata.category(ch) in ("Cn", "Cs")


def _safe_text(s: str) -> bool:
    return s.isascii() or not any(map(_unsafe_char, set(_NON_ASCII.findall(s))))


def _fast_pattern(spec: dict[str, Any]) -> tuple[str | None, str]:
    """The pre-token regex when the pipeline is one we reproduce exactly, else (None, why not)."""
    if spec.get("normalizer") is not None:
        return None, f"normalizer {spec['normalizer'].get('type')}"
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout"):
        return None, f"model {model.get('type')} (dropout {model.get('dropout')})"
    for token in spec.get("added_tokens") or []:
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
            return None, f"added token {token.get('content')!r} has strip flags"
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel":
        if pre.get("use_regex", True) and not pre.get("add_prefix_space"):
            return GPT2_PATTERN, "ByteLevel"
    elif pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 2:
        split, level = pre["pretokenizers"]
        pattern = (split.get("pattern") or {}).get("Regex")
        if (
            split.get("type") == "Split"
            and pattern
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
            and level.get("type") == "ByteLevel"
            and not level.get("use_regex", True)
            and not level.get("add_prefix_space")
        ):
            return pattern, "Split+ByteLevel"
    return None, f"pre-tokenizer {pre.get('type')}"


def backend_of(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a transformers tokenizer (or the object itself)."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise LongCtxError(
            f"{type(tokenizer).__name__} is a slow (Python) tokenizer; token statistics need a "
            "fast one (load the model's tokenizer.json, or convert it with use_fast=True)"
        )
    return backend


class TokenCounter:
    """Counts tokens exactly as `tokenizer(text, add_special_tokens=False)` would.

    Not thread-safe (it keeps a cache); give each thread or process its own.
    """

    def __init__(self, tokenizer: Any, *, fast: bool = True):
        from tokenizers import Tokenizer

        original = backend_of(tokenizer)
        text = original.to_str()
        # A private copy: transformers leaves truncation/padding settings on its backend.
        self._backend = Tokenizer.from_str(text)
        self._backend.no_truncation()
        self._backend.no_padding()
        # A runtime flag (transformers' split_special_tokens) that to_str() does not carry.
        keep_specials = bool(getattr(original, "encode_special_tokens", False))
        self._backend.encode_special_tokens = keep_specials
        self.fingerprint = hashlib.blake2b(
            text.encode() + str(keep_specials).encode(), digest_size=16
        ).hexdigest()
        spec = json.loads(text)
        pattern, self.pipeline = _fast_pattern(spec)
        self._pre = regex.compile(_FASTER.get(pattern, pattern)) if pattern else None
        self._covering = pattern in _COVERING
        self._cache: dict[str, int] = {}
        self._added = self._added_patterns(spec)
        self.fast = bool(fast and self._pre is not None)
        if self.fast and not self._self_check():
            log.warning("fast token counting disabled for this tokenizer: self-check failed")
            self.fast = False

    def _added_patterns(self, spec: dict[str, Any]) -> list[re.Pattern]:
        """Two passes, as the tokenizer does: non-normalized added tokens, then normalized."""
        tokens = spec.get("added_tokens") or []
        if getattr(self._backend, "encode_special_tokens", False):
            tokens = [t for t in tokens if not t.get("special")]
        passes = []
        for normalized in (False, True):
            contents = {t["content"] for t in tokens if bool(t.get("normalized")) == normalized}
            contents.discard("")
            if contents:  # longest first: leftmost-longest, like the tokenizer's Aho-Corasick
                ordered = sorted(contents, key=lambda c: (-len(c), c))
                passes.append(re.compile("|".join(map(re.escape, ordered))))
        return passes

    def _self_check(self) -> bool:
        probe = _PROBE + "".join(
            t.content for t in self._backend.get_added_tokens_decoder().values()
        )
        probe += _PROBE[::-1]
        return self.count(probe) == len(self._backend.encode(probe, add_special_tokens=False))

    # -----------------------------------------------------------------------------------------

    def segments(self, text: str) -> list[tuple[int, int, bool]]:
        """(start, end, is_added_token) pieces the tokenizer encodes independently.

        Without the fast path the whole text is one piece: some pipelines (a `first` prefix
        scheme, a normalizer) do not encode pieces independently.
        """
        if not self.fast or not self._added:
            return [(0, len(text), False)] if text else []
        pieces = [(0, len(text), False)]
        for pattern in self._added:
            out = []
            for a, b, added in pieces:
                if added:
                    out.append((a, b, True))
                    continue
                pos = a
                for m in pattern.finditer(text, a, b):
                    if m.start() > pos:
                        out.append((pos, m.start(), False))
                    out.append((m.start(), m.end(), True))
                    pos = m.end()
                if pos < b:
                    out.append((pos, b, False))
            pieces = out
        return pieces

    def count(self, text: str) -> int:
        """Exact token count of `text` (special tokens in it count as the tokenizer counts them)."""
        if not self.fast:
            return len(self._backend.encode(text, add_special_tokens=False))
        return sum(1 if added else self._stretch(text[a:b]) for a, b, added in self.segments(text))

    def _pieces(self, s: str) -> list[str] | None:
        """The pre-tokens of a stretch, or None where the shortcut does not apply to it."""
        if not self.fast or not _safe_text(s):
            return None
        pieces = self._pre.findall(s)
        if not self._covering and sum(map(len, pieces)) != len(s):
            return None  # the regex skipped characters: only the tokenizer knows what it does
        return pieces

    def _sum(self, pieces: list[str]) -> int:
        try:
            return sum(map(self._cache.__getitem__, pieces))
        except KeyError:
            self._learn(pieces)
            return sum(map(self._cache.__getitem__, pieces))

    def _stretch(self, s: str) -> int:
        """Count a stretch that holds no added token."""
        pieces = self._pieces(s) if s else []
        if pieces is None:
            return len(self._backend.encode(s, add_special_tokens=False))
        return self._sum(pieces)

    def _split(self, s: str, cuts: list[int]) -> list[tuple[int, int, int]] | None:
        """(start, end, tokens) of the parts of stretch `s` between `cuts`, or None unless
        every cut falls between two pre-tokens (then no token straddles it)."""
        pieces = self._pieces(s)
        if pieces is None:
            return None
        ends = list(itertools.accumulate(map(len, pieces)))
        bounds = [0]
        for cut in cuts:
            k = bisect.bisect_left(ends, cut)
            if k >= len(ends) or ends[k] != cut:
                return None
            bounds.append(k + 1)
        bounds.append(len(pieces))
        return [
            (ends[lo - 1] if lo else 0, ends[hi - 1] if hi else 0, self._sum(pieces[lo:hi]))
            for lo, hi in zip(bounds, bounds[1:], strict=False)
        ]

    def _learn(self, pieces: list[str]) -> None:
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()
        model, cache = self._backend.model, self._cache
        for piece in set(pieces).difference(cache):
            mapped = piece.encode("utf-8").decode("latin-1").translate(_BYTES)
            cache[piece] = len(model.tokenize(mapped))

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of each token of `text` (no added tokens inside, or not fast)."""
        return self._backend.encode(text, add_special_tokens=False).offsets

    def count_by_spans(
        self, text: str, starts: Sequence[int], loss: Sequence[tuple[int, int]]
    ) -> tuple[list[int], list[int]]:
        """Tokens and loss tokens per region of `text`.

        Args:
            text: the whole rendered sequence.
            starts: sorted start offsets of consecutive regions (the first is 0); a token
                belongs to the region holding its first character.
            loss: sorted, disjoint (start, end) character spans; a token carries loss when it
                overlaps one (see `overlaps`).

        Returns:
            (tokens per region, loss tokens per region). Pieces with no region or loss
            boundary inside are counted by the fast path; the others are encoded with offsets.
        """
        tokens, losses = [0] * len(starts), [0] * len(starts)
        cuts = sorted({*starts[1:], *(p for span in loss for p in span)})

        def add(start: int, end: int, n: int) -> None:
            r = bisect.bisect_right(starts, start) - 1
            tokens[r] += n
            losses[r] += n if overlaps(start, end, loss) else 0

        for a, b, added in self.segments(text):
            k = bisect.bisect_right(cuts, a)
            inner = []
            while k < len(cuts) and cuts[k] < b:
                inner.append(cuts[k] - a)
                k += 1
            if added or not inner:
                add(a, b, 1 if added else self._stretch(text[a:b]))
                continue
            parts = self._split(text[a:b], inner)
            if parts is not None:
                for s, e, n in parts:
                    add(a + s, a + e, n)
                continue
            for s, e in self.offsets(text[a:b]):  # a boundary inside a pre-token: ask for offsets
                add(a + s, a + e, 1)
        return tokens, losses


def overlaps(start: int, end: int, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether the token [start, end) overlaps one of the sorted, disjoint `spans`.

    This is the loss rule: a token carries loss when any of its characters lies in a loss span
    (an empty token when it lies strictly inside one).
    """
    k = bisect.bisect_left(spans, (end,)) - 1  # the last span starting before `end`
    return k >= 0 and spans[k][1] > start
