"""RULER offline: its synthetic tasks at any length for the evaluated model's tokenizer, as an
evaluation task like NIAH, and the figure of score by task and length.

A cell is one sample of one task at one length (`vt-L4000-S3`). Its prompt is the task's user
message rendered by the chat template, followed by RULER's answer prefix (the start of the
assistant's reply, so that a small model answers instead of chatting; endpoints get the user
message alone, for OpenAI-compatible servers cannot continue a reply). The prompt is `length`
tokens long to within 1% (template, question and prefix included): the frame is measured first
and the task builds its context for the room left (`core.evals.ruler_tasks`). Every sample draws
from its own random generator seeded by (seed, task, length, index), so the same seed gives the
same set, and a resumed run builds only the samples it lacks.

Scoring is RULER's string match (`core.evals.scoring.ruler_match`): each expected answer found
in the reply, case-insensitive; the needle, variable and word tasks need all of theirs (the
share found), QA any accepted answer.

This module knows nothing about models, backends, result folders or gradio.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.evals import ruler_tasks as rt
from core.evals.backends import Prompt
from core.evals.niah import BUILTIN, chat_frame, check_max_new_tokens, grid_axes

NEEDLE_TASKS = {
    "niah_single_1": rt.NeedleSpec(haystack="noise"),
    "niah_single_2": rt.NeedleSpec(),
    "niah_single_3": rt.NeedleSpec(value="uuid"),
    "niah_multikey_1": rt.NeedleSpec(keys=4),
    "niah_multikey_2": rt.NeedleSpec(haystack="needles"),
    "niah_multikey_3": rt.NeedleSpec(haystack="needles", key="uuid", value="uuid"),
    "niah_multivalue": rt.NeedleSpec(values=4),
    "niah_multiquery": rt.NeedleSpec(queries=4),
}
SYNTHETIC = (*NEEDLE_TASKS, "vt", "cwe", "fwe")
QA_TASKS = ("qa_squad", "qa_hotpot")
GROUPS = {
    "niah": tuple(NEEDLE_TASKS),
    "niah_single": tuple(t for t in NEEDLE_TASKS if t.startswith("niah_single")),
    "niah_multikey": tuple(t for t in NEEDLE_TASKS if t.startswith("niah_multikey")),
    "synthetic": SYNTHETIC,
    "qa": QA_TASKS,
    "all": (*SYNTHETIC, *QA_TASKS),
}
NOISE = "noise"
THRESHOLD = 85.6
"""RULER's bar: Llama-2-7B's mean score at 4K."""


def expand_tasks(names: Iterable[str] | str) -> list[str]:
    """Task names and group names (`niah`, `niah_single`, `synthetic`, `qa`, `all`) -> task
    names in RULER's order, without repeats; unknown names raise `ConfigError`."""
    if isinstance(names, str):
        names = [n for n in names.replace(" ", ",").split(",") if n]
    wanted, bad = set(), []
    for name in names:
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in GROUPS["all"]:
            wanted.add(name)
        else:
            bad.append(name)
    if bad:
        raise ConfigError(
            f"unknown RULER tasks: {', '.join(bad)}; choose from {', '.join(GROUPS['all'])} "
            f"or the groups {', '.join(GROUPS)}"
        )
    return [t for t in GROUPS["all"] if t in wanted]


