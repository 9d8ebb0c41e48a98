"""Scoring an answer against the expected one: ROUGE-L recall or F1, keyword recall, exact
substring, a case-insensitive substring (LongChat's topic check), RULER's string matches, or an
LLM judge with a 1-10 rubric through any OpenAI-compatible endpoint.

Every scorer returns a score in [0, 1] so heatmaps of different scorers share one colour scale;
the judge's raw 1-10 grade is kept next to it. Text is compared as lower-case words with
punctuation removed, so "Dolores Park." matches "dolores park".

This module knows nothing about haystacks, models or result folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.evals.backends import Endpoint
from core.models.openai_compat import create_chat_completion

SCORERS = (
    "rouge_l",
    "rouge_l_f1",
    "keywords",
    "exact",
    "substring",
    "judge",
    "ruler",
    "match_all",
    "match_part",
)
PERPLEXITY = "perplexity"
"""Not a scorer of answers: perplexity evaluations measure the model's own token probabilities."""
SCORER_HELP = {
    "rouge_l": "ROUGE-L recall: the share of the expected answer's words the answer contains "
    "in order (no API needed)",
    "rouge_l_f1": "ROUGE-L F1: the words the answer shares with the expected answer in order, "
    "against the lengths of both (the paper's NIAH score: extra words cost too)",
    "keywords": "keyword recall: the share of the expected answer's content words that appear "
    "anywhere in the answer",
    "exact": "exact: 1 if the expected answer appears in the answer, word for word, else 0",
    "substring": "substring: 1 if the expected answer appears in the answer as written, case "
    "ignored, else 0 (LongChat's and the paper's topic-retrieval check)",
    "judge": "LLM judge: a model behind an OpenAI-compatible endpoint grades 1-10 (score = grade/10)",
    "ruler": "RULER's string match: the share of expected answers found in the answer "
    "(case-insensitive); where a task accepts alternatives (QA), any one of them counts",
    "match_all": "all string match: the share of every expected answer found in the answer",
    "match_part": "part string match: 1 as soon as any expected answer is in the answer",
}
STOPWORDS = frozenset(
    "a an and are as at be by do for from has have in is it its of on or so that the this to "
    "was were what which who with".split()
)
JUDGE_PROMPT = """You grade answers to a question about a long document.

Question: {question}
Reference answer: {expected}
Answer to grade: {answer}

Rubric:
10 - the answer states everything in the reference answer, with nothing wrong added.
7-9 - the answer has the reference's main point but misses or changes a detail.
4-6 - the answer is partly right: some of the reference's content, mixed with errors.
2-3 - the answer is related to the question but mostly wrong.
1 - the answer is wrong, empty, or unrelated to the reference.

Reply with the grade only, as a whole number from 1 to 10."""


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: `"Dolores Park."` -> `["dolores", "park"]`."""
    return re.findall(r"[0-9a-z]+(?:'[a-z]+)?", (text or "").lower())


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_recall(answer: str, expected: str) -> float:
    """Longest common word subsequence over the expected answer's length."""
    ref = words(expected)
    return _lcs(words(answer), ref) / len(ref) if ref else 0.0


def rouge_l_f1(answer: str, expected: str) -> float:
    """ROUGE-L F1: the harmonic mean of the longest common word subsequence over the answer's
    length (precision) and over the expected answer's (recall)."""
    got, ref = words(answer), words(expected)
    lcs = _lcs(got, ref)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(got), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def substring_match(answer: str, expected: str) -> float:
    """1.0 when the expected text appears in the answer, case ignored; punctuation and spacing
    count (LongChat's check: `target.lower() in output.lower()`)."""
    ref = (expected or "").strip().lower()
    return 1.0 if ref and ref in (answer or "").lower() else 0.0


def keyword_recall(answer: str, expected: str) -> float:
    """Share of the expected answer's distinct content words (stopwords left out) in the answer."""
    keys = {w for w in words(expected) if w not in STOPWORDS} or set(words(expected))
    have = set(words(answer))
    return len(keys & have) / len(keys) if keys else 0.0


def exact_match(answer: str, expected: str) -> float:
    """1.0 when the expected answer's words appear, contiguous and in order, in the answer."""
    ref, got = " ".join(words(expected)), " ".join(words(answer))
    return 1.0 if ref and f" {ref} " in f" {got} " else 0.0


def answer_groups(expected: Any) -> list[list[str]]:
    """Expected answers as groups of alternatives: a string is one group of one, a list of
    strings one group each (all needed), a list of lists is already grouped."""
    if isinstance(expected, str):
        return [[expected]]
    return [[x] if isinstance(x, str) else [str(a) for a in x] for x in expected or []]


