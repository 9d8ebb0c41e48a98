"""Procedural long-context tasks with exact answers: passkey, multi-key retrieval, topic recall.

Each task returns samples in the training format (`conversations` + metadata: `task`, `answer`,
`depth`, `length`), sized in tokens of a given tokenizer, with the evidence placed at a chosen
depth. No API, no downloaded text: the filler is built from a small seeded grammar, so any
machine makes the same set from the same seed.

Knows nothing about training or evaluation; both consume these samples.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError

TASKS = ("passkey", "keys", "topics")

_SUBJECTS = [
    "The river",
    "A small boat",
    "The old mill",
    "Every lantern",
    "The north road",
    "A quiet market",
    "The orchard",
    "Our neighbour",
    "The tall clock",
    "A grey cat",
    "The harbour wall",
    "The last train",
    "A paper kite",
    "The school bell",
]
_VERBS = [
    "drifts past",
    "waits beside",
    "leans toward",
    "circles",
    "hides behind",
    "faces",
    "rests near",
    "follows",
    "outlasts",
    "greets",
]
_OBJECTS = [
    "the stone bridge",
    "a field of barley",
    "the morning fog",
    "the baker's window",
    "an empty bench",
    "the copper roof",
    "a row of poplars",
    "the evening tide",
    "the chapel steps",
    "a pile of nets",
    "the hill path",
    "the painted gate",
]
_TAILS = [
    "",
    " at dawn",
    " in the rain",
    " without a sound",
    " once again",
    " as always",
    " before noon",
    " every autumn",
]
_TOPICS = [
    "astronomy",
    "beekeeping",
    "chess openings",
    "sourdough baking",
    "volcanoes",
    "medieval castles",
    "jazz piano",
    "coral reefs",
    "origami",
    "desert plants",
    "glaciers",
    "typography",
    "lighthouses",
    "falconry",
    "tea ceremonies",
    "bridges",
    "mushrooms",
    "sailing knots",
    "comets",
    "ancient maps",
]


def filler_sentence(rng: random.Random) -> str:
    return (
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}."
    )


@dataclass
class _Sizer:
    """Counts tokens of text pieces, remembering each piece (the grammar repeats a lot)."""

    tokenizer: Any
    cache: dict[str, int]

    def __call__(self, text: str) -> int:
        if text not in self.cache:
            self.cache[text] = len(
                self.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
            )
        return self.cache[text]


def _haystack(rng: random.Random, sizer: _Sizer, tokens: int) -> list[str]:
    sentences: list[str] = []
    total = 0
    while total < tokens:
        sentence = filler_sentence(rng)
        sentences.append(sentence)
        total += sizer(sentence)
    return sentences


def _insert_at_depth(sentences: list[str], needle: str, depth: float, sizer: _Sizer) -> str:
    """Put `needle` between sentences at `depth` (0 = first, 100 = last) of the token span."""
    sizes = [sizer(s) for s in sentences]
    target = sum(sizes) * depth / 100
    at, acc = 0, 0
    while at < len(sentences) and acc + sizes[at] / 2 < target:
        acc += sizes[at]
        at += 1
    return " ".join([*sentences[:at], needle, *sentences[at:]])


def _chat_len(tokenizer: Any, conversations: list[dict[str, str]]) -> int:
    ids = tokenizer.apply_chat_template(conversations, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def passkey(rng: random.Random, sizer: _Sizer, length: int, depth: float) -> dict[str, Any]:
    key = str(rng.randint(10000, 99999))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    intro = "There is a pass key hidden inside a lot of irrelevant text. Find it and remember it."
    question = "What is the pass key? Answer with the number only."
    body = _insert_at_depth(_haystack(rng, sizer, length), needle, depth, sizer)
    return _sample("passkey", f"{intro}\n\n{body}\n\n{question}", key, depth)


def keys(rng: random.Random, sizer: _Sizer, length: int, depth: float) -> dict[str, Any]:
    """Many key/value lines among the filler; the question asks for one of them."""

    def key_name() -> str:
        return f"{rng.choice(_TOPICS).split()[0]}-{rng.randint(100, 999)}"

    pairs: dict[str, str] = {}
    while len(pairs) < 8:
        pairs[key_name()] = str(rng.randint(1000, 9999))
    asked = rng.choice(list(pairs))
    sentences = _haystack(rng, sizer, length)
    for name, value in pairs.items():
        if name != asked:
            spot = rng.randrange(len(sentences) + 1)
            sentences.insert(spot, f"The value of key {name} is {value}.")
    needle = f"The value of key {asked} is {pairs[asked]}."
    body = _insert_at_depth(sentences, needle, depth, sizer)
    question = f"What is the value of key {asked}? Answer with the number only."
    return _sample("keys", f"Read the record below.\n\n{body}\n\n{question}", pairs[asked], depth)


def topics(rng: random.Random, sizer: _Sizer, length: int, n_topics: int) -> dict[str, Any]:
    """A conversation over several topics; the last question asks for the first one."""
    chosen = rng.sample(_TOPICS, min(n_topics, len(_TOPICS)))
    per_topic = max(16, length // len(chosen))
    turns: list[dict[str, str]] = []
    for topic in chosen:
        text = " ".join(_haystack(rng, sizer, per_topic - 24))
        turns.append({"role": "user", "content": f"Let's talk about {topic}. {text}"})
        turns.append({"role": "assistant", "content": f"Sure, {topic} it is."})
    turns.append(
        {"role": "user", "content": "What was the first topic we discussed? Name it only."}
    )
    turns.append({"role": "assistant", "content": chosen[0]})
    return {
        "conversations": turns,
        "task": "topics",
        "answer": chosen[0],
        "depth": 0.0,
        "n_topics": len(chosen),
    }


def _sample(task: str, prompt: str, answer: str, depth: float) -> dict[str, Any]:
    return {
        "conversations": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ],
        "task": task,
        "answer": answer,
        "depth": float(depth),
    }


def make(
    task: str,
    n: int,
    length: int,
    tokenizer: Any,
    seed: int = 0,
    depths: list[float] | None = None,
    n_topics: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Make `n` samples of `task`, each close to `length` tokens under `tokenizer`'s template.

    Args:
        task: `passkey`, `keys` or `topics`.
        n: number of samples.
        length: target total tokens per sample (chat template included).
        tokenizer: tokenizer whose tokens `length` counts.
        seed: same seed, same samples.
        depths: evidence depths in % to cycle through; default uniform random per sample.
        n_topics: topics per conversation (`topics` task).
        progress: called with (done, total).
    """
    if task not in TASKS:
        raise ConfigError(f"unknown procedural task {task!r}; choose from {', '.join(TASKS)}")
    if n < 1 or length < 32:
        raise ConfigError("procedural tasks need n >= 1 and length >= 32 tokens")
    if depths and any(not 0 <= d <= 100 for d in depths):
        raise ConfigError(f"depths are percentages from 0 (start) to 100 (end), got {depths}")
    rng = random.Random(seed)
    sizer = _Sizer(tokenizer, {})
    samples = []
    for i in range(n):
        depth = depths[i % len(depths)] if depths else round(rng.uniform(0, 100), 1)
        budget = length
        # The first pass measures the template/question overhead; later passes shrink to fit.
        for _ in range(4):
            state = rng.getstate()
            if task == "topics":
                sample = topics(rng, sizer, budget, n_topics)
            else:
                sample = (passkey if task == "passkey" else keys)(rng, sizer, budget, depth)
            actual = _chat_len(tokenizer, sample["conversations"])
            if actual <= length or budget <= 16:
                break
            budget = max(16, budget - (actual - length) - 4)
            rng.setstate(state)
        sample["length"] = actual
        sample["id"] = f"{task}-{seed}-{i}"
        samples.append(sample)
        if progress:
            progress(i + 1, n)
    return samples
