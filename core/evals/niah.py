"""Needle in a haystack: the length x depth grid, needle placement in token space, prompts.

A cell asks one question of a prompt of `length` tokens (template and question included) whose
haystack hides the needle sentence at `depth` percent: 0 is the very start of the haystack, 100
its very end. The haystack is cut at a sentence end and the needle goes in at the sentence
boundary nearest the requested depth, both counted in the evaluated model's own tokens, so the
needle is never glued into the middle of a sentence and the prompt never exceeds `length`.

`PRESETS` name whole setups: `paper` is the paper's NIAH as its released code runs it (needle as
a paragraph of its own, "Answer:" ending the user's turn, ROUGE-L F1 against the whole needle),
`paper-judge` the same graded by an LLM judge; each says where it still differs from the paper.

The placement helpers are pure functions over token texts (tested with exact values); prompts
are built from token ids (the chat template rendered around a marker), so the local backend
feeds exactly the tokens that were measured. Cells come out deepest needle first, the order in
which neighbouring prompts share the longest prefix (see `core.evals.backends`).

This module knows nothing about models, backends, scoring or result folders.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.evals.backends import Prompt, prefilled

DEFAULT_NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
# The question names what to find and points at the document as where it is (as the classic
# test's "... based on the context?" and RULER's "... mentioned in the provided text?" do); the
# answer prefix restates it, so a small model answers it instead of chatting about the city.
DEFAULT_QUESTION = "What does the document say is the best thing to do in San Francisco?"
DEFAULT_PREFIX = "The best thing to do in San Francisco is"
DEFAULT_ANSWER = "Eat a sandwich and sit in Dolores Park on a sunny day."
DEFAULT_TEMPLATE = (
    "Read the document below and answer the question that follows it.\n\n"
    "<document>\n{context}\n</document>\n\n"
    "Question: {question}\nAnswer in one sentence, using only the document."
)
BUILTIN = "builtin"
WHOLE_NEEDLE = "{needle}"
"""As the expected answer: the needle sentence itself."""
NEEDLE_SPACINGS = ("space", "blank_lines")
_MARK = "\u2063CONTEXT\u2063"  # invisible separator: never in a template or a question
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")

# ---------------------------------------------------------------------------------------------
# Grids.


def parse_numbers(text: str | Sequence[float]) -> list[float]:
    """`"500, 1k, 2K"` -> [500.0, 1000.0, 2000.0]; a list passes through as floats.

    Raises:
        ConfigError: an item is not a number.
    """
    if not isinstance(text, str):
        return [float(x) for x in text]
    values, bad = [], []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)([kKmM]?)", item)
        if match is None:
            bad.append(item)
            continue
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
        values.append(float(match.group(1)) * scale)
    if bad:
        raise ConfigError(f"not numbers: {', '.join(bad)} (write e.g. 500,1000,2k)")
    return values


def linear_points(lo: float, hi: float, count: int) -> list[float]:
    """`count` evenly spaced values from lo to hi, both included."""
    if count == 1:
        return [float(lo)]
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]


def sigmoid_points(lo: float, hi: float, count: int, steepness: float = 6.0) -> list[float]:
    """`count` values from lo to hi, both included, denser near both ends (where retrieval fails
    first), spaced by a logistic curve rescaled to hit lo and hi exactly; rounded to 0.01."""
    if count == 1:
        return [float(lo)]

    def s(x: float) -> float:
        return 1 / (1 + math.exp(-steepness * (x - 0.5)))

    a, b = s(0.0), s(1.0)
    return [round(lo + (hi - lo) * (s(i / (count - 1)) - a) / (b - a), 2) for i in range(count)]


def length_grid(lo: int, hi: int, count: int, spacing: str = "linear") -> list[int]:
    """Context lengths from lo to hi: `linear` or `log` (geometric) spacing, rounded to ints."""
    if spacing == "log":
        if count == 1:
            return [int(lo)]
        ratio = (hi / lo) ** (1 / (count - 1))
        points = [lo * ratio**i for i in range(count)]
    elif spacing == "linear":
        points = linear_points(lo, hi, count)
    else:
        raise ConfigError(f"length spacing must be 'linear' or 'log', got {spacing!r}")
    return sorted({int(round(p)) for p in points})


def depth_grid(
    lo: float = 0, hi: float = 100, count: int = 5, spacing: str = "linear"
) -> list[float]:
    """Needle depths in percent: `linear` or `sigmoid` spacing (denser near 0 and 100)."""
    if spacing == "sigmoid":
        return sigmoid_points(lo, hi, count)
    if spacing == "linear":
        return [round(p, 2) for p in linear_points(lo, hi, count)]
    raise ConfigError(f"depth spacing must be 'linear' or 'sigmoid', got {spacing!r}")


def cell_key(length: int, depth: float, trial: int | None = None) -> str:
    return f"L{length}-D{depth:g}" + (f"-T{trial}" if trial is not None else "")


# ---------------------------------------------------------------------------------------------
# Placement (pure).


def sentence_starts(token_texts: Sequence[str]) -> list[int]:
    """Token positions where a new sentence may begin: after a token ending in . ! or ? (closing
    quotes and brackets allowed) and before a token that starts with whitespace (so `os.path`
    and `3.14` do not count). The end of the text counts when the text ends a sentence."""
    starts = []
    for i in range(1, len(token_texts) + 1):
        if not _SENTENCE_END.search(token_texts[i - 1].rstrip()):
            continue
        if i == len(token_texts) or token_texts[i][:1].isspace():
            starts.append(i)
    return starts


def haystack_end(starts: Sequence[int], budget: int) -> int:
    """Where to cut the haystack: the last sentence start at or before `budget` tokens (the
    haystack then ends with a whole sentence), or `budget` itself when no sentence ends before."""
    best = 0
    for s in starts:
        if s > budget:
            break
        best = s
    return best or budget


def needle_position(starts: Sequence[int], end: int, depth: float) -> int:
    """Token position in a haystack of `end` tokens for a needle at `depth` percent.

    0 is the start, 100 the end (`end`); other depths go to the nearest sentence boundary
    (the earlier one on a tie). Without any boundary inside, the exact token position is used.
    """
    target = end * depth / 100
    inside = [s for s in starts if 0 < s < end]
    if not inside:
        return int(round(target))
    candidates = [0, *inside, end]
    return min(candidates, key=lambda s: (abs(s - target), s))


# ---------------------------------------------------------------------------------------------
# Prompts.


@dataclass
class GridCell:
    """A cell before tokenization: where the needle goes and what answers it."""

    key: str
    length: int
    depth: float
    needle: str
    expected: str
    info: dict[str, Any] = field(default_factory=dict)


def chat_frame(tokenizer: Any, template: str, question: str) -> tuple[list[int], list[int]]:
    """Token ids before and after `{context}` once `template` is rendered by the chat template.

    The pieces are tokenized separately, so the prompt is exactly head + haystack + tail.
    """
    content = template.replace("{question}", question).replace("{context}", _MARK)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        head, tail = text.split(_MARK)
        encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        return encode(head), encode(tail)
    # No template: the plain rendering of core.models.generation.prompt_ids (BOS where the tokenizer
    # adds one, a newline at the end).
    head, tail = content.split(_MARK)
    head_ids = tokenizer(head)["input_ids"]
    return list(head_ids), tokenizer(tail + "\n", add_special_tokens=False)["input_ids"]


class Haystack:
    """A corpus as token ids with the sentence starts of the evaluated model's tokenizer."""

    def __init__(self, tokenizer: Any, text: str):
        self.ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        vocab = {i: tokenizer.decode([i]) for i in set(self.ids)}
        self.texts = [vocab[i] for i in self.ids]
        self.starts = sentence_starts(self.texts)

    @classmethod
    def from_source(cls, tokenizer: Any, source: str, n_tokens: int) -> Haystack:
        """`source` is `builtin` or a folder of documents; repeated to reach `n_tokens`."""
        from core.text.corpus import builtin_documents, joined_text, load_folder

        docs = builtin_documents() if source == BUILTIN else load_folder(source)
        chars = 6 * n_tokens + 1000
        while True:
            hay = cls(tokenizer, joined_text(docs, chars))
            if len(hay.ids) >= n_tokens:
                return hay
            chars *= 2