@dataclass
class RulerConfig:
    """RULER's synthetic tasks (and its QA tasks on your SQuAD/HotpotQA files) at each length."""

    tasks: list[str] = field(default_factory=lambda: list(SYNTHETIC))
    """Task names or groups: niah (the 8 needle tasks), niah_single, niah_multikey, vt, cwe,
    fwe, qa_squad, qa_hotpot, synthetic (all but QA), all."""
    lengths: list[int] = field(default_factory=lambda: [1000, 2000, 4000])
    """Prompt lengths in tokens (template, question and answer prefix included)."""
    samples: int = 20
    """Samples per task and length (RULER uses 500)."""
    seed: int = 0
    """Draws keys, values, depths and words; the same seed gives the same samples."""
    haystack: str = BUILTIN
    """The text the needle tasks hide needles in where RULER uses essays: `builtin` (the
    installed Python's documentation), `noise` (a filler sentence repeated) or a folder of
    documents (or one)."""
    squad: str = ""
    """A SQuAD-format JSON file (qa_squad)."""
    hotpot: str = ""
    """A HotpotQA-format JSON file (qa_hotpot)."""
    answer_prefix: bool = True
    """Start the reply with RULER's answer prefix (endpoints continue it as the last assistant
    message, like the other retrieval tasks)."""
    examples: bool = True
    """Put one solved instance before each cwe and vt sample, as RULER does (its answer
    included; the instance takes part of the length)."""
    threshold: float = THRESHOLD
    """The figure marks the length where the mean score falls under this (percent)."""
    max_new_tokens: int = 128
    """Longest answer, in tokens (RULER: 128 for needles and common words)."""

    kind = "ruler"
    grid_fields = ("tasks", "lengths", "samples", "threshold")

    def __post_init__(self) -> None:
        problems: list[str] = []
        try:
            self.tasks = expand_tasks(self.tasks)
        except ConfigError as exc:
            problems.append(str(exc))
            self.tasks = []
        if not self.tasks and not problems:
            problems.append("tasks is empty: choose at least one RULER task")
        lengths, _ = grid_axes(self.lengths, [0], problems)
        if any(x < 256 for x in lengths):
            problems.append(f"lengths must be at least 256 tokens, got {lengths}")
        if not isinstance(self.samples, int) or self.samples < 1:
            problems.append(f"samples must be a positive integer, got {self.samples!r}")
        for task, name in (("qa_squad", "squad"), ("qa_hotpot", "hotpot")):
            path = str(getattr(self, name) or "")
            if task in self.tasks and not path:
                problems.append(f"{task} needs a {name} file: RULER's QA data is not built in")
            elif path and not Path(path).expanduser().is_file():
                problems.append(f"{name} file {path!r} does not exist")
        if (
            self.haystack not in (BUILTIN, NOISE)
            and not Path(str(self.haystack)).expanduser().exists()
        ):
            problems.append(
                f"haystack {self.haystack!r} is neither 'builtin', 'noise' nor a folder or "
                "document that exists"
            )
        if not isinstance(self.threshold, (int, float)) or not 0 <= self.threshold <= 100:
            problems.append(f"threshold must be a percentage 0-100, got {self.threshold!r}")
        check_max_new_tokens(self.max_new_tokens, problems)
        if problems:
            raise ConfigError(problems)
        self.lengths = lengths
        self.threshold = float(self.threshold)

    def cell_keys(self) -> list[str]:
        return [
            sample_key(t, n, i)
            for t in self.tasks
            for n in self.lengths
            for i in range(self.samples)
        ]

    def longest(self) -> int:
        return max(self.lengths)

    def prompts(
        self, tokenizer: Any, skip: set[str] | frozenset[str] = frozenset()
    ) -> Iterator[Prompt]:
        """The prompts of the samples not in `skip`, task by task, length by length, and within
        one task and length deepest first needle first (the local backend then reuses the KV of
        the haystack before it, as in the NIAH grid)."""
        env = Env(tokenizer, self)
        for task in self.tasks:
            for length in self.lengths:
                keys = [(sample_key(task, length, i), i) for i in range(self.samples)]
                todo = [(key, i, env.sample(task, length, i)) for key, i in keys if key not in skip]
                for key, i, sample in sorted(todo, key=lambda t: -t[2].depth):
                    yield build_prompt(env, task, length, i, key, self.answer_prefix, sample)


def sample_key(task: str, length: int, index: int) -> str:
    return f"{task}-L{length}-S{index}"


