"""The prompts sent to the generator for the paper's three LLM-written tasks, and how to fill them.

Two prompt sets (`SynthConfig.prompt_set`): `studio` asks about chosen passages, with a system
message; `paper` keeps the request structure of the paper's data notebooks (one user message,
temperature 0): single-detail QA over ~4,096-token chunks, multi-detail QA with the whole
context in one request (~10 questions), biographies of the main characters from one
whole-context request. The paper set's wording is ours; only its structure follows the notebooks.

Every prompt is a module-level constant that a user can override by name through
`SynthConfig.prompts` (the Generate tab shows them in editable boxes). Placeholders are written
`{name}` and only the known ones are replaced, so a prompt may show JSON examples with plain
braces. Changing a prompt changes the requests, so the reply cache treats them as new ones.

This module knows nothing about HTTP, tokenizers or documents; it only handles strings.
"""

from __future__ import annotations

import re

SYSTEM = (
    "You write question-answer training data from documents. Follow the requested output "
    "format exactly."
)

SINGLE_DETAIL = """Below is a passage from a long document.

<passage>
{passage}
</passage>

Write {n} question-answer pairs about specific details stated in this passage: names, numbers, \
dates, events, definitions, reasons. Each question will be asked to a reader of the whole \
document, so name the people, things or sections it is about instead of saying "the passage". \
Each answer must be stated in the passage, short and complete.

Reply with a JSON array only, no other text:
[{"question": "...", "answer": "..."}]"""

MULTI_DETAIL = """Below are {k} passages from different places of one long document.

{passages}

Write {n} questions that can only be answered by combining information from at least two of \
these passages: compare, connect, count or order what they say. Name what each question is \
about instead of saying "passage 1". Answer each in one to three sentences, using only the \
passages.

Reply with a JSON array only, no other text:
[{"question": "...", "answer": "..."}]"""

COMPARE = """Below are passages from {k} different documents.

{passages}

Write {n} questions that compare or connect these documents: what they have in common, how \
they differ, which one says what. Refer to each document by its title. Answer each in one to \
three sentences, using only the passages.

Reply with a JSON array only, no other text:
[{"question": "...", "answer": "..."}]"""

NAMES = """Below is a passage from a long document.

<passage>
{passage}
</passage>

List the main characters named in this passage: people, or in a non-fiction text the main named \
things it is about. Write each name exactly as it appears in the passage.

Reply with a JSON array of names only, no other text: ["...", "..."]"""

BIOGRAPHY = """Below are passages from a long document that mention {name}.

{passages}

Write a biography of {name} from these passages: who they are, what they do and what happens \
to them, in the order of the document. Use only facts stated in the passages. Reply with the \
biography only, one to three paragraphs of plain text."""

BIOGRAPHY_QUESTION = "Write a biography of {name} based on the text above."

REASK = (
    "\n\nYour previous reply could not be read as JSON. Reply again with the JSON only: "
    "no explanation, no code fence."
)

REASK_TEXT = "\n\nYour previous reply was empty. Reply with the text asked for."

PASSAGE_HEADER = "Passage {i} ({where}):"
"""Heads each passage in {passages}; {where} is a position or a document title."""

DOCUMENT_HEADER = "Document {i}: {title}"
"""Heads each document of a cluster context (this one is part of the training sample)."""

PAPER_SINGLE_DETAIL = """Here is an excerpt of a longer text.

<text>
{passage}
</text>

Using only this excerpt, not what you may know from elsewhere, write {n} exam questions with \
their answers. Each question is about a different detail of the excerpt, and together they cover \
all of it. Each answer is stated in the excerpt.

Reply with a JSON array only, no other text:
[{"question": "...", "answer": "..."}]"""

PAPER_MULTI_DETAIL = """Here is a long text, whole.

<text>
{context}
</text>

Using only this text, write {n} exam questions with their answers. First find the main \
characters and the main events of the text; then pick a few that are related and ask about \
them, so that each question needs several details, from different parts of the text, to compare \
or to reason about. Word the questions in varied ways.

Reply with a JSON array only, no other text:
[{"question": "...", "answer": "..."}]"""

PAPER_BIOGRAPHIES = """Here is a long text, whole.

<text>
{context}
</text>

Name the {k} main characters of this text (in a non-fiction text, the main people or things it \
is about), writing each name as the text does, and summarise each one: who they are, what they \
do and what happens to them, in the order of the text, using only what the text says.

Reply with a JSON array only, no other text:
[{"name": "...", "summary": "..."}]"""

PROMPT_SETS = ("studio", "paper")
"""`SynthConfig.prompt_set` values."""

PAPER_TEMPERATURE = 0.0
"""The paper's notebooks asked at temperature 0 (top_p 1, the API's default)."""

PAPER_ANSWER_TOKENS = 4096
"""...and let each answer run to 4,096 tokens (10 answers, or several biographies, need room)."""

PAPER_QUESTIONS = {"single-detail": 4, "multi-detail": 10}
"""Questions per request in the paper's notebooks: 4 per chunk, 10 per whole context."""

DEFAULTS: dict[str, str] = {
    "system": SYSTEM,
    "single_detail": SINGLE_DETAIL,
    "multi_detail": MULTI_DETAIL,
    "compare": COMPARE,
    "names": NAMES,
    "biography": BIOGRAPHY,
    "biography_question": BIOGRAPHY_QUESTION,
    "reask": REASK,
    "reask_text": REASK_TEXT,
    "passage_header": PASSAGE_HEADER,
    "document_header": DOCUMENT_HEADER,
    "paper_single_detail": PAPER_SINGLE_DETAIL,
    "paper_multi_detail": PAPER_MULTI_DETAIL,
    "paper_biographies": PAPER_BIOGRAPHIES,
}
"""Every prompt by the name `SynthConfig.prompts` overrides it with."""

REQUIRED: dict[str, tuple[str, ...]] = {
    "single_detail": ("passage",),
    "multi_detail": ("passages",),
    "compare": ("passages",),
    "names": ("passage",),
    "biography": ("name", "passages"),
    "biography_question": ("name",),
    "passage_header": ("i",),
    "document_header": ("title",),
    "paper_single_detail": ("passage",),
    "paper_multi_detail": ("context",),
    "paper_biographies": ("context",),
}
"""Placeholders a prompt must keep: without them every request would be the same."""

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def check_overrides(overrides: dict[str, str]) -> list[str]:
    """Every problem with user-edited prompts (unknown names, lost placeholders)."""
    problems = []
    for name, text in overrides.items():
        if name not in DEFAULTS:
            problems.append(f"unknown prompt {name!r}; prompts are {', '.join(DEFAULTS)}")
            continue
        if not isinstance(text, str):
            problems.append(f"prompt {name!r} must be text")
            continue
        missing = [p for p in REQUIRED.get(name, ()) if "{" + p + "}" not in text]
        if missing:
            problems.append(
                f"prompt {name!r} must keep the placeholder(s) "
                + ", ".join("{" + p + "}" for p in missing)
            )
    return problems


def fill(template: str, **values: object) -> str:
    """Replace `{key}` for the given keys only; other braces (JSON examples) stay as written."""
    return _PLACEHOLDER.sub(
        lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template
    )