def needle_piece(needle: str, spacing: str, at_start: bool) -> str:
    """The needle as it goes into the haystack: `space` joins it to the sentences around it (at
    the very start a word follows it, elsewhere it follows one); `blank_lines` sets it apart as
    a paragraph of its own, as the paper's code does."""
    needle = needle.strip()
    if spacing == "blank_lines":
        return f"\n\n{needle}\n\n"
    return needle + " " if at_start else " " + needle


def grid_prompts(
    tokenizer: Any,
    template: str,
    question: str,
    haystack: Haystack,
    cells: Sequence[GridCell],
    answer_prefix: str = "",
    spacing: str = "space",
) -> Iterator[Prompt]:
    """One prompt per cell, deepest needle first (the order that shares the longest prefixes),
    each ending with `answer_prefix` (see `core.evals.backends.prefilled`); `spacing` is how the
    needle joins the haystack (see `needle_piece`).

    Raises:
        LongCtxError: a length leaves no room for the haystack (the frame alone is longer).
    """
    head, tail = chat_frame(tokenizer, template, question)
    tail, _ = prefilled(tokenizer, tail, [], answer_prefix)  # the prefix counts in the length
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    planned = []
    too_short = set()
    for cell in cells:
        inner = encode(needle_piece(cell.needle, spacing, at_start=False))
        budget = cell.length - len(head) - len(tail) - len(inner) - 1
        if budget < 1:
            too_short.add(cell.length)
            continue
        end = haystack_end(haystack.starts, min(budget, len(haystack.ids)))
        pos = needle_position(haystack.starts, end, cell.depth)
        planned.append((cell, end, pos))
    if too_short:
        needle_ids = encode(needle_piece(cells[0].needle, spacing, at_start=False))
        frame = len(head) + len(tail) + len(needle_ids) + 1
        raise LongCtxError(
            f"lengths {sorted(too_short)} leave no room for a haystack: the template, needle "
            f"and question alone take {frame} tokens; use lengths above {frame}"
        )
    planned.sort(key=lambda p: (-p[2], p[1], p[0].key))
    for cell, end, pos in planned:
        needle_ids = encode(needle_piece(cell.needle, spacing, at_start=pos == 0))
        context = haystack.ids[:pos] + needle_ids + haystack.ids[pos:end]
        ids = head + context + tail
        content = template.replace("{question}", question).replace(
            "{context}", tokenizer.decode(context)
        )
        info = {
            "length": cell.length,
            "depth": cell.depth,
            "expected": cell.expected,
            "prompt_tokens": len(ids),
            "haystack_tokens": end,
            "needle_token": pos,
            "actual_depth": round(100 * pos / end, 2) if end else 0.0,
            **cell.info,
        }
        _, messages = prefilled(
            tokenizer, [], [{"role": "user", "content": content}], answer_prefix
        )
        yield Prompt(cell.key, ids, messages, info, answer_prefix)


