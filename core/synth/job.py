"""A synthetic-data run, top to bottom: config -> contexts -> requests -> answers -> checked samples.

`SynthConfig` is the one typed object the CLI (`longctx synth`) and the Generate tab fill in;
`validate()` lists every problem at once. `SynthJob(config).estimate()` is the dry run: the
contexts it would build, every request it would send (and which are already cached), tokens and
an upper bound of the cost; it sends nothing. `SynthJob.run()` sends the requests with bounded
concurrency (drivers per context, one shared request pool), reports `(done, total)` requests,
stops on a `threading.Event`, hands each sample to `on_sample` as soon as it is complete, and
writes the samples atomically (`core.data.io`) in context order, with `<out>.failures.jsonl`
beside them. `status()` may be polled from another thread for a live view.

Resuming is the reply cache's work: a stopped or crashed run, started again with the same
config, rebuilds the same requests and pays only for those without a cached reply.
This module knows nothing about gradio or argparse.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data import io
from core.errors import LongCtxError
from core.synth import parsing, prompts, sources, tasks
from core.synth.client import (
    Cancelled,
    FailureLog,
    Generator,
    RequestFailed,
    Usage,
)
from core.synth.config import SynthConfig
from core.synth.sources import Context
from core.synth.tasks import Answer, Ask, Built

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
# Tokens a chat request adds around its messages (role markers), as OpenAI counts them.
_PER_MESSAGE, _PER_REQUEST = 4, 3


# ---------------------------------------------------------------------------------------------
# Plain records the CLI prints and the Generate tab shows.


@dataclass
class PlannedRequest:
    label: str
    prompt_tokens: int
    cached: bool


@dataclass
class Estimate:
    """The dry run: what a run would send and cost. Nothing is sent to build it."""

    contexts: int
    context_tokens: list[int]
    requests: list[PlannedRequest]
    """The requests known before any answer (biographies come after, see `later_requests`)."""
    cached: int
    to_send: int
    prompt_tokens: int
    """Prompt tokens of the requests to send (under the configured tokenizer)."""
    max_completion_tokens: int
    """Upper bound: every request to send writing `answer_tokens`."""
    later_requests: int
    later_prompt_tokens: int
    cost_usd: float
    """Upper bound of the cost of everything to send, at the configured prices."""
    skipped: list[str]
    example: list[dict[str, str]]
    """The first request's messages."""

    def summary(self, price_in: float = 0.0, price_out: float = 0.0) -> str:
        """A few lines for people: contexts, requests, tokens, cost, skipped documents."""
        tokens = self.context_tokens
        sizes = f"of {min(tokens):,}..{max(tokens):,} tokens" if tokens else ""
        later = f" + about {self.later_requests} biography requests after them"
        lines = [
            f"{self.contexts} contexts {sizes}",
            f"{len(self.requests)} requests now ({self.cached} cached, {self.to_send} to send)"
            + (later if self.later_requests else ""),
            f"to send: {self.prompt_tokens + self.later_prompt_tokens:,} prompt tokens, at most "
            f"{self.max_completion_tokens:,} completion tokens",
        ]
        if price_in or price_out:
            lines.append(
                f"cost at most ${self.cost_usd:,.4f} (${price_in:g} / ${price_out:g} per 1M "
                "tokens in / out; re-asks of unreadable answers come on top)"
            )
        if self.skipped:
            lines.append(f"{len(self.skipped)} skipped: " + "; ".join(self.skipped[:3]))
        return "\n".join(lines)


@dataclass
class Status:
    """A snapshot of a run for a live view (poll `SynthJob.status()`)."""

    done: int
    total: int
    samples: int
    failures: int
    usage: Usage
    cost_usd: float
    running: bool
    cancelled: bool


