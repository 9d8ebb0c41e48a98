"""Procedural retrieval tasks whose answers are known: topic retrieval and passkey retrieval.

Topic retrieval (LongChat's test, the paper's Figure 2): a conversation walks through N topics,
one user/assistant exchange each, then asks which topic came first. Topics are standard-library
modules and the assistant's turns are that module's documentation, so the conversation reads
naturally and needs no API. One cell per (N, trial); a trial draws its own topic order and its
N-topic conversation is the start of its longer ones, so the local backend reuses their KV.
Or, as the paper ran it, from LongChat's test files (`file`, read by `core.evals.topic_file`):
each row's recorded conversation and question go to the model as ONE user turn, and the first of
its topics is the expected answer (scored by substring, see `core.evals.runner.default_scorer`).
One cell per row.

Passkey retrieval (Landmark Attention's test): a random 5-digit pass key hidden in repeated
filler sentences at a depth, on the same length x depth grid as NIAH and built by the same
placement code. The answer starts with "The pass key is" by default: without it a small model
reads "What is the pass key?" as a request for a definition, and the score measures phrasing
rather than retrieval.

This module knows nothing about models, backends, scoring or result folders.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.evals.backends import Prompt, prefilled
from core.evals.niah import (
    GridCell,
    Haystack,
    _numbers,
    cell_key,
    check_answer_prefix,
    check_max_new_tokens,
    grid_axes,
    grid_prompts,
    haystack_end,
)
from core.evals.topic_file import TopicRow, read_topic_file

TOPIC_OPENING = "I would like to discuss the topic of the {topic} module."
TOPIC_QUESTION = "What is the first topic we discussed? Only give me the topic name."

PASSKEY_FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
# The classic test announces hidden information among irrelevant text and asks "What is the pass
# key?"; RULER's templates name what is hidden up front (its kind included), ask for it "in the
# provided text" and restate the question as the answer's start. Ours does the same in its own
# words: the instruction says what to look for, the question points back at the text. Only the
# needle may say "pass key is": after the prefix "The pass key is" a small model copies whatever
# followed those words earlier (an instruction that read "A pass key ... is hidden in the text"
# made it answer "The pass key is hidden in the text above").
PASSKEY_TEMPLATE = (
    "The text below hides a pass key, a 5-digit number, among many sentences that do not "
    "matter. Find the pass key and remember it: you will be asked for it after the text.\n\n"
    "{context}\n\n{question}"
)
PASSKEY_QUESTION = "What is the pass key in the text above?"
PASSKEY_PREFIX = "The pass key is"
# The wording of evaluations made before the answer prefix; their folders keep it on resume.
PASSKEY_TEMPLATE_V1 = (
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about it.\n\n{context}\n\n{question}"
)
PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."


@dataclass
class TopicsConfig:
    """Topic retrieval: accuracy against the number of topics (and so the length)."""

    n_topics: list[int] = field(default_factory=lambda: [2, 4, 8])
    """How many topics each conversation covers."""
    trials: int = 3
    """Conversations per topic count, each with its own topic order."""
    turn_tokens: int = 300
    """Length of the assistant's turn about each topic, in tokens."""
    seed: int = 0
    """Draws the topic orders."""
    question: str = TOPIC_QUESTION
    """Asked at the end."""
    max_new_tokens: int = 24
    """Longest answer, in tokens."""
    answer_prefix: str = ""
    """The start of the answer, which the model continues (e.g. "The first topic was");
    empty: none."""
    file: str = ""
    """A LongChat topic-retrieval test file (JSON lines: `prompt`, or `context` and `question`;
    `topics`; optional `num_topics`, `prompt_length`): each row is sent as one user turn and
    `n_topics` picks rows by their topic count (empty: every row); `trials`, `turn_tokens` and
    `seed` then play no part, and `question` is asked only after a `context` without one.
    Empty: conversations built from the built-in corpus."""

    kind = "topics"
    grid_fields = ("n_topics", "trials")

    def __post_init__(self) -> None:
        problems: list[str] = []
        # From a file, no topic counts means every row.
        empty = not (self.n_topics.strip() if isinstance(self.n_topics, str) else self.n_topics)
        counts = [] if self.file and empty else _numbers(self.n_topics, "n_topics", problems)
        if any(x < 1 or x != int(x) for x in counts):
            problems.append(f"n_topics must be whole numbers >= 1, got {counts}")
        if not isinstance(self.trials, int) or self.trials < 1:
            problems.append(f"trials must be a positive integer, got {self.trials!r}")
        if not isinstance(self.turn_tokens, int) or self.turn_tokens < 20:
            problems.append(f"turn_tokens must be an integer >= 20, got {self.turn_tokens!r}")
        if not str(self.question or "").strip():
            problems.append("question is empty")
        check_max_new_tokens(self.max_new_tokens, problems)
        self.answer_prefix = check_answer_prefix(self.answer_prefix, problems)
        if problems:
            raise ConfigError(problems)
        self.n_topics = sorted({int(x) for x in counts})
        self._rows: list[TopicRow] = []
        if self.file:
            self._rows = [
                r
                for r in read_topic_file(self.file, self.question)
                if not self.n_topics or r.num_topics in self.n_topics
            ]
            if not self._rows:
                raise ConfigError(
                    f"{self.file} has no rows of {', '.join(map(str, self.n_topics))} topics; "
                    "leave the topic counts empty to ask every row"
                )

    def cell_keys(self) -> list[str]:
        if self.file:
            return [_row_key(r) for r in self._rows]
        return [f"N{n}-T{t}" for t in range(self.trials) for n in self.n_topics]

    def longest(self) -> int:
        """Tokens in the longest prompt (about: each topic's turn, plus the question; a file's
        own lengths, or 4 characters a token)."""
        if self.file:
            return max(r.prompt_length or len(r.text) // 4 for r in self._rows)
        return max(self.n_topics) * self.turn_tokens

    def prompts(
        self, tokenizer: Any, skip: set[str] | frozenset[str] = frozenset()
    ) -> Iterator[Prompt]:
        """One conversation per (N, trial) not in `skip`; a trial's prompts share their start.
        From a file: each row not in `skip`, in the file's order, as one user turn."""
        from core.models.generation import prompt_ids
        from core.text.corpus import builtin_documents

        if self.file:
            yield from self._file_prompts(tokenizer, skip)
            return

        docs = builtin_documents(min_chars=4 * self.turn_tokens)
        need = max(self.n_topics)
        if len(docs) < need:
            raise LongCtxError(
                f"the built-in corpus has {len(docs)} topics long enough; ask for at most that many"
            )
        turns = {doc.title: _first_tokens(tokenizer, doc.text, self.turn_tokens) for doc in docs}
        for trial in range(self.trials):
            order = random.Random(f"{self.seed}-{trial}").sample(sorted(turns), need)
            for n in self.n_topics:
                key = f"N{n}-T{trial}"
                if key in skip:
                    continue
                messages = []
                for topic in order[:n]:
                    messages.append({"role": "user", "content": TOPIC_OPENING.format(topic=topic)})
                    messages.append({"role": "assistant", "content": turns[topic]})
                messages.append({"role": "user", "content": self.question})
                ids, messages = prefilled(
                    tokenizer, prompt_ids(tokenizer, messages), messages, self.answer_prefix
                )
                info = {
                    "length": len(ids),
                    "depth": 0.0,
                    "n_topics": n,
                    "trial": trial,
                    "expected": order[0],
                    "prompt_tokens": len(ids),
                }
                yield Prompt(key, ids, messages, info, self.answer_prefix)

    def _file_prompts(self, tokenizer: Any, skip: set[str] | frozenset[str]) -> Iterator[Prompt]:
        from core.models.generation import prompt_ids

        for row in self._rows:
            key = _row_key(row)
            if key in skip:
                continue
            messages = [{"role": "user", "content": row.text}]
            ids, messages = prefilled(
                tokenizer, prompt_ids(tokenizer, messages), messages, self.answer_prefix
            )
            info = {
                "length": len(ids),
                "depth": 0.0,
                "n_topics": row.num_topics,
                "row": row.row,
                "expected": row.expected,
                "prompt_tokens": len(ids),
                **({"file_prompt_length": row.prompt_length} if row.prompt_length else {}),
            }
            yield Prompt(key, ids, messages, info, self.answer_prefix)


def _row_key(row: TopicRow) -> str:
    return f"N{row.num_topics}-R{row.row}"


def _first_tokens(tokenizer: Any, text: str, n: int) -> str:
    """About the first `n` tokens of `text`, cut after a whole sentence where there is one."""
    hay = Haystack(tokenizer, text[: 8 * n + 200])
    end = haystack_end(hay.starts, min(n, len(hay.ids)))
    return tokenizer.decode(hay.ids[:end]).strip()


@dataclass
class PasskeyConfig:
    """Passkey retrieval on a length x depth grid."""

    lengths: list[int] = field(default_factory=lambda: [1000, 2000, 4000])
    """Prompt lengths in tokens."""
    depths: list[float] = field(default_factory=lambda: [0.0, 50.0, 100.0])
    """Pass key depths in percent: 0 = start of the filler, 100 = its end."""
    trials: int = 1
    """Pass keys per cell, each a fresh random number."""
    seed: int = 0
    """Draws the pass keys."""
    question: str = PASSKEY_QUESTION
    """Asked after the filler."""
    max_new_tokens: int = 24
    """Longest answer, in tokens."""
    answer_prefix: str = PASSKEY_PREFIX
    """The start of the answer, which the model continues (empty: none); the scorer reads it
    with the answer."""
    template: str = PASSKEY_TEMPLATE
    """The user message; `{context}` becomes the filler, `{question}` the question."""

    kind = "passkey"
    grid_fields = ("lengths", "depths", "trials")

    def __post_init__(self) -> None:
        problems: list[str] = []
        lengths, depths = grid_axes(self.lengths, self.depths, problems)
        if not isinstance(self.trials, int) or self.trials < 1:
            problems.append(f"trials must be a positive integer, got {self.trials!r}")
        check_max_new_tokens(self.max_new_tokens, problems)
        self.answer_prefix = check_answer_prefix(self.answer_prefix, problems)
        template = self.template or ""
        if template.count("{context}") != 1 or "{question}" not in template:
            problems.append("template must contain {context} once and {question}")
        if problems:
            raise ConfigError(problems)
        self.lengths, self.depths = lengths, depths

    def _cells(self) -> list[GridCell]:
        cells = []
        for length in self.lengths:
            for depth in self.depths:
                for trial in range(self.trials):
                    key = cell_key(length, depth, trial)
                    passkey = str(random.Random(f"{self.seed}-{key}").randint(10000, 99999))
                    needle = PASSKEY_NEEDLE.format(key=passkey)
                    cells.append(GridCell(key, length, depth, needle, passkey, {"trial": trial}))
        return cells

    def cell_keys(self) -> list[str]:
        return [c.key for c in self._cells()]

    def longest(self) -> int:
        """Tokens in the longest prompt."""
        return max(self.lengths)

    def prompts(
        self, tokenizer: Any, skip: set[str] | frozenset[str] = frozenset()
    ) -> Iterator[Prompt]:
        cells = [c for c in self._cells() if c.key not in skip]
        if not cells:
            return iter(())
        longest = max(c.length for c in cells)
        text = PASSKEY_FILLER * (longest // 15 + 10)  # the filler is ~20 tokens: some margin
        hay = Haystack(tokenizer, text)
        return grid_prompts(tokenizer, self.template, self.question, hay, cells, self.answer_prefix)