# ---------------------------------------------------------------------------------------------
# The NIAH task.


@dataclass
class NiahConfig:
    """A needle-in-a-haystack grid. Every field has a CLI flag and a UI control."""

    lengths: list[int] = field(default_factory=lambda: [1000, 2000, 4000])
    """Prompt lengths in tokens (template and question included)."""
    depths: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    """Needle depths in percent of the haystack: 0 = start, 100 = end."""
    needle: str = DEFAULT_NEEDLE
    """The sentence hidden in the haystack."""
    question: str = DEFAULT_QUESTION
    """Asked after the haystack."""
    answer: str = DEFAULT_ANSWER
    """The expected answer the scorer compares with; `{needle}` stands for the whole needle
    (the paper's presets score against the needle sentence itself)."""
    haystack: str = BUILTIN
    """`builtin` (the installed Python's documentation) or a folder of documents."""
    template: str = DEFAULT_TEMPLATE
    """The user message; `{context}` becomes the haystack, `{question}` the question."""
    max_new_tokens: int = 64
    """Longest answer, in tokens."""
    answer_prefix: str = DEFAULT_PREFIX
    """The start of the answer, which the model continues (empty: none); the scorer reads it
    with the answer. Restate the question's subject, as the default does."""
    needle_spacing: str = "space"
    """How the needle joins the haystack: `space` (one more sentence at a sentence end) or
    `blank_lines` (a paragraph of its own, as the paper's code sets it)."""

    kind = "niah"
    grid_fields = ("lengths", "depths")

    def __post_init__(self) -> None:
        problems: list[str] = []
        lengths, depths = grid_axes(self.lengths, self.depths, problems)
        for name in ("needle", "question", "answer"):
            if not str(getattr(self, name) or "").strip():
                problems.append(f"{name} is empty")
        template = self.template or ""
        if template.count("{context}") != 1 or "{question}" not in template:
            problems.append("template must contain {context} once and {question}")
        if self.haystack != BUILTIN and not Path(str(self.haystack or "")).expanduser().exists():
            problems.append(
                f"haystack {self.haystack!r} is neither 'builtin' nor a folder or document that exists"
            )
        if self.needle_spacing not in NEEDLE_SPACINGS:
            problems.append(
                f"needle_spacing must be one of {', '.join(NEEDLE_SPACINGS)}, "
                f"got {self.needle_spacing!r}"
            )
        check_max_new_tokens(self.max_new_tokens, problems)
        self.answer_prefix = check_answer_prefix(self.answer_prefix, problems)
        if problems:
            raise ConfigError(problems)
        self.lengths, self.depths = lengths, depths

    def expected(self) -> str:
        """The answer the scorer compares with, `{needle}` replaced by the needle."""
        return self.answer.replace(WHOLE_NEEDLE, self.needle.strip()).strip()

    def cell_keys(self) -> list[str]:
        return [cell_key(length, d) for length in self.lengths for d in self.depths]

    def longest(self) -> int:
        """Tokens in the longest prompt."""
        return max(self.lengths)

    def prompts(
        self, tokenizer: Any, skip: set[str] | frozenset[str] = frozenset()
    ) -> Iterator[Prompt]:
        """The prompts of the cells not in `skip`, in reuse order."""
        cells = [
            GridCell(cell_key(length, d), length, d, self.needle, self.expected())
            for length in self.lengths
            for d in self.depths
            if cell_key(length, d) not in skip
        ]
        if not cells:
            return iter(())
        hay = Haystack.from_source(tokenizer, self.haystack, max(c.length for c in cells))
        return grid_prompts(
            tokenizer,
            self.template,
            self.question,
            hay,
            cells,
            self.answer_prefix,
            self.needle_spacing,
        )


