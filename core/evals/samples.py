"""Held-out samples: ask a model the questions of a dataset file, score its answers against the
file's.

The paper's synthetic tasks (single-detail and multi-detail QA, biographies) have reference
answers, so a few dozen samples kept out of training (`longctx data split`) measure what the
retrieval tests cannot: whether the model answers questions about long documents like its
training data asks them. Each assistant turn is one cell: the model gets the conversation before
that turn exactly as the file writes it (its own earlier answers never leak in), and its answer
is scored against the file's. The turns of a sample share their prefix, so the local backend
reads the document once per sample.

This module knows nothing about models, backends, scoring or result folders.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.evals.backends import Prompt, prefilled
from core.evals.niah import check_answer_prefix, check_max_new_tokens

TURNS = ("all", "last")


@dataclass(frozen=True)
class Question:
    """One assistant turn to ask: where it is in the file and what it should say."""

    key: str
    """`L12-T2`: the sample's line in the file and the answer's number in it (1-based)."""
    line: int
    turn: int
    messages: list[dict[str, str]]
    """The conversation up to the question, as written in the file."""
    question: str
    """The question alone (the first one without its document), for tables and judges."""
    expected: str
    task: str
    """The sample's `task` (or `source`) metadata, `-` when it has none."""


@dataclass
class SamplesConfig:
    """Questions of held-out chat samples, each answer scored against the file's."""

    dataset: str
    """A dataset file (JSONL, JSON array, Parquet, save_to_disk folder); its chat samples are
    asked, its text samples and malformed rows are skipped."""
    limit: int = 50
    """Ask the first this many chat samples of the file (a held-out file is already drawn at
    random)."""
    turns: str = "all"
    """`all`: every answer of a sample, each after the file's conversation so far; `last`: only
    the last answer."""
    max_new_tokens: int = 256
    """Longest answer, in tokens."""
    answer_prefix: str = ""
    """The start of every answer, which the model continues (for files whose answers all open
    alike); empty: none."""

    kind = "samples"
    grid_fields = ("limit",)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not str(self.dataset or "").strip():
            problems.append("dataset is empty: name the file of held-out samples")
        if not isinstance(self.limit, int) or self.limit < 1:
            problems.append(f"limit must be a positive integer, got {self.limit!r}")
        if self.turns not in TURNS:
            problems.append(f"turns must be one of {', '.join(TURNS)}, got {self.turns!r}")
        check_max_new_tokens(self.max_new_tokens, problems)
        self.answer_prefix = check_answer_prefix(self.answer_prefix, problems)
        if problems:
            raise ConfigError(problems)
        self._questions: list[Question] | None = None

    def questions(self) -> list[Question]:
        """The planned questions, read from the file once.

        Raises:
            LongCtxError: the file cannot be read or holds no chat sample with an answer.
        """
        if self._questions is None:
            self._questions = list(_read_questions(self.dataset, self.limit, self.turns))
            if not self._questions:
                raise LongCtxError(
                    f"{self.dataset} holds no chat sample with an answer to ask about; held-out "
                    "samples are {conversations: [user, assistant, ...]} rows"
                )
        return self._questions

    def cell_keys(self) -> list[str]:
        return [q.key for q in self.questions()]

    def longest(self) -> int:
        """Tokens in the longest prompt, estimated from its characters without a tokenizer
        (3 characters a token: more tokens than English text usually takes)."""
        return max(sum(len(m["content"]) for m in q.messages) for q in self.questions()) // 3

    def prompts(
        self, tokenizer: Any, skip: set[str] | frozenset[str] = frozenset()
    ) -> Iterator[Prompt]:
        """One prompt per question not in `skip`, in file order: a sample's turns follow each
        other, so each reuses the KV of the one before."""
        from core.models.generation import prompt_ids

        for q in self.questions():
            if q.key in skip:
                continue
            ids, messages = prefilled(
                tokenizer, prompt_ids(tokenizer, q.messages), q.messages, self.answer_prefix
            )
            info = {
                "length": len(ids),
                "line": q.line,
                "turn": q.turn,
                "task": q.task,
                "question": q.question,
                "expected": q.expected,
            }
            yield Prompt(q.key, ids, messages, info, self.answer_prefix)


def _read_questions(dataset: str, limit: int, turns: str) -> Iterator[Question]:
    from core.data import io, schema

    source = io.open_source(dataset)
    asked = 0
    for row in io.iter_raw(source):
        if asked >= limit:
            return
        if row.problems or row.kind != schema.CHAT:
            continue
        conversation = [
            {"role": str(t.get("role")), "content": str(t.get("content", ""))}
            for t in schema.turns(row.record)
        ]
        pairs = schema.qa_pairs(row.record)
        if not pairs:
            continue
        asked += 1
        numbered = list(enumerate(pairs, start=1))
        for number, (index, question, answer) in numbered[-1:] if turns == "last" else numbered:
            yield Question(
                key=f"L{row.line}-T{number}",
                line=row.line,
                turn=number,
                messages=conversation[:index],
                question=question.strip(),
                expected=answer,
                task=schema.task(row.record),
            )