def build_prompt(
    env: Env,
    task: str,
    length: int,
    index: int,
    key: str,
    prefix: bool,
    sample: rt.Sample | None = None,
) -> Prompt:
    """One sample's prompt, `length` tokens to within 1% (`sample`: already drawn).

    Raises:
        LongCtxError: the length leaves no room for the task's context.
    """
    tokenizer = env.tokenizer
    sample = sample or env.sample(task, length, index)
    env.length = length
    head, tail = chat_frame(tokenizer, sample.template, sample.question)
    prefix_ids = env.piece_ids(sample.prefix) if prefix else []
    room = length - len(head) - len(tail) - len(prefix_ids)
    if room < 32:
        raise LongCtxError(
            f"{length} tokens leave no room for {task}'s context: its frame alone takes "
            f"{length - room}; use longer lengths"
        )
    env.slack = max(1, length // 100)
    ctx_ids, ctx_text, extra = sample.build(room)
    ids = head + ctx_ids + tail + prefix_ids
    content = sample.template.replace("{question}", sample.question).replace("{context}", ctx_text)
    info = {
        "task": task,
        "length": length,
        "sample": index,
        "depth": extra["depths"][0] if extra.get("depths") else 0.0,
        "question": sample.question,
        "answer_prefix": sample.prefix if prefix else "",
        "expected": sample.expected,
        "prompt_tokens": len(ids),
        "context_start": len(head),
        **extra,
    }
    messages = [{"role": "user", "content": content}]
    if prefix:  # endpoints continue it as a last assistant message (continue_final_message)
        messages.append({"role": "assistant", "content": sample.prefix})
    return Prompt(key, ids, messages, info, answer_prefix=sample.prefix if prefix else "")


class Env:
    """What the samples of one configuration share: the tokenizer, the haystacks and word pools
    tokenized once, and small caches of token ids."""

    def __init__(self, tokenizer: Any, config: RulerConfig):
        self.tokenizer, self.config = tokenizer, config
        self.slack = 1
        self._longest = max(config.lengths)
        self._noise: rt.Tokens | None = None
        self._essay: rt.Tokens | None = None
        self._words: list[str] | None = None
        self._made_up: dict[int, list[str]] = {}
        self.word_ids: dict[str, list[int]] = {}
        self._numbers: list[list[int]] = [[]]
        self._pieces: dict[str, list[int]] = {}
        self._docs: dict[tuple[int, int], list[int]] = {}
        self._qa: dict[str, rt.QaSet] = {}
        self._pools: dict[tuple[rt.NeedleSpec, int], rt.NeedlePool] = {}
        self.length = self._longest
        """The length of the sample being built."""
        coded_rng = random.Random(f"{config.seed}-coded")
        self.coded = sorted(
            {
                "".join(
                    coded_rng.choice("abcdefghijklmnopqrstuvwxyz")
                    for _ in range(coded_rng.randint(3, 6))
                )
                for _ in range(1200)
            }
        )
        self.coded_ids = dict(
            zip(self.coded, self._encode([" " + w for w in self.coded]), strict=False)
        )

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(x) for x in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def sample(self, task: str, length: int, index: int) -> rt.Sample:
        rng = random.Random(f"{self.config.seed}-{task}-{length}-{index}")
        self.length = length
        if task in NEEDLE_TASKS:
            return rt.needle_sample(self, NEEDLE_TASKS[task], rng, index)
        if task == "vt":
            return rt.vt_sample(self, rng, index)
        if task == "cwe":
            return rt.cwe_sample(self, rng)
        if task == "fwe":
            return rt.fwe_sample(self, rng)
        path = self.config.squad if task == "qa_squad" else self.config.hotpot
        if path not in self._qa:
            self._qa[path] = rt.read_qa(Path(path).expanduser())
        return rt.qa_sample(self, self._qa[path], rng, index)

    # -- haystacks ----------------------------------------------------------------------------

    def noise(self) -> rt.Tokens:
        if self._noise is None:
            reps = self._longest // len(self.piece_ids(rt.NOISE)) + 4
            while True:  # repeated, the sentence may take fewer tokens than alone
                self._noise = rt.Tokens.encode(self.tokenizer, rt.NOISE * reps)
                if len(self._noise.ids) >= self._longest:
                    return self._noise
                reps = int(reps * 1.2) + 1
        return self._noise

    def essay(self) -> rt.Tokens:
        if self._essay is None:
            source = self.config.haystack
            if source == NOISE:
                self._essay = self.noise()
            else:
                from core.text.corpus import builtin_documents, joined_text, load_folder

                docs = builtin_documents() if source == BUILTIN else load_folder(source)
                chars = 6 * self._longest + 1000
                while True:
                    self._essay = rt.Tokens.encode(self.tokenizer, joined_text(docs, chars))
                    if len(self._essay.ids) >= self._longest:
                        break
                    chars *= 2
        return self._essay

    def haystack(
        self, kind: str, room: int, rng: random.Random, spec: rt.NeedleSpec, taken: set[str]
    ) -> rt.Tokens:
        if kind == "noise":
            return self.noise()
        if kind == "needles":
            # One pool per length, so that a sample does not change when the grid grows.
            if (spec, self.length) not in self._pools:
                seed = f"{self.config.seed}-pool-{spec}-{self.length}"
                pool = rt.NeedlePool(self.tokenizer, spec, self.length, seed)
                self._pools[(spec, self.length)] = pool
            return self._pools[(spec, self.length)].haystack(rng, taken)
        return self.essay()

    # -- word pools and small pieces ------------------------------------------------------------

    def words_order(self, rng: random.Random) -> list[str]:
        """The common-words pool in this sample's random order (its words tokenized once): the
        built-in corpus's words, then made-up ones as far as the sample's length needs (the pool
        depends on the length alone, so that a sample does not change when the grid grows)."""
        if self._words is None:
            from core.text.corpus import builtin_documents

            self._words = rt.corpus_words([d.text for d in builtin_documents()])
        need = self.length // 6 + 200  # more than a list of rare words can hold
        if need > len(self._words) and need not in self._made_up:
            known = set(self._words)
            made_up = rt.pseudo_words(need - len(self._words))
            self._made_up[need] = [w for w in made_up if w not in known]
        words = self._words + self._made_up.get(need, [])
        fresh = [w for w in words if w not in self.word_ids]
        self.word_ids.update(zip(fresh, self._encode([" " + w for w in fresh]), strict=True))
        return rng.sample(words, len(words))

    def number_ids(self, n: int) -> list[int]:
        """Token ids of ` n.` (a list item's number), tokenized in batches as needed."""
        if n >= len(self._numbers):
            top = max(2 * n, 1024)
            self._numbers += self._encode([f" {i}." for i in range(len(self._numbers), top)])
        return self._numbers[n]

    def piece_ids(self, text: str) -> list[int]:
        if text not in self._pieces:
            self._pieces[text] = self._encode([text])[0]
        return self._pieces[text]

    def doc_ids(self, qa: rt.QaSet, d: int) -> list[int]:
        key = (id(qa), d)
        if key not in self._docs:
            self._docs[key] = self._encode([qa.docs[d] + "\n\n"])[0]
        return self._docs[key]

    def cut(self, text: str, n: int) -> tuple[list[int], str]:
        """The first `n` tokens of `text`, and their text."""
        return rt.Tokens.encode(self.tokenizer, text).span(0, n)


# ---------------------------------------------------------------------------------------------
# Summaries and the figure.


def score_table(cells: Iterable[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Mean score in percent by task and length, from finished cells."""
    sums: dict[tuple[str, int], list[float]] = defaultdict(list)
    for cell in cells:
        if isinstance(cell.get("score"), (int, float)) and cell.get("task"):
            sums[(cell["task"], int(cell["length"]))].append(float(cell["score"]))
    table: dict[str, dict[int, float]] = defaultdict(dict)
    for (task, length), scores in sorted(sums.items()):
        table[task][length] = 100 * sum(scores) / len(scores)
    return {t: table[t] for t in GROUPS["all"] if t in table}


def mean_by_length(table: dict[str, dict[int, float]]) -> dict[int, float]:
    """RULER's average: at each length, the mean of the tasks' means (tasks with a score
    there)."""
    lengths = sorted({n for row in table.values() for n in row})
    out = {}
    for n in lengths:
        scores = [row[n] for row in table.values() if n in row]
        out[n] = sum(scores) / len(scores)
    return out


def falls_under(means: dict[int, float], threshold: float) -> int | None:
    """The shortest length whose mean is under `threshold` (None: it never falls under)."""
    return next((n for n in sorted(means) if means[n] < threshold), None)


def figure(
    runs: dict[str, list[dict[str, Any]]], threshold: float = THRESHOLD, title: str = "RULER"
) -> Any:
    """Score (percent) against length: one line per task and the mean in bold for one run; the
    means alone for several. A dashed line at `threshold` and a marker where each mean falls
    under it."""
    import plotly.graph_objects as go

    from core.evals.figures import PALETTE, _tokens_label

    fig = go.Figure()
    lengths: set[int] = set()
    notes = []
    for r, (label, cells) in enumerate(runs.items()):
        table = score_table(cells)
        means = mean_by_length(table)
        lengths.update(means)
        if len(runs) == 1:
            for t, (task, row) in enumerate(table.items()):
                fig.add_trace(
                    go.Scatter(
                        x=list(row),
                        y=[round(v, 1) for v in row.values()],
                        name=task,
                        mode="lines+markers",
                        line={"width": 1, "color": PALETTE[t % len(PALETTE)]},
                        opacity=0.6,
                    )
                )
        color = "#111827" if len(runs) == 1 else PALETTE[r % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=list(means),
                y=[round(v, 1) for v in means.values()],
                mode="lines+markers",
                name=f"mean: {label}" if len(runs) > 1 else "mean",
                line={"width": 4, "color": color},
            )
        )
        under = falls_under(means, threshold)
        if under is not None:
            fig.add_vline(x=under, line={"color": color, "dash": "dot"})
            notes.append(f"{label}: under {threshold:g} from {_tokens_label(under)}")
        elif means:
            notes.append(f"{label}: at or above {threshold:g} up to {_tokens_label(max(means))}")
    fig.add_hline(
        y=threshold,
        line={"dash": "dash", "color": "#6b7280"},
        annotation_text=f"threshold {threshold:g}",
    )
    ticks = sorted(lengths)
    fig.update_layout(
        title=f"{title}<br><sup>{'; '.join(notes)}</sup>" if notes else title,
        xaxis={
            "title": "prompt tokens",
            "type": "log",
            "tickvals": ticks,
            "ticktext": [_tokens_label(n) for n in ticks],
        },
        yaxis={"title": "score (%)", "range": [0, 102]},
        template="plotly_white",
        height=460,
        legend={"font": {"size": 10}},
    )
    return fig
