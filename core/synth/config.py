"""The configuration of a synthetic-data run: one typed object for the CLI, the UI and saved runs.

`SynthConfig` (with its `EndpointConfig`) is what `longctx synth` builds from its flags and the
Generate tab from its form; `validate()` gathers every problem and raises one `ConfigError`, so
both refuse the same things with the same words. Field docstrings are the help texts
(`core.configs.field_help`). `to_dict` leaves the API key out. This module knows nothing about how a run goes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import workspace
from core.errors import ConfigError
from core.synth import prompts, tasks
from core.synth.cache import ReplyCache
from core.synth.client import EndpointConfig
from core.synth.tasks import TASKS


@dataclass
class SynthConfig:
    """One generation run. Field docstrings are the help text of the CLI and the Generate tab."""

    task: str = "single-detail"
    """`single-detail`, `multi-detail` or `biography` (the paper's three GPT-4 tasks)."""
    prompt_set: str = "studio"
    """`studio` (questions on chosen passages) or `paper` (the paper's requests: chunks for
    single-detail, the whole context in one request for multi-detail and biographies; at
    temperature 0; the CLI and the form start it at 4 Q&A per chunk or 10 per context and 4,096
    answer tokens, as the paper's notebooks)."""
    source: str = "builtin"
    """A folder (or file) of .txt / .md / .jsonl documents, or `builtin` (made on this machine)."""
    n_docs: int = 4
    """Samples to make: one per context (a document, a stretch of a long one, or a cluster)."""
    min_tokens: int = 1024
    """Shortest context in tokens; shorter documents are skipped (paper: ~64K)."""
    max_tokens: int = 6144
    """Longest context in tokens; longer documents are cut on paragraphs. Keep it below the
    training max_length, with room for the questions and answers: a longer sample is dropped at
    training (default: 3/4 of the embedded model's 8K; the paper: 64K-class contexts for 80K)."""
    chunk_tokens: int = 4096
    """Largest chunk of source text shown to the generator in one request (paper: 4096)."""
    qa_per_chunk: int = 3
    """Question-answer pairs asked for per request."""
    chunks_per_doc: int = 0
    """Single-detail and biography names: chunks asked about per context, spread evenly (0: all)."""
    multi_mode: str = "both"
    """Multi-detail: `homogeneous` (one document), `heterogeneous` (a cluster) or `both`."""
    passages: int = 3
    """Multi-detail: places (or documents) each question should need."""
    multi_requests: int = 3
    """Multi-detail: requests per context, each over its own set of passages."""
    characters: int = 3
    """Biography: main characters per context, one biography each."""
    clusters: int = 0
    """Heterogeneous: number of k-means clusters of the corpus (0: one per ~4 documents)."""
    min_support: float = 0.5
    """Flag an answer when less than this share of its content words is in its source passage."""
    drop_unsupported: bool = False
    """Drop flagged answers instead of keeping them with a flag."""
    tokenizer: str = "embedded"
    """Model whose tokenizer counts tokens (the model you will train: its max_length)."""
    seed: int = 0
    """Seeds the choice of passages, clusters and the order of turns."""
    out: str = ""
    """Output JSONL; a relative path is under LONGCTX_HOME/datasets (default: synth-<task>.jsonl)."""
    cache_dir: str = ""
    """Reply cache folder; a relative path is under LONGCTX_HOME/cache (default: cache/synth)."""
    use_cache: bool = True
    """Reuse cached replies; off sends every request again (and caches nothing)."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Prompt overrides by name (see `core.synth.prompts.DEFAULTS`)."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    """The generator: base URL, model, key, concurrency, retries, prices."""

    def validate(self) -> SynthConfig:
        """Raise one ConfigError listing every problem; return self when there is none."""
        p: list[str] = []
        if self.task not in TASKS:
            p.append(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.prompt_set not in prompts.PROMPT_SETS:
            p.append(
                f"prompt_set must be one of {', '.join(prompts.PROMPT_SETS)}, "
                f"got {self.prompt_set!r}"
            )
        elif self.prompt_set == "paper" and self.endpoint.temperature != prompts.PAPER_TEMPERATURE:
            p.append(
                f"the paper prompt set asks at temperature 0, as the paper's notebooks did; set "
                f"temperature 0 (got {self.endpoint.temperature}) or use the studio set"
            )
        if not str(self.source or "").strip():
            p.append("source is empty; give a folder of documents or 'builtin'")
        ints = (
            "n_docs",
            "min_tokens",
            "max_tokens",
            "chunk_tokens",
            "qa_per_chunk",
            "chunks_per_doc",
            "passages",
            "multi_requests",
            "characters",
            "clusters",
            "seed",
        )
        bad = [n for n in ints if not isinstance(getattr(self, n), int)]
        p += [f"{n} must be a whole number, got {getattr(self, n)!r}" for n in bad]
        if not bad:
            p += self._range_problems()
        if self.multi_mode not in tasks.MULTI_MODES:
            p.append(f"multi_mode must be one of {', '.join(tasks.MULTI_MODES)}")
        if not isinstance(self.min_support, (int, float)) or not 0 <= self.min_support <= 1:
            p.append(f"min_support must be between 0 and 1, got {self.min_support}")
        if not str(self.tokenizer or "").strip():
            p.append("tokenizer is empty; name the model whose tokens count (e.g. 'embedded')")
        p += prompts.check_overrides(self.prompts or {})
        p += self.endpoint.problems()
        if p:
            raise ConfigError(p)
        return self

    def _range_problems(self) -> list[str]:
        p = []
        if self.n_docs < 1:
            p.append(f"n_docs must be at least 1, got {self.n_docs}")
        if self.min_tokens < 16 or self.max_tokens < self.min_tokens:
            p.append(
                f"the context range {self.min_tokens}..{self.max_tokens} tokens is empty; "
                "min_tokens must be >= 16 and max_tokens at least min_tokens"
            )
        if self.chunk_tokens < 32:
            p.append(f"chunk_tokens must be at least 32, got {self.chunk_tokens}")
        if not 1 <= self.qa_per_chunk <= 50:
            p.append(f"qa_per_chunk must be 1..50, got {self.qa_per_chunk}")
        if self.chunks_per_doc < 0 or self.clusters < 0:
            p.append("chunks_per_doc and clusters must be 0 (automatic) or more")
        if not 2 <= self.passages <= 10:
            p.append(f"passages must be 2..10, got {self.passages}")
        if self.multi_requests < 1:
            p.append(f"multi_requests must be at least 1, got {self.multi_requests}")
        if not 1 <= self.characters <= 50:
            p.append(f"characters must be 1..50, got {self.characters}")
        return p

    @staticmethod
    def suggested(prompt_set: str, task: str) -> dict[str, Any]:
        """Settings a prompt set starts from (what the CLI and the form fill in when not set).

        The paper set: its notebooks' temperature and question counts, and documents on their
        own (its multi-detail questions were about one book, never a cluster).
        """
        if prompt_set != "paper":
            d = SynthConfig()
            return {
                "temperature": d.endpoint.temperature,
                "qa_per_chunk": d.qa_per_chunk,
                "multi_mode": d.multi_mode,
                "answer_tokens": d.endpoint.answer_tokens,
            }
        return {
            "temperature": prompts.PAPER_TEMPERATURE,
            "multi_mode": "homogeneous",
            "qa_per_chunk": prompts.PAPER_QUESTIONS.get(task, SynthConfig.qa_per_chunk),
            "answer_tokens": prompts.PAPER_ANSWER_TOKENS,
        }

    def templates(self) -> dict[str, str]:
        """Every prompt, user overrides applied."""
        return {**prompts.DEFAULTS, **(self.prompts or {})}

    def output_path(self) -> Path:
        out = Path(self.out or f"synth-{self.task}.jsonl").expanduser()
        return out if out.is_absolute() else workspace.subdir("datasets") / out

    def cache(self) -> ReplyCache | None:
        """The reply cache this run reads and writes (None with `use_cache` off)."""
        if not self.use_cache:
            return None
        folder = Path(self.cache_dir).expanduser() if self.cache_dir else None
        if folder is not None and not folder.is_absolute():
            folder = workspace.subdir("cache") / folder
        return ReplyCache(folder)

    def failures_path(self) -> Path:
        out = self.output_path()
        return out.with_name(out.name.removesuffix(".jsonl") + ".failures.jsonl")

    def to_dict(self) -> dict[str, Any]:
        """Plain data to save or show; the API key is left out."""
        data = dataclasses.asdict(self)
        data["endpoint"].pop("api_key", None)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        data = dict(data)
        endpoint = EndpointConfig(**(data.pop("endpoint", None) or {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**data, endpoint=endpoint)
