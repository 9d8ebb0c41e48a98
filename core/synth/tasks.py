"""The paper's three LLM-written tasks: which requests a context needs, and the sample they make.

- single-detail QA: one request per chunk (at most `chunk_tokens`) asking for question-answer
  pairs about that chunk; the sample is the whole context, then every pair (from chunks all
  across it, in shuffled order) as user/assistant turns.
- multi-detail QA: each request shows `passages` excerpts from different places of one document
  (homogeneous) or from different documents of one cluster (heterogeneous) and asks for
  questions needing several of them.
- biography: one request per chunk lists the characters named there; the ones mentioned most in
  the whole context are the main characters, and one request per character writes a biography
  from the chunks that mention them most. Each biography is a turn.

The `paper` prompt set keeps the request structure of the paper's notebooks instead: one user
message, no system one; single-detail over every chunk as above; multi-detail and biography in
one request per context carrying the whole context (the biographies come back with their names,
and each becomes a turn).

Answers are checked here: repeated questions are dropped, and a pair or biography whose content
words are mostly absent from the passages it was written from is flagged (or dropped).
This module knows nothing about HTTP, caching or files.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.synth import checks, prompts
from core.synth.parsing import QA
from core.synth.sources import Context, Counter, Passage

TASKS = ("single-detail", "multi-detail", "biography")
MULTI_MODES = ("both", "homogeneous", "heterogeneous")


@dataclass
class Ask:
    """One request to the generator and what its answer is for."""

    kind: str
    """`qa` (question-answer pairs), `names` (a list of characters), `biography` (text) or
    `biographies` (names with their biographies: the paper set's one request)."""
    messages: list[dict[str, str]]
    evidence: str
    """The source text the answer must rest on (for the support check)."""
    label: str
    """Where it comes from, for logs and the dry run: `<context id> chunk 3/12`."""
    depths: list[float] = field(default_factory=list)
    """Where its passages start in the context, in %."""
    name: str = ""
    """Biography: whose."""


@dataclass
class Answer:
    """An ask with the value read from its reply (pairs, names or text)."""

    ask: Ask
    value: Any
    replies: list[Any] = field(default_factory=list)
    """The generator's replies (`core.synth.client.Reply`): one, or two after a re-ask."""


@dataclass
class Built:
    """A finished sample, or why there is none."""

    sample: dict[str, Any] | None
    reason: str = ""
    flagged: int = 0
    duplicates: int = 0


def messages(templates: dict[str, str], user: str) -> list[dict[str, str]]:
    system = templates["system"].strip()
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": user}]


def spread(items: Sequence[Any], k: int) -> list[Any]:
    """`k` items evenly spread over the sequence (all of them when k is 0 or too large)."""
    n = len(items)
    if k <= 0 or k >= n:
        return list(items)
    if k == 1:
        return [items[n // 2]]
    return [items[round(i * (n - 1) / (k - 1))] for i in range(k)]


def _format_passages(templates: dict[str, str], chosen: list[Passage], by_title: bool) -> str:
    blocks = []
    for i, p in enumerate(chosen, 1):
        where = f'from "{p.title}"' if by_title else f"about {p.depth:.0f}% into the document"
        blocks.append(prompts.fill(templates["passage_header"], i=i, where=where) + "\n" + p.text)
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# Requests.


def single_detail_asks(
    ctx: Context,
    templates: dict[str, str],
    count: Counter,
    chunk_tokens: int,
    qa_per_chunk: int,
    chunks_per_doc: int = 0,
) -> list[Ask]:
    chosen = spread(ctx.passages(chunk_tokens, count), chunks_per_doc)
    asks = []
    for j, p in enumerate(chosen, 1):
        user = prompts.fill(templates["single_detail"], passage=p.text, n=qa_per_chunk)
        label = f"{ctx.id} chunk {j}/{len(chosen)}"
        asks.append(Ask("qa", messages(templates, user), p.text, label, [p.depth]))
    return asks


def multi_detail_asks(
    ctx: Context,
    templates: dict[str, str],
    count: Counter,
    chunk_tokens: int,
    qa_per_chunk: int,
    passages: int,
    requests: int,
    seed: int,
) -> list[Ask]:
    """`requests` asks over `passages` excerpts each, from different places or documents."""
    rng = random.Random(f"{seed}-{ctx.id}")
    # Excerpts share one chunk's budget, and are small enough that a context offers a few per
    # region: otherwise a short context would always give the same set.
    size = max(32, min(chunk_tokens // passages, ctx.tokens // (2 * passages)))
    excerpts = ctx.passages(size, count)
    heterogeneous = ctx.kind == "cluster"
    picks: list[list[Passage]] = []
    for _ in range(requests * 4):  # a few tries to find distinct sets
        if len(picks) >= requests:
            break
        chosen = _pick_excerpts(excerpts, passages, heterogeneous, rng)
        if len(chosen) >= 2 and chosen not in picks:
            picks.append(chosen)
    template = templates["compare" if heterogeneous else "multi_detail"]
    asks = []
    for j, chosen in enumerate(picks, 1):
        body = _format_passages(templates, chosen, by_title=heterogeneous)
        user = prompts.fill(template, passages=body, k=len(chosen), n=qa_per_chunk)
        evidence = "\n\n".join(p.text for p in chosen)
        label = f"{ctx.id} passages {j}/{len(picks)}"
        asks.append(
            Ask("qa", messages(templates, user), evidence, label, [p.depth for p in chosen])
        )
    return asks


def _pick_excerpts(
    excerpts: list[Passage], k: int, heterogeneous: bool, rng: random.Random
) -> list[Passage]:
    if heterogeneous:
        docs = sorted({p.doc for p in excerpts})
        chosen_docs = sorted(rng.sample(docs, min(k, len(docs))))
        return [rng.choice([p for p in excerpts if p.doc == d]) for d in chosen_docs]
    # One excerpt from each of k equal regions of the document: evidence spread across it.
    n = len(excerpts)
    k = min(k, n)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [excerpts[rng.randrange(bounds[i], bounds[i + 1])] for i in range(k)]


def name_asks(
    ctx: Context, templates: dict[str, str], count: Counter, chunk_tokens: int, chunks: int
) -> list[Ask]:
    chosen = spread(ctx.passages(chunk_tokens, count), chunks)
    asks = []
    for j, p in enumerate(chosen, 1):
        user = prompts.fill(templates["names"], passage=p.text)
        label = f"{ctx.id} names {j}/{len(chosen)}"
        asks.append(Ask("names", messages(templates, user), p.text, label, [p.depth]))
    return asks


def paper_asks(
    task: str,
    ctx: Context,
    templates: dict[str, str],
    count: Counter,
    chunk_tokens: int,
    questions: int,
    characters: int,
    chunks_per_doc: int = 0,
) -> list[Ask]:
    """The paper set's requests: one user message each, chunks or the whole context."""

    def user_only(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    if task == "single-detail":
        chosen = spread(ctx.passages(chunk_tokens, count), chunks_per_doc)
        return [
            Ask(
                "qa",
                user_only(
                    prompts.fill(templates["paper_single_detail"], passage=p.text, n=questions)
                ),
                p.text,
                f"{ctx.id} chunk {j}/{len(chosen)}",
                [p.depth],
            )
            for j, p in enumerate(chosen, 1)
        ]
    if task == "multi-detail":
        user = prompts.fill(templates["paper_multi_detail"], context=ctx.text, n=questions)
        return [Ask("qa", user_only(user), ctx.text, f"{ctx.id} whole context")]
    user = prompts.fill(templates["paper_biographies"], context=ctx.text, k=characters)
    return [Ask("biographies", user_only(user), ctx.text, f"{ctx.id} biographies")]


def split_biographies(ctx: Context, answer: Answer, characters: int) -> list[Answer]:
    """One answer per character of a `biographies` answer, keeping names the context contains.

    The replies stay with the first, so the sample's request count is the requests sent.
    """
    found = []
    for name, text in answer.value:
        if mentions(name, ctx.text) and name not in {a.ask.name for a in found}:
            ask = Ask(
                "biography", answer.ask.messages, ctx.text, f"{answer.ask.label}: {name}", name=name
            )
            found.append(Answer(ask, text, answer.replies if not found else []))
    return found[:characters]


def mentions(name: str, text: str) -> int:
    """Whole-word occurrences of `name` in `text` (case-sensitive)."""
    return len(re.findall(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text))


def main_characters(ctx: Context, names: list[list[str]], k: int) -> list[str]:
    """The `k` names mentioned most in the whole context (names never found there are dropped).

    A name inside a longer one ("Ann" in "Ann Miller") is merged into it: the longer name is
    kept, with the larger of the two counts.
    """
    scored: dict[str, int] = {}
    for name in (n.strip() for found in names for n in found):
        if name and name not in scored and len(name) <= 80:
            scored[name] = mentions(name, ctx.text)
    scored = {n: c for n, c in scored.items() if c > 0}
    for short in sorted(scored, key=len):
        longer = [n for n in scored if n != short and mentions(short, n)]
        for name in longer:
            scored[name] = max(scored[name], scored[short])
        if longer:
            del scored[short]
    return sorted(scored, key=lambda n: (-scored[n], n))[:k]


def biography_asks(
    ctx: Context, names: list[str], templates: dict[str, str], count: Counter, chunk_tokens: int
) -> list[Ask]:
    """Per character: the excerpts mentioning them most, up to one chunk's tokens, in order."""
    excerpts = ctx.passages(max(32, chunk_tokens // 4), count)
    asks = []
    for name in names:
        words = [w for w in name.split() if len(w) >= 3 and w[0].isupper()]
        score = {
            id(p): 2 * mentions(name, p.text) + sum(mentions(w, p.text) for w in words)
            for p in excerpts
        }
        ranked = sorted((p for p in excerpts if score[id(p)] > 0), key=lambda p: -score[id(p)])
        chosen, total = [], 0
        for p in ranked:
            if chosen and total + p.tokens > chunk_tokens:
                continue
            chosen.append(p)
            total += p.tokens
        if not chosen:
            continue
        chosen.sort(key=lambda p: p.depth)
        body = _format_passages(templates, chosen, by_title=False)
        user = prompts.fill(templates["biography"], name=name, passages=body)
        evidence = "\n\n".join(p.text for p in chosen)
        label = f"{ctx.id} biography of {name}"
        depths = [p.depth for p in chosen]
        asks.append(Ask("biography", messages(templates, user), evidence, label, depths, name))
    return asks


# ---------------------------------------------------------------------------------------------
# Samples.


def _one_line(text: str) -> str:
    return " ".join(text.split())


def qa_sample(
    task: str,
    ctx: Context,
    answers: list[Answer],
    *,
    min_support: float,
    drop_unsupported: bool,
    seed: int,
    metadata: dict[str, Any],
) -> Built:
    """The context and every checked pair as turns; None when no pair is left."""
    rows: list[tuple[QA, float, list[float]]] = []
    for answer in answers:
        for qa in answer.value:
            pair = QA(_one_line(qa.question), _one_line(qa.answer))
            rows.append((pair, checks.support(pair.answer, answer.ask.evidence), answer.ask.depths))
    kept, duplicates = checks.unique_questions([r[0].question for r in rows])
    rows = [rows[i] for i in kept]
    low = sum(1 for r in rows if r[1] < min_support)
    if drop_unsupported:
        rows = [r for r in rows if r[1] >= min_support]
    if not rows:
        reason = "no question-answer pair left" + (" after the checks" if kept else "")
        return Built(None, reason, low, duplicates)
    random.Random(f"{seed}-{ctx.id}").shuffle(rows)
    turns = [(r[0].question, r[0].answer) for r in rows]
    sample = _chat(ctx, turns)
    sample.update(_meta(task, ctx, metadata))
    sample["depths"] = [r[2] for r in rows]
    sample["checks"] = _checks([r[1] for r in rows], min_support, duplicates)
    return Built(sample, "", low, duplicates)


def biography_sample(
    ctx: Context,
    answers: list[Answer],
    question: str,
    *,
    min_support: float,
    drop_unsupported: bool,
    metadata: dict[str, Any],
) -> Built:
    rows = []
    for answer in answers:
        text = answer.value.strip()
        rows.append((answer.ask.name, text, checks.support(text, answer.ask.evidence)))
    low = sum(1 for r in rows if r[2] < min_support)
    if drop_unsupported:
        rows = [r for r in rows if r[2] >= min_support]
    if not rows:
        return Built(None, "no biography left", low)
    turns = [(prompts.fill(question, name=name), text) for name, text, _ in rows]
    sample = _chat(ctx, turns)
    sample.update(_meta("biography", ctx, metadata))
    sample["characters"] = [r[0] for r in rows]
    sample["checks"] = _checks([r[2] for r in rows], min_support, 0)
    return Built(sample, "", low)


def _chat(ctx: Context, turns: list[tuple[str, str]]) -> dict[str, Any]:
    conversations = []
    for i, (question, answer) in enumerate(turns):
        content = f"{ctx.text}\n\n{question}" if i == 0 else question
        conversations.append({"role": "user", "content": content})
        conversations.append({"role": "assistant", "content": answer})
    return {"conversations": conversations}


def _meta(task: str, ctx: Context, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"{task}-{ctx.id}",
        "task": task,
        "source": "; ".join(ctx.sources),
        "titles": ctx.titles,
        "context_kind": ctx.kind,
        "context_tokens": ctx.tokens,
        **metadata,
    }


def _checks(supports: list[float], min_support: float, duplicates: int) -> dict[str, Any]:
    return {
        "support": [round(s, 2) for s in supports],
        # Assistant turns (0-based in `conversations`) whose answer looks unsupported.
        "low_support_turns": [2 * i + 1 for i, s in enumerate(supports) if s < min_support],
        "duplicates_dropped": duplicates,
    }


def prompt_fingerprint(templates: dict[str, str]) -> str:
    """A short hash of the prompts in use: samples say which prompt version wrote them."""
    text = "\x00".join(f"{k}={templates[k]}" for k in sorted(templates))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