@dataclass
class SynthResult:
    samples: list[dict[str, Any]]
    """In context order."""
    output: Path
    failures_path: Path
    failures: list[dict[str, Any]]
    usage: Usage
    cost_usd: float
    """What the requests sent in this run cost."""
    saved_usd: float
    """What the cached replies would have cost again."""
    contexts: int
    skipped: list[str]
    """Contexts without a sample, and why."""
    flagged: int
    duplicates: int
    cancelled: bool
    seconds: float


# ---------------------------------------------------------------------------------------------
# The job.


class SynthJob:
    """Plan, estimate and run one `SynthConfig`.

    Example:
        job = SynthJob(SynthConfig(task="biography", source="books/", n_docs=2))
        print(job.estimate().summary())
        result = job.run(progress=lambda d, t: print(d, t), cancel=stop_event)
    """

    def __init__(
        self,
        config: SynthConfig,
        *,
        tokenizer: Any = None,
        documents: list[Any] | None = None,
    ):
        """
        Args:
            config: validated here.
            tokenizer: a loaded tokenizer (default: load `config.tokenizer`).
            documents: `core.text.corpus.Document`s to use instead of reading `config.source`.
        """
        self.config = config.validate()
        self.templates = config.templates()
        self._tokenizer, self._documents = tokenizer, documents
        self._contexts: list[Context] | None = None
        self.skipped: list[str] = []
        self.count: sources.Counter = len  # replaced by the tokenizer's counter in prepare()
        self._lock = threading.Lock()
        self._done = self._total = 0
        self._samples: list[dict[str, Any]] = []
        self._generator: Generator | None = None
        self._failures: FailureLog | None = None
        self._running = False
        self._cancel = threading.Event()
        self._fatal: LongCtxError | None = None

    # -- planning --------------------------------------------------------------------------

    def prepare(self) -> list[Context]:
        """Read the documents, load the tokenizer and build the contexts (once)."""
        if self._contexts is not None:
            return self._contexts
        cfg = self.config
        docs, unreadable = self._documents, []
        if docs is None:  # read first: a wrong folder fails before a tokenizer is loaded
            docs = sources.load_documents(cfg.source, unreadable)
        if self._tokenizer is None:
            from core.models.tokenizers import load_tokenizer

            self._tokenizer = load_tokenizer(cfg.tokenizer)
        self.count = sources.token_counter(self._tokenizer)
        contexts, skipped = self._contexts_of(docs)
        skipped = unreadable + skipped
        if not contexts:
            why = "; ".join(skipped[:3]) or "no documents"
            raise LongCtxError(
                f"no context of {cfg.min_tokens}..{cfg.max_tokens} tokens can be made from "
                f"{cfg.source!r} ({why}); lower min_tokens or add longer documents"
            )
        self._contexts, self.skipped = contexts, skipped
        return contexts

    def _contexts_of(self, docs: list[Any]) -> tuple[list[Context], list[str]]:
        cfg = self.config
        args = (cfg.min_tokens, cfg.max_tokens, self.count)
        if cfg.task != "multi-detail" or cfg.multi_mode == "homogeneous":
            return sources.document_contexts(docs, *args, cfg.n_docs)
        k = cfg.clusters or max(2, round(len(docs) / 4))
        labels = sources.cluster_labels(docs, k, cfg.seed)

        def header(i: int, title: str) -> str:
            return prompts.fill(self.templates["document_header"], i=i, title=title)

        clustered, skipped = sources.cluster_contexts(docs, labels, *args, cfg.n_docs, header)
        if cfg.multi_mode == "heterogeneous":
            return clustered, skipped
        single, skipped_docs = sources.document_contexts(docs, *args, cfg.n_docs)
        # `both`: alternate, starting with a single document; either side fills the other's gap.
        mixed: list[Context] = []
        while len(mixed) < cfg.n_docs and (single or clustered):
            for queue in (single, clustered):
                if queue and len(mixed) < cfg.n_docs:
                    mixed.append(queue.pop(0))
        return mixed, skipped_docs + skipped

    def first_asks(self, ctx: Context) -> list[Ask]:
        """The requests a context needs before any answer is back."""
        cfg, t, count = self.config, self.templates, self.count
        if cfg.prompt_set == "paper":
            return tasks.paper_asks(
                cfg.task,
                ctx,
                t,
                count,
                cfg.chunk_tokens,
                cfg.qa_per_chunk,
                cfg.characters,
                cfg.chunks_per_doc,
            )
        if cfg.task == "single-detail":
            return tasks.single_detail_asks(
                ctx, t, count, cfg.chunk_tokens, cfg.qa_per_chunk, cfg.chunks_per_doc
            )
        if cfg.task == "multi-detail":
            return tasks.multi_detail_asks(
                ctx,
                t,
                count,
                cfg.chunk_tokens,
                cfg.qa_per_chunk,
                cfg.passages,
                cfg.multi_requests,
                cfg.seed,
            )
        return tasks.name_asks(ctx, t, count, cfg.chunk_tokens, cfg.chunks_per_doc)

    @property
    def _asks_later(self) -> bool:
        """Studio biographies: one request per character once the names are back."""
        return self.config.task == "biography" and self.config.prompt_set != "paper"

    def _prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return _PER_REQUEST + sum(_PER_MESSAGE + self.count(m["content"]) for m in messages)

    def estimate(self) -> Estimate:
        """The dry run: contexts, requests (cached or not), tokens and the most it can cost."""
        cfg, ep = self.config, self.config.endpoint
        contexts = self.prepare()
        probe = Generator(ep, cache=cfg.cache())
        planned, example = [], []
        for ctx in contexts:
            for ask in self.first_asks(ctx):
                cached = probe.is_cached(ask.messages)
                planned.append(PlannedRequest(ask.label, self._prompt_tokens(ask.messages), cached))
                example = example or ask.messages
        later = later_tokens = 0
        if self._asks_later:
            later = len(contexts) * cfg.characters
            frame = self._prompt_tokens(tasks.messages(self.templates, self.templates["biography"]))
            later_tokens = sum(
                cfg.characters * (frame + min(cfg.chunk_tokens, c.tokens)) for c in contexts
            )
        to_send = [p for p in planned if not p.cached]
        prompt = sum(p.prompt_tokens for p in to_send)
        completion = (len(to_send) + later) * ep.answer_tokens
        return Estimate(
            contexts=len(contexts),
            context_tokens=[c.tokens for c in contexts],
            requests=planned,
            cached=len(planned) - len(to_send),
            to_send=len(to_send),
            prompt_tokens=prompt,
            max_completion_tokens=completion,
            later_requests=later,
            later_prompt_tokens=later_tokens,
            cost_usd=ep.cost(prompt + later_tokens, completion),
            skipped=list(self.skipped),
            example=example,
        )

    # -- running ---------------------------------------------------------------------------

    def status(self) -> Status:
        """Where the run stands; safe to call from any thread at any time."""
        gen = self._generator
        usage = gen.usage if gen is not None else Usage()
        with self._lock:
            return Status(
                done=self._done,
                total=self._total,
                samples=len(self._samples),
                failures=len(self._failures.entries) if self._failures else 0,
                usage=usage,
                cost_usd=self.config.endpoint.cost(usage.prompt_tokens, usage.completion_tokens),
                running=self._running,
                cancelled=self._cancel.is_set(),
            )

    def samples(self) -> list[dict[str, Any]]:
        """The samples finished so far, in the order they finished."""
        with self._lock:
            return list(self._samples)

    def run(
        self,
        *,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        on_sample: Callable[[dict[str, Any]], None] | None = None,
    ) -> SynthResult:
        """Send the requests, check the answers, write the samples.

        Args:
            progress: called with (requests done, requests planned) after each request.
            cancel: set it to stop: no new request is sent; those in flight finish and are
                cached (they are paid for), and the samples already complete are written.
            on_sample: called with each sample as soon as it is complete (on this thread).

        Raises:
            LongCtxError: the endpoint refuses every request (bad key, unknown model): `cancel`
                is set, and the samples made until then are written first.
        """
        cfg, started = self.config, time.monotonic()
        contexts = self.prepare()
        self._cancel = cancel or threading.Event()
        gen = Generator(
            cfg.endpoint, cache=cfg.cache(), cancel=self._cancel, count_tokens=self.count
        )
        failures = FailureLog(cfg.failures_path())
        plans = [self.first_asks(ctx) for ctx in contexts]
        later = len(contexts) * cfg.characters if self._asks_later else 0
        with self._lock:
            self._generator, self._failures, self._fatal = gen, failures, None
            self._done, self._total, self._samples = 0, sum(map(len, plans)) + later, []
            self._running = True
        built: dict[int, Built] = {}
        try:
            built = self._drive_all(contexts, plans, gen, failures, progress, on_sample)
        finally:
            with self._lock:
                self._running = False
        samples = [built[i].sample for i in sorted(built) if built[i].sample is not None]
        output = cfg.output_path()
        output.parent.mkdir(parents=True, exist_ok=True)
        io.write_jsonl(output, samples)
        if self._fatal is not None:
            raise self._fatal
        return self._result(contexts, built, samples, output, gen, failures, started)

    def _result(self, contexts, built, samples, output, gen, failures, started) -> SynthResult:
        usage, ep = gen.usage, self.config.endpoint
        return SynthResult(
            samples=samples,
            output=output,
            failures_path=failures.path or self.config.failures_path(),
            failures=list(failures.entries),
            usage=usage,
            cost_usd=ep.cost(usage.prompt_tokens, usage.completion_tokens),
            saved_usd=ep.cost(usage.cached_prompt_tokens, usage.cached_completion_tokens),
            contexts=len(contexts),
            skipped=[
                f"{contexts[i].id}: {b.reason}"
                for i, b in sorted(built.items())
                if b.sample is None
            ],
            flagged=sum(b.flagged for b in built.values()),
            duplicates=sum(b.duplicates for b in built.values()),
            cancelled=self._cancel.is_set(),
            seconds=time.monotonic() - started,
        )

    def _drive_all(self, contexts, plans, gen, failures, progress, on_sample) -> dict[int, Built]:
        width = self.config.endpoint.concurrency
        built: dict[int, Built] = {}
        with (
            ThreadPoolExecutor(width, thread_name_prefix="synth-request") as pool,
            ThreadPoolExecutor(
                min(width, len(contexts)), thread_name_prefix="synth-ctx"
            ) as drivers,
        ):
            jobs: dict[Future, int] = {
                drivers.submit(self._drive, ctx, asks, pool, gen, failures, progress): i
                for i, (ctx, asks) in enumerate(zip(contexts, plans, strict=True))
            }
            try:
                for future in as_completed(jobs):
                    result = built[jobs[future]] = future.result()
                    if result.sample is not None:
                        with self._lock:
                            self._samples.append(result.sample)
                        if on_sample is not None:
                            on_sample(result.sample)
            except BaseException:
                self._cancel.set()  # a bug or Ctrl-C: send nothing more, then let it surface
                raise
        return built

    def _drive(self, ctx: Context, asks: list[Ask], pool, gen, failures, progress) -> Built:
        """One context from its first request to its sample (runs on a driver thread)."""
        cfg = self.config
        if self._cancel.is_set():
            return Built(None, "stopped before it started")
        if not asks:
            return Built(None, "too short for this task: no request to make")
        try:
            answers = self._gather(ctx, asks, pool, gen, failures, progress)
            if cfg.task == "biography" and cfg.prompt_set == "paper":
                answers = [
                    b for a in answers for b in tasks.split_biographies(ctx, a, cfg.characters)
                ]
                if not answers:
                    return Built(None, "no character named by the generator occurs in the text")
            elif cfg.task == "biography":
                names = tasks.main_characters(ctx, [a.value for a in answers], cfg.characters)
                bios = tasks.biography_asks(
                    ctx, names, self.templates, self.count, cfg.chunk_tokens
                )
                self._advance(0, len(bios) - cfg.characters, progress)
                if not bios:
                    return Built(None, "no character named by the generator occurs in the text")
                answers = self._gather(ctx, bios, pool, gen, failures, progress)
            return self._build(ctx, answers)
        except Cancelled:
            return Built(None, "stopped")
        except LongCtxError as exc:
            with self._lock:
                self._fatal = self._fatal or exc
            self._cancel.set()
            return Built(None, str(exc))

    def _gather(self, ctx, asks, pool, gen, failures, progress) -> list[Answer]:
        futures = [pool.submit(self._ask, ctx, a, gen, failures, progress) for a in asks]
        answers = [f.result() for f in futures]  # re-raises Cancelled / LongCtxError
        return [a for a in answers if a is not None]

    def _ask(
        self, ctx: Context, ask: Ask, gen: Generator, failures: FailureLog, progress
    ) -> Answer | None:
        """One request (and its re-ask); a failure is logged and gives None.

        A stopped run (Cancelled) or a refused key (LongCtxError) propagates to the driver, and
        the request does not count as done.
        """
        read = {
            "qa": parsing.parse_qa,
            "names": parsing.parse_names,
            "biography": parsing.parse_text,
            "biographies": parsing.parse_biographies,
        }
        suffix = self.templates["reask_text" if ask.kind == "biography" else "reask"]
        answer = None
        try:
            value, replies = gen.ask(
                ask.messages, read[ask.kind], reask_suffix=suffix, label=ask.label
            )
            answer = Answer(ask, value, replies)
        except RequestFailed as exc:
            failures.add(
                task=self.config.task,
                context=ctx.id,
                request=ask.label,
                reason=exc.reason,
                attempts=exc.attempts,
                key=exc.key,
            )
            log.warning("%s: %s", ask.label, exc.reason)
        self._advance(1, 0, progress)
        return answer

    def _advance(self, done: int, total: int, progress: Progress | None) -> None:
        with self._lock:
            self._done += done
            self._total += total
            now = (self._done, self._total)
        if progress is not None:
            progress(*now)

    def _build(self, ctx: Context, answers: list[Answer]) -> Built:
        cfg = self.config
        replies = [r for a in answers for r in a.replies]
        ep = cfg.endpoint
        generator = {
            "model": ep.model,
            "base_url": ep.public_url(),
            **ep.params(),
            "prompt_set": cfg.prompt_set,
            "prompts": tasks.prompt_fingerprint(self.templates),
            "requests": len(replies),
            "prompt_tokens": sum(r.prompt_tokens for r in replies),
            "completion_tokens": sum(r.completion_tokens for r in replies),
        }
        checks = {"min_support": cfg.min_support, "drop_unsupported": cfg.drop_unsupported}
        if not answers:
            return Built(None, "every request failed (see the failure log)")
        if cfg.task == "biography":
            return tasks.biography_sample(
                ctx,
                answers,
                self.templates["biography_question"],
                metadata={"generator": generator},
                **checks,
            )
        return tasks.qa_sample(
            cfg.task, ctx, answers, seed=cfg.seed, metadata={"generator": generator}, **checks
        )


def estimate(config: SynthConfig, **kwargs: Any) -> Estimate:
    """`SynthJob(config, **kwargs).estimate()`."""
    return SynthJob(config, **kwargs).estimate()


def run(config: SynthConfig, **kwargs: Any) -> SynthResult:
    """`SynthJob(config).run(...)`; `tokenizer` and `documents` go to the job, the rest to run."""
    job_args = {k: kwargs.pop(k) for k in ("tokenizer", "documents") if k in kwargs}
    return SynthJob(config, **job_args).run(**kwargs)