def _found(answer: str, alternatives: list[str]) -> bool:
    # RULER turns control characters into newlines before matching; case is ignored.
    text = re.sub(r"[\x00-\x1f]", "\n", answer or "").strip().lower()
    return any(a.lower() in text for a in alternatives if a)


def ruler_match(answer: str, expected: Any) -> float:
    """RULER's string match: the share of answer groups with an alternative in the answer.
    `[["a"], ["b"]]` is RULER's string_match_all (each needed), `[["a", "b"]]` its
    string_match_part (any one will do)."""
    groups = answer_groups(expected)
    return sum(_found(answer, g) for g in groups) / len(groups) if groups else 0.0


def match_all(answer: str, expected: Any) -> float:
    """The share of every expected answer (alternatives included) found in the answer."""
    return ruler_match(answer, [[a] for g in answer_groups(expected) for a in g])


def match_part(answer: str, expected: Any) -> float:
    """1.0 as soon as any expected answer is in the answer."""
    return ruler_match(answer, [[a for g in answer_groups(expected) for a in g]])


def parse_grade(reply: str) -> int:
    """The first whole number 1-10 in a judge's reply.

    Raises:
        LongCtxError: the reply holds no grade.
    """
    match = re.search(r"(?<![0-9.])(10|[1-9])(?!\.?[0-9])", reply or "")
    if match is None:
        raise LongCtxError(f"the judge replied without a 1-10 grade: {reply[:200]!r}")
    return int(match.group(1))


@dataclass
class Scorer:
    """How answers are scored."""

    kind: str = "rouge_l"
    """One of `SCORERS` (or `perplexity`, for evaluations that score nothing)."""
    judge: Endpoint | None = None
    """The judge's endpoint (kind `judge` only)."""

    def __post_init__(self) -> None:
        if isinstance(self.judge, dict):
            self.judge = Endpoint(**self.judge)
        problems = []
        if self.kind not in (*SCORERS, PERPLEXITY):
            problems.append(f"scorer must be one of {', '.join(SCORERS)}, got {self.kind!r}")
        if self.kind == "judge" and self.judge is None:
            problems.append("the judge scorer needs an endpoint: base URL and model name")
        if problems:
            raise ConfigError(problems)
        self._client: Any = None

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "judge": self.judge.public() if self.judge else None}

    def score(self, answer: str, expected: str, question: str = "") -> dict[str, Any]:
        """`{"score": float in [0, 1]}`, plus `"grade"` (1-10) for the judge.

        A judge reply without a grade gives `score` None and keeps the reply as `judge_reply`
        (one unparsable reply must not end a long run); an unreachable judge raises.
        """
        matchers = {"ruler": ruler_match, "match_all": match_all, "match_part": match_part}
        if self.kind in matchers:
            return {"score": round(matchers[self.kind](answer, expected), 4)}
        if not isinstance(expected, str):  # RULER's answer groups, for a text scorer
            expected = " ".join(g[0] for g in answer_groups(expected) if g)
        if self.kind == "rouge_l":
            return {"score": round(rouge_l_recall(answer, expected), 4)}
        if self.kind == "rouge_l_f1":
            return {"score": round(rouge_l_f1(answer, expected), 4)}
        if self.kind == "keywords":
            return {"score": round(keyword_recall(answer, expected), 4)}
        if self.kind == "substring":
            return {"score": substring_match(answer, expected)}
        if self.kind == "exact":
            return {"score": exact_match(answer, expected)}
        if self.kind == PERPLEXITY:
            raise LongCtxError("perplexity is measured from the model, not scored from answers")
        grade, reply = self.grade(answer, expected, question)
        if grade is None:
            return {"score": None, "grade": None, "judge_reply": reply[:500]}
        return {"score": grade / 10, "grade": grade}

    def grade(self, answer: str, expected: str, question: str) -> tuple[int | None, str]:
        """Ask the judge for a 1-10 grade (greedy; asked twice if the reply has no number).

        Returns:
            (grade or None, the judge's last reply).

        Raises:
            LongCtxError: the judge endpoint failed (unreachable, refused, ...).
        """
        import openai

        assert self.judge is not None
        if self._client is None:
            self._client = self.judge.client(timeout=120)
        prompt = JUDGE_PROMPT.format(question=question, expected=expected, answer=answer or "")
        reply = ""
        for _ in range(2):
            try:
                response = create_chat_completion(
                    self._client,
                    model=self.judge.model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=8,
                    temperature=0,
                )
            except openai.APIError as exc:
                raise LongCtxError(
                    f"the judge at {self.judge.base_url} failed: {str(exc)[:300]}"
                ) from exc
            reply = response.choices[0].message.content or ""
            try:
                return parse_grade(reply), reply
            except LongCtxError:
                continue
        return None, reply