# ---------------------------------------------------------------------------------------------
# Presets: the paper's NIAH, by its released code (FlagEmbedding, Long_LLM/longllm_qlora).

# The paper's prompt: an instruction, the haystack with the needle as a paragraph of its own,
# then "\n\n<question>\nAnswer:" at the end of the user's turn (no reply is prefilled). The
# instruction is in our words.
PAPER_TEMPLATE = (
    "One piece of important information is hidden in the text below. Find it and keep it in "
    "mind: you will be asked about it at the end.\n{context}\n\n{question}\nAnswer:"
)
PAPER_QUESTION = "What is the best thing to do in San Francisco?"
_PAPER_DIFFERENCES = (
    "Where it differs from the paper: the haystack is the built-in corpus (Python's "
    "documentation) unless you give a folder (the paper used Paul Graham's essays: "
    "--haystack FOLDER, or Haystack → a folder); the needle goes in at the sentence end nearest "
    "the depth, where the paper's code cuts in at the exact token; a length counts the chat "
    "template's tokens too; the instruction before the text is in our words. On a model with a "
    "shorter window, lower the longest length."
)


@dataclass(frozen=True)
class NiahPreset:
    """A named NIAH setup: the task's fields, its grid, and the scorer it is read with."""

    name: str
    label: str
    description: str
    """What it is and where it differs from the paper (the CLI help and the Evaluate tab)."""
    fields: dict[str, Any]
    """`NiahConfig` fields other than the grid and the haystack."""
    scorer: str
    min_length: int = 8192
    max_length: int = 131072
    num_lengths: int = 10
    num_depths: int = 11

    def lengths(
        self,
        min_length: int | None = None,
        max_length: int | None = None,
        num_lengths: int | None = None,
        spacing: str | None = None,
    ) -> list[int]:
        """The grid's lengths; a longest length below the preset's shortest shrinks the whole
        grid with it: shortest = longest / 16 (the paper's 8K : 128K), at least 256 tokens (room
        for the prompt around the haystack) where the longest allows."""
        hi = int(max_length or self.max_length)
        if min_length:
            lo = int(min_length)
        elif self.min_length < hi:
            lo = self.min_length
        else:
            lo = min(max(hi // 16, 256), hi)
        return length_grid(lo, hi, int(num_lengths or self.num_lengths), spacing or "linear")

    def depths(self) -> list[float]:
        return depth_grid(0, 100, self.num_depths)

    def config(self, **changes: Any) -> NiahConfig:
        """The preset's `NiahConfig` (its own grid unless `changes` gives one)."""
        grid = {"lengths": self.lengths(), "depths": self.depths()}
        return NiahConfig(**{**grid, **self.fields, **changes})


_PAPER_FIELDS: dict[str, Any] = {
    "needle": DEFAULT_NEEDLE,
    "question": PAPER_QUESTION,
    "answer": WHOLE_NEEDLE,
    "template": PAPER_TEMPLATE,
    "answer_prefix": "",
    "max_new_tokens": 50,
    "needle_spacing": "blank_lines",
}
PRESETS: dict[str, NiahPreset] = {
    p.name: p
    for p in (
        NiahPreset(
            "paper",
            "Paper (ROUGE-L F1)",
            "The paper's NIAH as its code runs it: 8K to 128K tokens (10 lengths) x 11 depths "
            "from 0 to 100, the San Francisco needle as a paragraph of its own, the question "
            "after the text and 'Answer:' ending the user's turn, 50 new tokens, greedy; scored "
            "by ROUGE-L F1 of the answer against the whole needle. " + _PAPER_DIFFERENCES,
            _PAPER_FIELDS,
            "rouge_l_f1",
        ),
        NiahPreset(
            "paper-judge",
            "Paper (LLM judge, 1-10)",
            "The paper's NIAH scored as its figure is: an LLM judge grades each answer 1-10 "
            "against the whole needle (the cell's score is the grade / 10). Needs a judge "
            "endpoint (--judge-base-url, --judge-model). The judge is the model you name and "
            "the rubric is in our words; the paper's code asked an OpenAI GPT model. Otherwise "
            "as the preset 'paper'. " + _PAPER_DIFFERENCES,
            _PAPER_FIELDS,
            "judge",
        ),
    )
}


def preset_for(task: NiahConfig, scorer: str, default_scorer: str) -> NiahPreset | None:
    """The preset that `task` and `scorer` differ least from, or None where our defaults (with
    `default_scorer`) are as close: what a command line replaying them starts from. The grid and
    the haystack do not count."""

    def distance(base: dict[str, Any], base_scorer: str) -> int:
        return sum(getattr(task, k) != v for k, v in base.items()) + (scorer != base_scorer)

    ours = {k: getattr(NiahConfig(), k) for k in _PAPER_FIELDS}
    best, best_distance = None, distance(ours, default_scorer)
    for preset in PRESETS.values():
        if (d := distance(preset.fields, preset.scorer)) < best_distance:
            best, best_distance = preset, d
    return best


def grid_axes(lengths: Any, depths: Any, problems: list[str]) -> tuple[list[int], list[float]]:
    """A grid's lengths (whole tokens >= 16) and depths (0-100 %), parsed, checked (each problem
    added to `problems`) and sorted without repeats."""
    length_values = _numbers(lengths, "lengths", problems)
    depth_values = _numbers(depths, "depths", problems)
    if any(x < 16 or x != int(x) for x in length_values):
        problems.append(f"lengths must be whole numbers of tokens >= 16, got {length_values}")
    if any(not 0 <= x <= 100 for x in depth_values):
        problems.append(f"depths must be percentages between 0 and 100, got {depth_values}")
    return sorted({int(x) for x in length_values}), sorted({float(x) for x in depth_values})


def check_max_new_tokens(value: Any, problems: list[str]) -> None:
    if not isinstance(value, int) or not 1 <= value <= 4096:
        problems.append(f"max_new_tokens must be 1..4096, got {value!r}")


def check_answer_prefix(value: Any, problems: list[str]) -> str:
    """An answer prefix without surrounding spaces: a trailing space would make the model start
    its answer with a token it never sees there (" 12345" is one word; " " + "12345" is not)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"answer_prefix must be text, got {value!r}")
        return ""
    return value.strip()


def _numbers(value: Any, name: str, problems: list[str]) -> list[float]:
    try:
        numbers = parse_numbers(value)
    except (ConfigError, TypeError, ValueError):
        problems.append(f"{name} must be a list of numbers, got {value!r}")
        return []
    if not numbers:
        problems.append(f"{name} is empty")
    return numbers
