"""Standard suites (LongBench, InfiniteBench, RULER, BABILong, MMLU, ...) through
lm-evaluation-harness, into our evaluation folders.

lm-eval keeps its suites' prompts, answer extraction and metrics; we only hand it the model and
collect what it logs. A local model goes in already loaded (`core.models.loader`: adapters,
RoPE overrides and 4-bit applied) as lm-eval's `HFLM`, loaded once for every task; an endpoint
goes through lm-eval's `local-chat-completions` backend (a vLLM server, or our own `longctx
serve`). Every answered sample becomes one line of cells.jsonl (`<task>-<doc id>`, its metrics,
the first one as `score`), written as each chunk of samples finishes; a rerun asks lm-eval only
for the documents not yet there (its `samples` argument), so a run resumes and grows.

Datasets come from the Hub when the network is there (cached by `datasets`; set
HF_DATASETS_OFFLINE=1 to use the cache alone), or from a task folder (`include_path`) whose
YAMLs name local files or folders as `dataset_path` / `dataset_kwargs.data_files`.

This module knows nothing about gradio or argparse.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.evals import results
from core.evals.backends import Target
from core.evals.niah import parse_numbers

KIND = "harness"
Progress = Callable[[int, int, "dict[str, Any] | None"], None]


@dataclass
class HarnessConfig:
    """lm-eval tasks on one model; every field is a `longctx harness` flag."""

    tasks: list[str] = field(default_factory=list)
    """lm-eval task or group names (e.g. longbench, mmlu, ruler_niah_single_1)."""
    limit: int = 50
    """Documents per task: the first this many."""
    lengths: list[int] = field(default_factory=list)
    """Context lengths for suites that take them (lm-eval's `max_seq_lengths` metadata: RULER,
    BABILong); empty: the suite's default."""
    include_path: str = ""
    """A folder of extra task YAMLs (your own tasks, or suites pointed at local data)."""
    num_fewshot: int | None = None
    """Few-shot examples; None: each task's own default."""
    chat: bool = True
    """Render prompts with the model's chat template (an endpoint always gets messages)."""
    max_new_tokens: int | None = None
    """Cap on generated tokens; None: each task's own."""
    chunk: int = 25
    """Documents per lm-eval call: the cells of a chunk are written when it finishes."""

    kind = KIND
    grid_fields = ("tasks", "limit", "chunk")

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.tasks, str):
            self.tasks = [t for t in self.tasks.replace(" ", ",").split(",") if t]
        if not self.tasks:
            problems.append("tasks is empty: name lm-eval tasks or groups, e.g. longbench")
        for name in ("limit", "chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        try:
            self.lengths = sorted({int(x) for x in parse_numbers(self.lengths or [])})
        except (ConfigError, ValueError) as exc:
            problems.append(f"lengths: {exc}")
        if self.include_path and not Path(self.include_path).expanduser().is_dir():
            problems.append(f"include_path {self.include_path!r} is not a folder of task YAMLs")
        if self.max_new_tokens is not None and not 1 <= int(self.max_new_tokens) <= 65536:
            problems.append(f"max_new_tokens must be 1..65536, got {self.max_new_tokens!r}")
        if problems:
            raise ConfigError(problems)


@functools.lru_cache(maxsize=8)
def _task_manager(include: str | None) -> Any:
    """lm-eval's task index (it reads every task YAML it ships: ~20 s on a busy 2-core
    machine), built once per process and task folder."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include)


def sample_key(task: str, doc_id: Any) -> str:
    return f"{task}-{doc_id}"


class HarnessRun:
    """An evaluation folder filled by lm-eval.

    Raises:
        LongCtxError: `out` holds a different evaluation.
    """

    def __init__(
        self,
        config: HarnessConfig,
        target: Target,
        out: str | os.PathLike | None = None,
        *,
        models: Any = None,
    ):
        self.config, self.target, self.models = config, target, models
        self.path = results.eval_folder(out, KIND, target.slug)
        self.record = self._prepare()
        self.log = results.CellLog(self.path)
        self._lm: Any = None

    def _prepare(self) -> dict[str, Any]:
        record = {
            "kind": KIND,
            "task": asdict(self.config),
            "target": self.target.public(),
            "scorer": {"kind": "harness", "judge": None},
            "label": self.target.label,
            "total": None,
            "window": None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if (self.path / results.CONFIG_FILE).exists():
            old = results.read_config(self.path)
            keep = self.config.grid_fields
            changed = results.config_differences(
                {k: v for k, v in old.get("task", {}).items() if k not in keep},
                {k: v for k, v in record["task"].items() if k not in keep},
                (),
            )
            changed += [k for k in ("kind", "target") if old.get(k) != record[k]]
            if changed:
                raise LongCtxError(
                    f"{self.path} already holds a different evaluation (it differs in "
                    f"{', '.join(changed)}); choose another output folder"
                )
            record["created"], record["total"] = old.get("created"), old.get("total")
        results.write_config(self.path, record)
        return record

    @classmethod
    def open(cls, path: str | os.PathLike, *, api_key: str | None = None) -> HarnessRun:
        """Reopen a folder lm-eval filled, to resume it (an endpoint's key is never saved:
        pass it again)."""
        record = results.read_config(path)
        if record.get("kind") != KIND:
            raise LongCtxError(f"{path} is not an lm-eval evaluation folder")
        config = HarnessConfig(**record.get("task", {}))
        return cls(config, Target.saved(record["target"], api_key), path)

    def cells(self) -> list[dict[str, Any]]:
        return results.read_cells(self.path)

    def counts(self) -> tuple[int, int]:
        """(answered, planned) documents; planned is only known once a run has opened the tasks
        (until then it is the answered count)."""
        done = len(self.log.keys)
        return done, max(done, self.record.get("total") or 0)

    def figure(self, cells: list[dict[str, Any]] | None = None) -> Any:
        return figure(
            self.cells() if cells is None else cells, title=f"lm-eval: {self.target.label}"
        )

    # -- lm-eval pieces -----------------------------------------------------------------------

    def task_manager(self) -> Any:
        include = self.config.include_path
        return _task_manager(str(Path(include).expanduser().resolve()) if include else None)

    def leaf_tasks(self, manager: Any) -> dict[str, Any]:
        """The tasks to run by name, groups opened down to their tasks.

        Raises:
            LongCtxError: a name lm-eval does not know, or a task an endpoint cannot run.
        """
        from lm_eval.tasks import get_task_dict

        unknown = [t for t in self.config.tasks if not manager.match_tasks([t])]
        if unknown:
            raise LongCtxError(
                f"lm-eval knows no task or group {', '.join(unknown)}; list them with "
                "`lm-eval ls tasks`, or add your own YAMLs with --include-path"
            )
        leaves: dict[str, Any] = {}

        def walk(node: Any) -> None:
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(value)
                elif value is not None:
                    leaves[getattr(key, "group_name", None) or str(key)] = value

        walk(get_task_dict(self.config.tasks, manager))
        if self.target.endpoint is not None:
            scored = [n for n, t in leaves.items() if t.OUTPUT_TYPE != "generate_until"]
            if scored:
                raise LongCtxError(
                    f"{', '.join(sorted(scored)[:5])} score answer likelihoods, which a chat "
                    "endpoint does not return: evaluate them on the local model"
                )
        return leaves

    def model(self) -> Any:
        """lm-eval's model: `HFLM` around our loaded model, or its chat-completions client."""
        if self._lm is not None:
            return self._lm
        if self.target.endpoint is not None:
            from lm_eval.models.openai_completions import LocalChatCompletion

            endpoint = self.target.endpoint
            if endpoint.api_key:  # lm-eval reads the key from the environment only
                os.environ["OPENAI_API_KEY"] = endpoint.api_key
            self._lm = LocalChatCompletion(
                model=endpoint.model,
                base_url=endpoint.base_url + "/chat/completions",
                tokenizer_backend=None,
                tokenized_requests=False,
                max_length=1 << 20,
            )
            return self._lm
        from lm_eval.models.huggingface import HFLM

        from core.models.loader import default_cache

        loaded = (self.models or default_cache).get(self.target.model)
        device = str(next(loaded.model.parameters()).device)
        self._lm = HFLM(
            pretrained=loaded.model,
            tokenizer=loaded.tokenizer,
            device=device,
            batch_size=1,
            max_length=loaded.window or None,
        )
        if self.record.get("window") != loaded.window:
            self.record["window"] = loaded.window
            results.write_config(self.path, self.record)
        return self._lm

    # -- running ------------------------------------------------------------------------------

    def plan(self, leaves: dict[str, Any]) -> dict[str, list[Any]]:
        """Per task, the document ids still to answer (of its first `limit`)."""
        plan = {}
        for name, task in leaves.items():
            docs = task.eval_docs
            ids = list(range(min(self.config.limit, len(docs))))
            plan[name] = [i for i in ids if sample_key(name, i) not in self.log.keys]
        return plan

    def run(
        self, progress: Progress | None = None, cancel: threading.Event | None = None
    ) -> Iterator[dict[str, Any]]:
        """Answer the pending documents chunk by chunk, yielding each cell once written.

        Raises:
            LongCtxError: an unknown task, a dataset that cannot be loaded, a failing endpoint.
        """
        from lm_eval import simple_evaluate

        manager = self.task_manager()
        plan = self.plan(self.leaf_tasks(manager))
        total = len(self.log.keys) + sum(len(ids) for ids in plan.values())
        if self.record.get("total") != total:
            self.record["total"] = total
            results.write_config(self.path, self.record)
        done = len(self.log.keys)
        if progress:
            progress(done, total, None)
        extra = {"max_gen_toks": self.config.max_new_tokens} if self.config.max_new_tokens else None
        metadata = {"max_seq_lengths": self.config.lengths} if self.config.lengths else None
        for name, ids in plan.items():
            for start in range(0, len(ids), self.config.chunk):
                if cancel is not None and cancel.is_set():
                    return
                chunk = ids[start : start + self.config.chunk]
                out = simple_evaluate(
                    model=self.model(),
                    tasks=[name],
                    samples={name: chunk},
                    task_manager=manager,
                    num_fewshot=self.config.num_fewshot,
                    gen_kwargs=extra,
                    metadata=metadata,
                    apply_chat_template=self.config.chat or self.target.endpoint is not None,
                    log_samples=True,
                    bootstrap_iters=0,
                )
                for sample in (out or {}).get("samples", {}).get(name, []):
                    cell = cell_from(name, sample)
                    self.log.append(cell)
                    done += 1
                    if progress:
                        progress(done, total, cell)
                    yield cell

    def run_all(self, progress: Progress | None = None) -> list[dict[str, Any]]:
        for _ in self.run(progress):
            pass
        return self.cells()


def cell_from(task: str, sample: dict[str, Any]) -> dict[str, Any]:
    """One logged lm-eval sample as a cell: its metrics as lm-eval computed them, the first
    one as `score`, the reply (after the task's filters) as `answer`."""
    names = [m for m in sample.get("metrics", []) if m in sample]
    metrics = {m: _plain(sample[m]) for m in names}
    first = metrics.get(names[0]) if names else None
    answer = _chosen(sample)
    doc = sample.get("doc")
    subject = doc.get("subject") if isinstance(doc, dict) else None  # MMLU-style rows
    return {
        **({"subject": str(subject)} if subject else {}),
        "key": sample_key(task, sample["doc_id"]),
        "task": task,
        "doc_id": sample["doc_id"],
        "expected": _plain(sample.get("target")),
        "answer": str(answer),
        "metrics": metrics,
        "score": float(first) if isinstance(first, (int, float)) else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _chosen(sample: dict[str, Any]) -> str:
    """The reply: the generated text, or for a multiple-choice task the continuation with the
    highest log-likelihood (its `filtered_resps` are `(loglikelihood, is_greedy)` pairs)."""
    replies = sample.get("filtered_resps") or []
    scored = all(
        isinstance(r, (list, tuple)) and r and isinstance(r[0], (int, float)) for r in replies
    )
    if not replies or not scored:
        answer = replies[0] if replies else ""
        while isinstance(answer, (list, tuple)) and answer:
            answer = answer[0]
        return str(answer)
    best = max(range(len(replies)), key=lambda i: replies[i][0])
    args = sample.get("arguments")
    items = list(args.values()) if isinstance(args, dict) else list(args or [])
    item = items[best] if best < len(items) else None
    if isinstance(item, dict):
        item = [item.get("arg_0"), item.get("arg_1")]
    if isinstance(item, (list, tuple)) and len(item) > 1 and item[1] is not None:
        return str(item[1]).strip()
    return str(best)


def _plain(value: Any) -> Any:
    """JSON-friendly: numbers, strings and lists as they are, anything else as text."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def summary(cells: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per task, the mean of each metric over its answered samples (lm-eval's mean
    aggregation; corpus-level metrics such as BLEU are not means and differ from lm-eval's)."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for cell in cells:
        for name, value in (cell.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                sums[cell["task"]][name].append(float(value))
    return {t: {m: sum(v) / len(v) for m, v in ms.items()} for t, ms in sorted(sums.items())}


def figure(cells: list[dict[str, Any]], title: str = "lm-eval") -> Any:
    """Mean score (each sample's first metric) per task, as bars."""
    import plotly.graph_objects as go

    scores: dict[str, list[float]] = defaultdict(list)
    for cell in cells:
        if isinstance(cell.get("score"), (int, float)):
            scores[cell["task"]].append(float(cell["score"]))
    tasks = sorted(scores)
    means = [100 * sum(scores[t]) / len(scores[t]) for t in tasks]
    fig = go.Figure(
        go.Bar(
            x=tasks,
            y=[round(m, 1) for m in means],
            text=[f"{m:.1f} (n={len(scores[t])})" for m, t in zip(means, tasks, strict=True)],
        )
    )
    fig.update_layout(
        title=title,
        yaxis={"title": "score (%)", "range": [0, 102]},
        template="plotly_white",
        height=420,
    )
    return fig
