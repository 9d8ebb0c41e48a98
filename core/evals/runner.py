"""One evaluation, start to finish: folder -> prompts -> answers -> scores -> cells -> heatmap.

`Evaluation` ties a task config (NIAH, topics, passkey, held-out samples, perplexity), a target
(local model or endpoint) and a scorer to a result folder. `run()` is a generator: it yields each
cell as soon as it is scored and written to cells.jsonl, takes a progress callback and a cancel
`threading.Event`, and renders the folder's heatmap when it stops (finished, cancelled or
failed). Rerunning into the same folder computes only the cells not yet in cells.jsonl.

This module knows nothing about gradio or argparse.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core import threads
from core.errors import ConfigError, LongCtxError
from core.evals import figures, harness, results, ruler
from core.evals.backends import Cancelled, Endpoint, Target, full_answer, open_backend
from core.evals.niah import NiahConfig
from core.evals.perplexity import PerplexityConfig, cell_fields
from core.evals.retrieval import PASSKEY_TEMPLATE_V1, PasskeyConfig, TopicsConfig
from core.evals.samples import SamplesConfig
from core.evals.scoring import PERPLEXITY, Scorer
from core.models.loader import ModelSpec

TaskConfig = NiahConfig | TopicsConfig | PasskeyConfig | SamplesConfig | PerplexityConfig
TASKS: dict[str, type] = {
    "niah": NiahConfig,
    "topics": TopicsConfig,
    "passkey": PasskeyConfig,
    "samples": SamplesConfig,
    "perplexity": PerplexityConfig,
}
DEFAULT_SCORERS = {
    "niah": "rouge_l",
    "topics": "exact",
    "passkey": "exact",
    "samples": "rouge_l",
    "perplexity": PERPLEXITY,
}
TASKS["ruler"] = ruler.RulerConfig  # RULER offline: core/evals/ruler.py
DEFAULT_SCORERS["ruler"] = "ruler"
Progress = Callable[[int, int, "dict[str, Any] | None"], None]


def default_scorer(task: TaskConfig) -> str:
    """The scorer a task is read with unless one is named: its kind's, except topic retrieval
    from a LongChat file, which LongChat and the paper score by substring."""
    if isinstance(task, TopicsConfig) and task.file:
        return "substring"
    return DEFAULT_SCORERS[task.kind]


class Evaluation:
    """An evaluation folder and what fills it.

    Args:
        task: what to ask (`NiahConfig`, `TopicsConfig`, `PasskeyConfig`, `SamplesConfig`), or
            what to measure (`PerplexityConfig`: a local model only).
        target: who answers.
        scorer: how answers are scored (default: ROUGE-L for NIAH and held-out samples, exact
            for the others, substring for topics from a LongChat file).
        out: the folder; default a new `evals/<id>/` in the workspace. A folder that already
            holds the same evaluation is resumed; its grid may grow or shrink, nothing else
            may change.
        models: a `core.models.loader.ModelCache` to share loaded weights with (default: the app's).
        backend: an already open backend (tests and benchmarks); overrides `target`'s loading.

    Raises:
        LongCtxError: `out` holds a different evaluation; perplexity of an endpoint.
    """

    def __init__(
        self,
        task: TaskConfig,
        target: Target,
        scorer: Scorer | None = None,
        out: str | os.PathLike | None = None,
        *,
        models: Any = None,
        backend: Any = None,
    ):
        self.task, self.target = task, target
        self.scorer = scorer or Scorer(default_scorer(task))
        if (task.kind == PERPLEXITY) != (self.scorer.kind == PERPLEXITY):
            raise LongCtxError(
                f"a {task.kind} evaluation cannot be scored by {self.scorer.kind}"
                if task.kind != PERPLEXITY
                else "perplexity is measured from the model's own probabilities, not scored"
            )
        if task.kind == PERPLEXITY and target.endpoint is not None:
            raise LongCtxError(
                "perplexity needs the model's probabilities of every token, which a chat "
                "endpoint does not return: evaluate the model locally"
            )
        self.models, self._backend = models, backend
        self.path = results.eval_folder(out, task.kind, target.slug)
        self.record = self._prepare()
        self.log = results.CellLog(self.path)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        api_key: str | None = None,
        judge_api_key: str | None = None,
        models: Any = None,
        backend: Any = None,
    ) -> Evaluation:
        """Reopen an evaluation folder from its config.json, to resume or to redraw it.

        API keys are never saved: pass them again (or set $OPENAI_API_KEY)."""
        record = results.read_config(path)
        if record.get("kind") not in TASKS:  # lm-eval's folders: core.evals.jobs.reopen
            raise LongCtxError(
                f"{path} is a {record.get('kind')} evaluation: resume it with "
                f"`longctx {record.get('kind')} ... --out {path}` or Evaluate -> Resume"
            )
        task = TASKS[record["kind"]](**saved_task(record))
        target = Target.saved(record["target"], api_key)
        s = record["scorer"]
        judge = Endpoint(**s["judge"], api_key=judge_api_key) if s.get("judge") else None
        return cls(task, target, Scorer(s["kind"], judge), path, models=models, backend=backend)

    # -- folder -----------------------------------------------------------------------------

    def _prepare(self) -> dict[str, Any]:
        record = {
            "kind": self.task.kind,
            "task": asdict(self.task),
            "target": self.target.public(),
            "scorer": self.scorer.public(),
            "label": self.target.label,
            "total": len(self.task.cell_keys()),
            "window": None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        config_path = self.path / results.CONFIG_FILE
        if config_path.exists():
            old = results.read_config(self.path)
            changed = results.config_differences(
                {"kind": old.get("kind"), **_without(saved_task(old), self.task.grid_fields)},
                {"kind": record["kind"], **_without(record["task"], self.task.grid_fields)},
                (),
            )
            changed += [k for k in ("target", "scorer") if old.get(k) != record[k]]
            if changed:
                hint = ""
                if "answer_prefix" in changed and "answer_prefix" not in old.get("task", {}):
                    hint = (
                        " or, to resume it, ask without an answer prefix as it did (made before"
                        " answer prefixes: --answer-prefix '', or an empty Answer prefix)"
                    )
                raise LongCtxError(
                    f"{self.path} already holds a different evaluation (it differs in "
                    f"{', '.join(changed)}); choose another output folder{hint}"
                )
            record["created"], record["window"] = old.get("created"), old.get("window")
        results.write_config(self.path, record)
        return record

    def cells(self) -> list[dict[str, Any]]:
        """The finished cells, read from cells.jsonl."""
        return results.read_cells(self.path)

    def pending(self) -> list[str]:
        """Keys of the planned cells not finished yet."""
        return [k for k in self.task.cell_keys() if k not in self.log.keys]

    def counts(self) -> tuple[int, int]:
        """(finished, planned) cells."""
        total = len(self.task.cell_keys())
        return total - len(self.pending()), total

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Compute the pending cells, yielding each one once it is written to cells.jsonl.

        Args:
            progress: called as `progress(done, total, cell)`, first with cell None.
            cancel: set it to stop after the token being decoded; finished cells are kept.

        Raises:
            LongCtxError: the model cannot be loaded, a length does not fit, an endpoint fails.
        """
        planned = set(self.task.cell_keys())
        done = len(planned & self.log.keys)
        total = len(planned)
        if progress:
            progress(done, total, None)
        if done == total:
            self.render()
            return
        try:
            backend = self._backend or open_backend(self.target, models=self.models)
            self._backend = backend
            self._note_window(backend)
            prompts = self.task.prompts(backend.tokenizer, skip=self.log.keys)
            cells = (
                self._measured(backend, prompts, cancel)
                if self.task.kind == PERPLEXITY
                else self._answered(backend, prompts, cancel)
            )
            with threads.computing():  # busy to the last cell (one can take minutes)
                for cell in cells:
                    threads.tick()  # the next cell computes on the budget of now
                    self.log.append(cell)
                    done += 1
                    if progress:
                        progress(done, total, cell)
                    yield cell
        except Cancelled:
            return
        finally:
            self.render()

    def _answered(self, backend: Any, prompts: Any, cancel: Any) -> Iterator[dict[str, Any]]:
        """The cells of a task that asks questions: each answer, scored."""
        for prompt, reply in backend.answers(prompts, self.task.max_new_tokens, cancel):
            # Held-out samples ask a question per cell; the other tasks one for all.
            question = prompt.info.get("question") or getattr(self.task, "question", "")
            answer = full_answer(prompt.answer_prefix, reply.text)
            yield {
                "key": prompt.key,
                **prompt.info,
                "answer": answer,
                **self.scorer.score(answer, prompt.info["expected"], question),
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "reused_tokens": reply.reused_tokens,
                "seconds": round(reply.seconds, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }

    def _measured(self, backend: Any, prompts: Any, cancel: Any) -> Iterator[dict[str, Any]]:
        """The cells of a perplexity evaluation: each window's token NLLs, summarised."""
        for prompt, nlls, seconds in backend.losses(prompts, cancel):
            yield {
                "key": prompt.key,
                **_without(prompt.info, ("expected",)),
                "prompt_tokens": len(prompt.ids),
                **cell_fields(nlls),
                "seconds": round(seconds, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }

    def run_all(
        self, progress: Progress | None = None, cancel: threading.Event | None = None
    ) -> list[dict[str, Any]]:
        """`run()` to the end; returns every finished cell (old and new)."""
        for _ in self.run(progress, cancel):
            pass
        return self.cells()

    def _note_window(self, backend: Any) -> None:
        window = backend.window or _config_window(self.target)
        if window and self.record.get("window") != window:
            self.record["window"] = window
            results.write_config(self.path, self.record)

    # -- figures ----------------------------------------------------------------------------

    def figure(self, cells: list[dict[str, Any]] | None = None) -> Any:
        """The heatmap (NIAH, passkey) or accuracy plot (topics) of the cells so far."""
        return figure_from(self.record, self.cells() if cells is None else cells)

    def render(self) -> Path:
        """Write the figure as heatmap.html in the folder."""
        return figures.export(self.figure(), self.path / results.HEATMAP_FILE)


def saved_task(record: dict[str, Any]) -> dict[str, Any]:
    """The task fields of a config.json record, with what folders written before a field
    existed meant: no answer prefix, the passkey's first wording, the needle after a space,
    topics from the built-in corpus. A resumed old folder thus asks its remaining cells exactly
    as it asked its first ones."""
    task = dict(record.get("task") or {})
    if record.get("kind") in ("niah", "topics", "passkey", "samples"):
        task.setdefault("answer_prefix", "")
    if record.get("kind") == "niah":
        task.setdefault("needle_spacing", "space")
    if record.get("kind") == "topics":
        task.setdefault("file", "")
    if record.get("kind") == "ruler":  # before RULER's worked examples
        task.setdefault("examples", False)
    if record.get("kind") == "passkey":
        task.setdefault("template", PASSKEY_TEMPLATE_V1)
    return task


def _without(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def _config_window(target: Target) -> int | None:
    """An endpoint model's window, from its config where the tokenizer's model can be read."""
    if target.endpoint is None:
        return None
    from core.models.loader import load_config

    try:
        resolved = load_config(ModelSpec(target.tokenizer or target.endpoint.model))
    except (LongCtxError, ConfigError, OSError, ValueError):
        return None
    return getattr(resolved.config, "max_position_embeddings", None)


_TITLES = {"niah": "Needle in a haystack", "passkey": "Passkey"}


def figure_from(record: dict[str, Any], cells: list[dict[str, Any]], x: str = "tokens") -> Any:
    """The figure of an evaluation from its config.json record and its cells: a heatmap
    (NIAH, passkey; unfinished cells blank), an accuracy plot (topics, against `x`), scores
    against length (held-out samples) or perplexity curves."""
    label = record.get("label") or "evaluation"
    if record.get("kind") == harness.KIND:
        return harness.figure(cells, title=f"lm-eval: {label}")
    if record.get("kind") == "ruler":
        threshold = record.get("task", {}).get("threshold", ruler.THRESHOLD)
        return ruler.figure({label: cells}, threshold, title=f"RULER: {label}")
    if record.get("kind") == "topics":
        return figures.topic_accuracy({label: cells}, x=x)
    if record.get("kind") == PERPLEXITY:
        return figures.perplexity(
            {label: (cells, record.get("window"))}, title=f"Perplexity: {label}"
        )
    if record.get("kind") == "samples":
        return figures.sample_scores(
            {label: (cells, record.get("window"))}, title=f"Held-out samples: {label}"
        )
    task = record.get("task", {})
    title = f"{_TITLES.get(record.get('kind'), 'Evaluation')}: {label}"
    return figures.heatmap(
        cells,
        lengths=task.get("lengths"),
        depths=task.get("depths"),
        window=record.get("window"),
        title=title,
    )


def compare_figure(
    base: str | os.PathLike, tuned: str | os.PathLike, x: str = "tokens", labels: tuple = ()
) -> Any:
    """Two evaluation folders against each other: the tuned-minus-base heatmap of two grids
    (NIAH, passkey), or both curves of two topic, held-out sample or perplexity evaluations.

    Args:
        labels: the two legend names; default each evaluation's label (or base and tuned, when
            both name the same model).

    Raises:
        LongCtxError: the two are of kinds that do not compare.
    """
    a, b = results.read_config(base), results.read_config(tuned)
    if not labels:
        labels = (a.get("label") or "base", b.get("label") or "tuned")
        if labels[0] == labels[1]:  # the same model twice (another grid, say): name the roles
            labels = ("base", "tuned")
    cells_a, cells_b = results.read_cells(base), results.read_cells(tuned)
    kinds = {a.get("kind"), b.get("kind")}
    if kinds == {"ruler"}:
        threshold = b.get("task", {}).get("threshold", ruler.THRESHOLD)
        return ruler.figure(
            {labels[0]: cells_a, labels[1]: cells_b},
            threshold,
            title=f"RULER: {labels[0]} vs. {labels[1]}",
        )
    if kinds == {"topics"}:
        return figures.topic_accuracy({labels[0]: cells_a, labels[1]: cells_b}, x=x)
    if kinds == {PERPLEXITY}:
        return figures.perplexity(
            {labels[0]: (cells_a, a.get("window")), labels[1]: (cells_b, b.get("window"))},
            title=f"Perplexity: {labels[0]} vs. {labels[1]}",
        )
    if kinds == {"samples"}:
        if a.get("task", {}).get("dataset") != b.get("task", {}).get("dataset"):
            raise LongCtxError(
                "these two evaluations asked the questions of different files; compare two "
                "evaluations of the same held-out samples"
            )
        return figures.sample_scores(
            {labels[0]: (cells_a, a.get("window")), labels[1]: (cells_b, b.get("window"))},
            title=f"Held-out samples: {labels[0]} vs. {labels[1]}",
        )
    if kinds & {"topics", "samples", PERPLEXITY, "ruler"}:
        raise LongCtxError(
            "compare two evaluations of the same kind: two grids (NIAH, passkey), two topic "
            "retrievals, two evaluations of held-out samples or two perplexity measurements"
        )
    return figures.diff_heatmap(cells_a, cells_b, labels=labels, window=b.get("window"))


def folder_figure(path: str | os.PathLike, x: str = "tokens") -> Any:
    """The figure of an evaluation folder, read without touching it."""
    return figure_from(results.read_config(path), results.read_cells(path), x)
