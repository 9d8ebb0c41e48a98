"""RULER's synthetic task families, built offline for any tokenizer and any length.

RULER (Hsieh et al., 2024) measures a long-context model with tasks whose answers are known:
needles in a haystack with one or several keys, values and queries; variable tracking along a
chain of assignments; extracting the most common words of a long list (cwe) or the most frequent
made-up words of a long text (fwe); and question answering over many documents. lm-eval ships a
RULER, but it cannot run here: it downloads Paul Graham's essays for its haystack, draws words
from the `wonderwords` package, and loads the tokenizer by Hub name, so the tasks are generated
here instead, with our own wording, on RULER's definitions (13 tasks, same needle counts, same
frequencies, same scoring).

Speed comes from tokenizing once: a haystack is tokenized once (with character offsets, so that
any token span maps back to its exact text), word pools are tokenized once, and each sample is
spliced from token-id pieces and their texts. A sample's `build(budget)` fills exactly `budget`
tokens of context, give or take part of a sentence or list item (at most 1% of the target).

This module knows nothing about chat templates, models, backends or result folders.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import LongCtxError
from core.evals.niah import haystack_end, needle_position, sentence_starts
from core.evals.retrieval import PASSKEY_FILLER

NOISE = PASSKEY_FILLER
"""RULER's noise haystack: a filler sentence repeated (the passkey task's)."""

ADJECTIVES = (
    "amber brave calm clever crisp curly dusty eager fancy fierce gentle gloomy golden grand "
    "happy hollow humble icy jolly keen lively lucky mellow misty modest narrow noble odd "
    "plain polite proud quick quiet rapid rough rusty shiny silent silver sleepy slim smooth "
    "solid sour spare steady stormy sunny swift tall tame tender tidy tiny vivid warm wild "
    "windy wise witty young"
).split()
NOUNS = (
    "anchor apple badger banjo basket beacon bison bridge cactus candle canyon castle cedar "
    "comet copper dolphin falcon feather forest fountain garden glacier harbor helmet island "
    "jacket kettle ladder lantern lemon meadow mirror needle orchard otter paddle parrot "
    "pebble pepper pillow planet pocket quarry rabbit ribbon river saddle salmon shovel spider "
    "squirrel statue teapot thistle tiger tunnel violin walnut whistle window wizard zebra"
).split()
VALUE_WORDS = {"number": "number", "word": "word", "uuid": "code"}
NEEDLE = "The hidden {kind} tied to {key} is {value}."


@dataclass
class Sample:
    """One sample before its prompt is assembled: the question and what answers it are known
    first (the prompt's frame is measured from them), the context is built for the room left."""

    template: str
    """The user message, with `{context}` and `{question}`."""
    question: str
    prefix: str
    """RULER's answer prefix: the start of the assistant's reply, fed before it answers."""
    expected: list[list[str]]
    """Every group must be found in the reply; any alternative within a group will do."""
    build: Callable[[int], tuple[list[int], str, dict[str, Any]]]
    """budget -> (context ids, context text, cell fields such as depths and needle positions)."""
    depth: float = 0.0
    """The first needle's depth (percent), known before the context is built: samples go
    deepest first, the order in which neighbours share the longest haystack prefix."""


# ---------------------------------------------------------------------------------------------
# Token sources with their texts.


class Tokens:
    """Token ids of a text, with each token boundary's character offset (`bounds`, one more than
    ids) and the positions where a piece (a sentence, a list item) starts (`starts`)."""

    def __init__(self, ids: list[int], text: str, bounds: list[int], starts: list[int]):
        self.ids, self.text, self.bounds, self.starts = ids, text, bounds, starts

    @classmethod
    def encode(cls, tokenizer: Any, text: str) -> Tokens:
        """Tokenize `text` once; pieces are its sentences (`core.evals.niah.sentence_starts`)."""
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        # A token's text runs from the previous token's end to its own end, so leading spaces
        # belong to the token they precede and the pieces cover the text exactly once.
        bounds = [0] + [end for _, end in enc["offset_mapping"]]
        texts = [text[bounds[i] : bounds[i + 1]] for i in range(len(enc["input_ids"]))]
        return cls(list(enc["input_ids"]), text, bounds, sentence_starts(texts))

    def span(self, a: int, b: int) -> tuple[list[int], str]:
        return self.ids[a:b], self.text[self.bounds[a] : self.bounds[b]]


def place(
    tokenizer: Any,
    hay: Tokens,
    room: int,
    needles: Sequence[str],
    depths: Sequence[float],
    slack: int,
) -> tuple[list[int], str, dict[str, Any]]:
    """Fill `room` tokens: the haystack's start with `needles` at `depths` (percent, in order).

    The haystack is cut after a whole piece when that loses at most `slack` tokens, else at the
    exact token (the length correction: a long sentence would otherwise leave the prompt short).
    Each needle goes to the piece boundary nearest its depth.

    Raises:
        LongCtxError: the needles alone do not fit.
    """
    # A needle follows a space, or at the very start is followed by one.
    inner = [" " + n for n in needles] + [n + " " for n in needles]
    enc = tokenizer(inner, add_special_tokens=False)["input_ids"]
    after, first = enc[: len(needles)], enc[len(needles) :]
    free = room - sum(len(ids) for ids in after) - max(0, max(map(len, first)) - len(after[0]))
    if free < 1:
        raise LongCtxError(f"{room} tokens leave no room for a haystack around the needles")
    free = min(free, len(hay.ids))
    end = haystack_end(hay.starts, free)
    if free - end > slack:
        end = free
    positions = [needle_position(hay.starts, end, d) for d in depths]
    ids: list[int] = []
    texts: list[str] = []
    at, prev = [], 0
    for n, pos in enumerate(positions):
        needle_ids, needle_text = (
            (first[n], inner[len(needles) + n]) if pos == 0 else (after[n], inner[n])
        )
        part_ids, part_text = hay.span(prev, pos)
        ids += part_ids
        texts.append(part_text)
        at.append(len(ids))
        ids += needle_ids
        texts.append(needle_text)
        prev = pos
    part_ids, part_text = hay.span(prev, end)
    info = {
        "depths": [float(d) for d in depths],
        "actual_depths": [round(100 * p / end, 2) if end else 0.0 for p in positions],
        "needle_tokens": at,
        "haystack_tokens": end,
    }
    return ids + part_ids, "".join(texts) + part_text, info


# ---------------------------------------------------------------------------------------------
# Keys and values.


def draw(rng: random.Random, kind: str) -> str:
    """A random key or value: `word` (adjective-noun), `number` (7 digits) or `uuid`."""
    if kind == "word":
        return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    if kind == "number":
        return str(rng.randint(1_000_000, 9_999_999))
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def distinct(rng: random.Random, kind: str, n: int, taken: set[str] | None = None) -> list[str]:
    taken = set() if taken is None else taken
    out = []
    while len(out) < n:
        x = draw(rng, kind)
        if x not in taken:
            taken.add(x)
            out.append(x)
    return out


def spread_depths(rng: random.Random, n: int, index: int) -> list[float]:
    """RULER's needle depths: 40 evenly spaced depths from 0 to 100; one needle walks through
    them sample by sample, several draw distinct ones at random (sorted)."""
    grid = [round(100 * i / 39) for i in range(40)]
    if n == 1:
        return [float(grid[index % len(grid)])]
    return [float(d) for d in sorted(rng.sample(grid, n))]


# ---------------------------------------------------------------------------------------------
# Needle tasks.


@dataclass(frozen=True)
class NeedleSpec:
    """One of RULER's needle tasks."""

    haystack: str = "essay"
    """`noise` (a filler sentence repeated), `essay` (the configured text) or `needles`
    (distractor needles all the way)."""
    key: str = "word"
    value: str = "number"
    keys: int = 1
    """Needles with other keys besides the asked one (multi-key)."""
    values: int = 1
    """Values tied to the asked key (multi-value)."""
    queries: int = 1
    """Keys asked about at once (multi-query)."""


NEEDLE_TEMPLATE = (
    "The long text below hides a few {kinds}, each tied to a name. Keep them in mind: a "
    "question about them follows the text.\n\n{context}\n\n{question}"
)


def needle_sample(env: Any, spec: NeedleSpec, rng: random.Random, index: int) -> Sample:
    kind = VALUE_WORDS[spec.value]
    n_keys = max(spec.keys, spec.queries)
    keys = distinct(rng, spec.key, n_keys)
    asked = keys[: spec.queries]
    values = {k: distinct(rng, spec.value, spec.values if k == keys[0] else 1) for k in keys}
    needles = [(k, v) for k in keys for v in values[k]]
    rng.shuffle(needles)
    if spec.queries == 1 and spec.values == 1:
        question = f"Which {kind} is tied to {asked[0]} in the text above?"
        prefix = f"The {kind} tied to {asked[0]} in the text is"
    else:
        names = ", ".join(asked[:-1]) + (" and " if len(asked) > 1 else "") + asked[-1]
        question = f"Which {kind}s are tied to {names} in the text above? Name every one."
        prefix = f"The {kind}s tied to {names} in the text are:"
    expected = [[v] for k in asked for v in values[k]]
    depths = spread_depths(rng, len(needles), index)
    texts = [NEEDLE.format(kind=kind, key=k, value=v) for k, v in needles]

    def build(room: int) -> tuple[list[int], str, dict[str, Any]]:
        hay = env.haystack(spec.haystack, room, rng, spec, set(keys))
        ids, text, info = place(env.tokenizer, hay, room, texts, depths, env.slack)
        return ids, text, {**info, "needles": texts}

    template = NEEDLE_TEMPLATE.replace("{kinds}", f"{kind}s")
    return Sample(template, question, prefix, expected, build, depths[0])


class NeedlePool:
    """Distractor needles for RULER's multi-key 2 and 3 (the haystack is needles all the way),
    tokenized once for a configuration; each sample takes them in its own random order, leaving
    out its own keys. Word keys have 4,096 adjective-noun pairs: past half of them (a haystack
    of ~40K tokens) distractor keys repeat, which leaves the question unambiguous."""

    def __init__(self, tokenizer: Any, spec: NeedleSpec, tokens: int, seed: str):
        rng = random.Random(seed)
        kind = VALUE_WORDS[spec.value]
        probe = " " + NEEDLE.format(kind=kind, key=draw(rng, spec.key), value=draw(rng, spec.value))
        n = (
            int(tokens / max(1, len(tokenizer(probe, add_special_tokens=False)["input_ids"])) * 1.2)
            + 50
        )
        space = len(ADJECTIVES) * len(NOUNS) if spec.key == "word" else n
        self.keys = distinct(rng, spec.key, min(n, space // 2))
        self.keys += [draw(rng, spec.key) for _ in range(n - len(self.keys))]
        pieces = [
            " " + NEEDLE.format(kind=kind, key=k, value=draw(rng, spec.value)) for k in self.keys
        ]
        enc = tokenizer(pieces, add_special_tokens=False, return_offsets_mapping=True)
        self.items = [
            (list(ids), text, [end for _, end in offsets])
            for text, ids, offsets in zip(
                pieces, enc["input_ids"], enc["offset_mapping"], strict=True
            )
        ]

    def haystack(self, rng: random.Random, taken: set[str]) -> Tokens:
        """The distractors in a random order, without the keys in `taken`."""
        ids: list[int] = []
        texts: list[str] = []
        bounds, starts, offset = [0], [], 0
        for i in rng.sample(range(len(self.items)), len(self.items)):
            if self.keys[i] in taken:
                continue
            item_ids, text, ends = self.items[i]
            starts.append(len(ids))
            ids += item_ids
            bounds += [offset + e for e in ends]
            offset += len(text)
            bounds[-1] = offset
            texts.append(text)
        return Tokens(ids, "".join(texts), bounds, starts)


# ---------------------------------------------------------------------------------------------
# Variable tracking.

VT_TEMPLATE = (
    "Variable assignments are scattered through the text below. Follow them: a question about "
    "which variables end up with a value follows the text.\n\n{context}\n\n{question}"
)


def vt_chain(rng: random.Random, hops: int) -> tuple[list[str], str, list[str]]:
    """Variable names (5 capitals each), the value, and the assignment lines of one chain."""
    names: list[str] = []
    while len(names) < hops + 1:
        name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
        if name not in names:
            names.append(name)
    value = str(rng.randint(10_000, 99_999))
    lines = [f"VAR {names[0]} = {value}."]
    lines += [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:], strict=False)]
    return names, value, lines


def worked_example(template: str, context: str, question: str, prefix: str, answer: str) -> str:
    """A solved instance of a task, placed before the real one (RULER gives cwe and vt one)."""
    body = template.replace("{context}", context).replace("{question}", question)
    return f"{body}\n{prefix} {answer}\n\n"


def vt_sample(env: Any, rng: random.Random, index: int, hops: int = 4) -> Sample:
    """One chain of `hops` + 1 variables (RULER: 1 chain, 4 hops) in noise, in chain order;
    with `env.config.examples`, after a solved chain in a little noise (RULER's one example, a
    few hundred tokens)."""

    def ask(value: str) -> tuple[str, str]:
        return (
            f"Which variables are assigned the value {value}, directly or through others?",
            f"The variables assigned the value {value} are:",
        )

    names, value, lines = vt_chain(rng, hops)
    question, prefix = ask(value)
    depths = spread_depths(rng, len(lines), index)
    template = VT_TEMPLATE
    if env.config.examples:
        ex_names, ex_value, ex_lines = vt_chain(rng, hops)
        while set(ex_names) & set(names) or ex_value == value:
            ex_names, ex_value, ex_lines = vt_chain(rng, hops)
        filler = NOISE.strip() if env.length < 4096 else " ".join([NOISE.strip()] * 3)
        context = " ".join(f"{filler} {line}" for line in ex_lines) + " " + filler
        template = (
            worked_example(
                VT_TEMPLATE,
                context,
                *ask(ex_value),
                ", ".join(ex_names) + ".",
            )
            + VT_TEMPLATE
        )

    def build(room: int) -> tuple[list[int], str, dict[str, Any]]:
        ids, text, info = place(env.tokenizer, env.noise(), room, lines, depths, env.slack)
        return ids, text, {**info, "needles": lines}

    return Sample(template, question, prefix, [[n] for n in names], build, depths[0])


# ---------------------------------------------------------------------------------------------
# Common words (cwe) and frequent words (fwe).

CWE_TEMPLATE = (
    "Below is a long numbered list of words. Some words come up many times, most only a "
    "few.\n\n{context}\n\n{question}"
)
FWE_TEMPLATE = (
    "Below is a long text of made-up words. Some of them occur far more often than the "
    "others.\n\n{context}\n\n{question}"
)


def cwe_sample(
    env: Any, rng: random.Random, n_common: int = 10, common: int = 30, rare: int = 3
) -> Sample:
    """RULER's common-words extraction: 10 words 30 times each among many words 3 times each.
    At short lengths, where 300 items would not fit, both counts shrink so the common ones fill
    at most half the list (and stay more frequent than every other word)."""
    question = f"Which {n_common} words occur most often in the list above?"
    prefix = f"The {n_common} words that occur most often in the list are:"
    order = env.words_order(rng)
    chosen = order[:n_common]
    template = CWE_TEMPLATE
    if env.config.examples:
        # RULER's one example: 10 words 3 times among 10 once under 4K tokens, else 10 words
        # 10 times among 30 words 3 times; its words come from the end of this sample's order.
        short = env.length < 4096
        f_common, f_rare, n_rare = (3, 1, 10) if short else (10, 3, 30)
        pool = order[-(n_common + n_rare) :]
        items = [w for w in pool[:n_common] for _ in range(f_common)]
        items += [w for w in pool[n_common:] for _ in range(f_rare)]
        random.Random(" ".join(pool)).shuffle(items)  # the sample's own draws stay as they were
        template = (
            worked_example(
                CWE_TEMPLATE,
                "".join(f" {i + 1}. {w}" for i, w in enumerate(items)),
                question,
                prefix,
                ", ".join(pool[:n_common]) + ".",
            )
            + CWE_TEMPLATE
        )

    def build(room: int) -> tuple[list[int], str, dict[str, Any]]:
        words, numbers = env.word_ids, env.number_ids
        per_item = 2 + sum(len(words[w]) for w in order[:50]) / 50
        fit = int(room / per_item)
        f_common = max(2, min(common, fit // (2 * n_common)))
        f_rare = max(1, min(rare, f_common - 1))
        items = [w for w in chosen for _ in range(f_common)]
        used = sum(len(words[w]) for w in chosen) * f_common
        used += sum(len(numbers(i + 1)) for i in range(len(items)))
        for w in order[n_common:]:  # rare words while whole groups fit, then single ones
            for take in (f_rare, 1):
                cost = take * len(words[w]) + sum(
                    len(numbers(len(items) + j + 1)) for j in range(take)
                )
                if used + cost <= room:
                    items += [w] * take
                    used += cost
                    break
            else:
                break
        rng.shuffle(items)
        ids = [t for i, w in enumerate(items) for t in (*numbers(i + 1), *words[w])]
        text = "".join(f" {i + 1}. {w}" for i, w in enumerate(items))
        return (
            ids,
            text,
            {"counts": {w: f_common for w in chosen}, "items": len(items), "rare_count": f_rare},
        )

    return Sample(template, question, prefix, [[w] for w in chosen], build)


def fwe_sample(env: Any, rng: random.Random, top: int = 3, alpha: float = 2.0) -> Sample:
    """RULER's frequent-words extraction: made-up words whose counts follow a Zipf law
    (alpha 2.0); the answer is the three most frequent."""
    question = f"Which {top} made-up words occur most often in the text above?"
    prefix = f"The {top} made-up words that occur most often in the text are:"
    vocab = rng.sample(env.coded, len(env.coded))
    chosen = vocab[:top]

    def build(room: int) -> tuple[list[int], str, dict[str, Any]]:
        lengths = [len(env.coded_ids[w]) for w in vocab]
        weights = [1 / (r + 1) ** alpha for r in range(len(vocab))]
        total = sum(weights)

        def counts(n: int) -> list[int]:
            return [int(n * w / total) for w in weights]

        lo, hi = 1, room + 1  # the most occurrences whose tokens fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if sum(c * k for c, k in zip(counts(mid), lengths, strict=False)) <= room:
                lo = mid
            else:
                hi = mid - 1
        n = counts(lo)
        if len({*n[: top + 1]}) <= top or n[top] >= n[top - 1]:
            raise LongCtxError(f"{room} tokens are too few for a frequent-words sample")
        items = [w for w, c in zip(vocab, n, strict=False) for _ in range(c)]
        rng.shuffle(items)
        ids = [t for w in items for t in env.coded_ids[w]]
        return ids, "".join(" " + w for w in items), {"counts": dict(zip(chosen, n, strict=False))}

    return Sample(FWE_TEMPLATE, question, prefix, [[w] for w in chosen], build)


def pseudo_words(n: int, seed: str = "ruler") -> list[str]:
    """`n` distinct pronounceable made-up words (consonant-vowel syllables)."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        word = "".join(
            rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 3))
        )
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def corpus_words(texts: Sequence[str]) -> list[str]:
    """Distinct lower-case words of 4 to 10 letters, sorted (the same list on every run)."""
    found: set[str] = set()
    for text in texts:
        found.update(re.findall(r"\b[a-z]{4,10}\b", text))
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# Question answering over documents (the user's SQuAD or HotpotQA file).

QA_TEMPLATE = (
    "Read the documents below, then answer the question that follows with the answer alone, "
    "in as few words as it takes.\n\n{context}\n\nQuestion: {question}"
)


@dataclass
class QaSet:
    """Questions with their answers and gold documents, and every document to draw from."""

    questions: list[tuple[str, list[str], list[int]]] = field(default_factory=list)
    """(question, accepted answers, indices of its gold documents in `docs`)."""
    docs: list[str] = field(default_factory=list)


def read_qa(path: str | Path) -> QaSet:
    """A SQuAD-format file (`{"data": [{"paragraphs": [{"context", "qas"}]}]}`) or a
    HotpotQA-format one (`[{"question", "answer", "context": [[title, [sentences]]]}]`).

    Raises:
        LongCtxError: the file is neither, or holds no answerable question.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LongCtxError(f"cannot read QA file {path}: {exc}") from exc
    qa = QaSet()
    index: dict[str, int] = {}

    def doc(text: str) -> int:
        if text not in index:
            index[text] = len(qa.docs)
            qa.docs.append(text)
        return index[text]

    if isinstance(data, dict) and isinstance(data.get("data"), list):  # SQuAD
        for article in data["data"]:
            for para in article.get("paragraphs", []):
                d = doc(para["context"])
                for q in para.get("qas", []):
                    answers = [a["text"] for a in q.get("answers", []) if a.get("text")]
                    if answers and not q.get("is_impossible"):
                        qa.questions.append((q["question"], sorted(set(answers)), [d]))
    elif isinstance(data, list) and data and isinstance(data[0], dict) and "context" in data[0]:
        for item in data:  # HotpotQA: every paragraph of its context is a document
            golds = {t for t, _ in item.get("supporting_facts", [])}
            ids = [doc(f"{t}\n{''.join(s)}") for t, s in item["context"] if t in golds or not golds]
            qa.questions.append((item["question"], [str(item["answer"])], ids))
            for t, s in item["context"]:
                doc(f"{t}\n{''.join(s)}")
    if not qa.questions:
        raise LongCtxError(
            f"{path} holds no answerable question: give a SQuAD-format file "
            '({"data": [{"paragraphs": [{"context", "qas"}]}]}) or a HotpotQA-format one '
            '([{"question", "answer", "context"}])'
        )
    return qa


def qa_sample(env: Any, qa: QaSet, rng: random.Random, index: int) -> Sample:
    """RULER's QA: the question's gold documents among distractors (the other questions'
    documents, in a random order), as many as fit; the last distractor is cut to the exact room
    left, so the gold documents always stay whole."""
    question, answers, golds = qa.questions[index % len(qa.questions)]
    others = [i for i in rng.sample(range(len(qa.docs)), len(qa.docs)) if i not in golds]

    def build(room: int) -> tuple[list[int], str, dict[str, Any]]:
        header = len(env.piece_ids("Document 10:\n"))  # about every header's length
        used = sum(len(env.doc_ids(qa, g)) + header for g in golds)
        if used > room:
            raise LongCtxError(f"the gold documents of {question!r} alone exceed {room} tokens")
        picked: list[int] = []
        for d in others:
            if used >= room:
                break
            picked.append(d)
            used += len(env.doc_ids(qa, d)) + header
        if used < room:
            raise LongCtxError(
                f"the QA file's {len(qa.docs)} documents fill only ~{used} of {room} tokens; "
                "give a larger file or shorter lengths"
            )
        for g in golds:  # before the last distractor, the one that may be cut
            picked.insert(rng.randint(0, max(0, len(picked) - 1)), g)
        ids: list[int] = []
        texts: list[str] = []
        gold_at: list[int] = []
        reserve = sum(len(env.doc_ids(qa, g)) + header for g in golds)  # golds still to come
        for d in picked:
            head = f"Document {len(texts) + 1}:\n"
            piece_ids = env.piece_ids(head) + env.doc_ids(qa, d)
            piece_text = head + qa.docs[d] + "\n\n"
            if d in golds:
                gold_at.append(len(ids))
                reserve -= len(env.doc_ids(qa, d)) + header
            else:
                left = room - len(ids) - reserve
                if left <= header:
                    continue
                if len(piece_ids) > left:
                    piece_ids, piece_text = env.cut(piece_text, left)
            ids += piece_ids
            texts.append(piece_text)
        depths = [round(100 * a / max(1, len(ids)), 2) for a in gold_at]
        return (
            ids,
            "".join(texts),
            {
                "depths": depths,
                "actual_depths": depths,
                "needle_tokens": gold_at,
                "documents": len(texts),
            },
        )

    return Sample(QA_TEMPLATE, question, "Answer:", [answers], build)
