"""`longctx synth TASK ...` (LLM-written data) and `longctx make TASK ...` (procedural data).

    longctx synth single-detail --source books/ --base-url URL --model M --dry-run
    longctx synth biography --source builtin --n-docs 2 --price-in 2.5 --price-out 10
    longctx make passkey --n 100 --length 8000 --model embedded --depths 0 50 100 --out pk.jsonl

`synth` prints the plan and cost with `--dry-run` and sends nothing; otherwise it shows a
progress line with the running cost, and Ctrl-C stops it cleanly (requests in flight finish and
are cached; the samples done are written; the same command later resumes). This module parses
arguments and prints; the work is done by `core.synth.job` and `core.synth.procedural`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from core import workspace
from core.configs import field_help
from core.errors import ConfigError
from core.synth import procedural, sources, text
from core.synth.client import EndpointConfig
from core.synth.config import SynthConfig
from core.synth.job import SynthJob
from core.synth.prompts import DEFAULTS, PROMPT_SETS
from core.synth.sources import BUILTIN
from core.synth.tasks import MULTI_MODES, TASKS

_SHOWN_REQUESTS = 20
_BY_SET = (
    " Default: the prompt set's (studio: 3, both, 0.7, 1024; paper: 4 or 10, homogeneous, 0, 4096)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `longctx synth` and `longctx make`."""
    _add_synth_parser(subparsers)
    add_make_parser(subparsers)


def _add_synth_parser(subparsers: argparse._SubParsersAction) -> None:
    h, e = field_help(SynthConfig), field_help(EndpointConfig)
    d, de = SynthConfig(), EndpointConfig()
    p = subparsers.add_parser(
        "synth",
        help="generate long-context QA data with an OpenAI-compatible model (paper's GPT-4 tasks)",
        description="Build long-context samples from your documents with any OpenAI-compatible "
        "generator. Replies are cached under LONGCTX_HOME/cache/synth: a rerun or a resumed "
        "run sends only missing requests. Try --dry-run first.",
    )
    p.add_argument("task", choices=TASKS, help="which of the paper's tasks")
    p.add_argument("--prompt-set", choices=PROMPT_SETS, default=d.prompt_set, help=h["prompt_set"])
    p.add_argument("--source", default=d.source, help=h["source"])
    p.add_argument("--n-docs", type=int, default=d.n_docs, help=h["n_docs"])
    p.add_argument("--min-tokens", type=int, default=d.min_tokens, help=h["min_tokens"])
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help=h["max_tokens"])
    p.add_argument("--chunk-tokens", type=int, default=d.chunk_tokens, help=h["chunk_tokens"])
    p.add_argument("--qa-per-chunk", type=int, help=h["qa_per_chunk"] + _BY_SET)
    p.add_argument("--chunks-per-doc", type=int, default=d.chunks_per_doc, help=h["chunks_per_doc"])
    p.add_argument("--multi-mode", choices=MULTI_MODES, help=h["multi_mode"] + _BY_SET)
    p.add_argument("--passages", type=int, default=d.passages, help=h["passages"])
    p.add_argument("--multi-requests", type=int, default=d.multi_requests, help=h["multi_requests"])
    p.add_argument("--characters", type=int, default=d.characters, help=h["characters"])
    p.add_argument("--clusters", type=int, default=d.clusters, help=h["clusters"])
    p.add_argument("--min-support", type=float, default=d.min_support, help=h["min_support"])
    p.add_argument("--drop-unsupported", action="store_true", help=h["drop_unsupported"])
    p.add_argument("--tokenizer", default=d.tokenizer, help=h["tokenizer"])
    p.add_argument("--seed", type=int, default=d.seed, help=h["seed"])
    p.add_argument("--out", default="", help=h["out"])
    p.add_argument("--cache-dir", default="", help=h["cache_dir"])
    p.add_argument("--no-cache", action="store_true", help="send every request, cache nothing")
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help=f"replace a prompt by a file's text; names: {', '.join(DEFAULTS)}",
    )
    g = p.add_argument_group("generator")
    g.add_argument("--base-url", default=de.base_url, help=e["base_url"])
    g.add_argument("--model", default=de.model, help=e["model"])
    g.add_argument("--api-key", default="", help=e["api_key"])
    g.add_argument("--concurrency", type=int, default=de.concurrency, help=e["concurrency"])
    g.add_argument("--temperature", type=float, help=e["temperature"] + _BY_SET)
    g.add_argument("--answer-tokens", type=int, help=e["answer_tokens"] + _BY_SET)
    g.add_argument("--timeout", type=float, default=de.timeout_s, help=e["timeout_s"])
    g.add_argument("--max-retries", type=int, default=de.max_retries, help=e["max_retries"])
    g.add_argument("--backoff", type=float, default=de.backoff_s, help=e["backoff_s"])
    g.add_argument("--price-in", type=float, default=de.price_in, help=e["price_in"])
    g.add_argument("--price-out", type=float, default=de.price_out, help=e["price_out"])
    g.add_argument(
        "--dry-run", action="store_true", help="print requests, tokens and cost; send nothing"
    )
    g.add_argument("--json", action="store_true", help="print the estimate or the result as JSON")
    p.set_defaults(func=_synth)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """The SynthConfig a `longctx synth` command line describes (paths given are allowed)."""
    workspace.allow_given(args.source)  # a path given on the command line may be read
    # Settings left out take the prompt set's values (the paper's: temperature 0, 4 or 10 Q&A,
    # 4,096 answer tokens).
    given = {
        "temperature": args.temperature,
        "qa_per_chunk": args.qa_per_chunk,
        "multi_mode": args.multi_mode,
        "answer_tokens": args.answer_tokens,
    }
    suggested = SynthConfig.suggested(args.prompt_set, args.task)
    chosen = {k: suggested[k] if v is None else v for k, v in given.items()}
    overrides = {}
    for item in args.prompt:
        name, sep, file = item.partition("=")
        if not sep:
            raise ConfigError(f"--prompt takes NAME=FILE, got {item!r}")
        try:
            overrides[name.strip()] = Path(file).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--prompt {name}: cannot read {file!r} ({exc.strerror})") from None
    endpoint = EndpointConfig(
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        max_retries=args.max_retries,
        backoff_s=args.backoff,
        max_backoff_s=max(EndpointConfig.max_backoff_s, args.backoff),
        temperature=chosen["temperature"],
        answer_tokens=chosen["answer_tokens"],
        price_in=args.price_in,
        price_out=args.price_out,
    )
    return SynthConfig(
        task=args.task,
        prompt_set=args.prompt_set,
        source=str(Path(args.source).expanduser().resolve()) if args.source != BUILTIN else BUILTIN,
        n_docs=args.n_docs,
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
        chunk_tokens=args.chunk_tokens,
        qa_per_chunk=chosen["qa_per_chunk"],
        chunks_per_doc=args.chunks_per_doc,
        multi_mode=chosen["multi_mode"],
        passages=args.passages,
        multi_requests=args.multi_requests,
        characters=args.characters,
        clusters=args.clusters,
        min_support=args.min_support,
        drop_unsupported=args.drop_unsupported,
        tokenizer=args.tokenizer,
        seed=args.seed,
        out=str(Path(args.out).expanduser().resolve()) if args.out else "",
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        prompts=overrides,
        endpoint=endpoint,
    )


def _synth(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    job = SynthJob(config)
    if args.dry_run:
        return _dry_run(job, args.json)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = job.run(progress=_progress_printer(job), cancel=stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps(_result_dict(result), indent=1, default=str))
    else:
        print(_result_text(result, config))
    return 130 if result.cancelled else 0


def _dry_run(job: SynthJob, as_json: bool) -> int:
    est = job.estimate()
    ep = job.config.endpoint
    if as_json:
        data = {k: v for k, v in est.__dict__.items() if k != "requests"}
        data["requests"] = [r.__dict__ for r in est.requests]
        print(json.dumps(data, indent=1, ensure_ascii=False))
        return 0
    for r in est.requests[:_SHOWN_REQUESTS]:
        print(
            f"{r.label:<40} {r.prompt_tokens:>8,} prompt tokens{'  (cached)' if r.cached else ''}"
        )
    if len(est.requests) > _SHOWN_REQUESTS:
        print(f"... and {len(est.requests) - _SHOWN_REQUESTS} more requests")
    if est.example:
        print("-" * 60 + "\nfirst request:")
        for m in est.example:
            text = m["content"]
            if len(text) > 1200:
                text = f"{text[:600]}\n[... {len(text) - 1200:,} characters ...]\n{text[-600:]}"
            print(f"[{m['role']}]\n{text}")
        print("-" * 60)
    print(est.summary(ep.price_in, ep.price_out))
    print("dry run: nothing was sent")
    return 0


def _progress_printer(job: SynthJob) -> Any:
    tty = sys.stderr.isatty()
    shown = {"at": -1}

    def show(done: int, total: int) -> None:
        status = job.status()
        step = max(1, total // 20)
        if not tty and done < total and done // step == shown["at"]:
            return  # a log file gets ~20 lines, a terminal a live line
        shown["at"] = done // step
        line = (
            f"requests {done}/{total}  sent {status.usage.sent}  cached {status.usage.cached}  "
            f"failed {status.failures}  samples {status.samples}  ${status.cost_usd:.4f}"
        )
        print(("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return show


def _result_dict(result: Any) -> dict[str, Any]:
    data = dict(result.__dict__)
    data.pop("samples")
    data["samples"] = len(result.samples)
    data["usage"] = result.usage.__dict__
    return data


def _result_text(result: Any, config: SynthConfig) -> str:
    u = result.usage
    lines = [
        "",
        f"wrote {len(result.samples)} samples ({result.contexts} contexts) to {result.output}"
        + (" (stopped: run the same command again to resume)" if result.cancelled else ""),
        f"requests: {u.sent} sent, {u.cached} from the cache, {u.retries} retries, "
        f"{len(result.failures)} failed"
        + (f" (see {result.failures_path})" if result.failures else ""),
        f"tokens sent: {u.prompt_tokens:,} prompt + {u.completion_tokens:,} completion; "
        f"cost ${result.cost_usd:.4f} (cache saved ${result.saved_usd:.4f})",
        f"checks: {result.flagged} answers flagged as unsupported"
        + (" (dropped)" if config.drop_unsupported else "")
        + f", {result.duplicates} duplicate questions dropped",
    ]
    for reason in result.skipped[:5]:
        lines.append(f"no sample: {reason}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Procedural data.


# SynthConfig fields spelled as `--name-with-dashes`, and EndpointConfig fields by their flag.
_SYNTH_FLAGS = (
    "prompt_set",
    "source",
    "n_docs",
    "min_tokens",
    "max_tokens",
    "chunk_tokens",
    "qa_per_chunk",
    "chunks_per_doc",
    "multi_mode",
    "passages",
    "multi_requests",
    "characters",
    "clusters",
    "min_support",
    "tokenizer",
    "seed",
    "out",
    "cache_dir",
)
_ENDPOINT_FLAGS = {
    "base_url": "--base-url",
    "model": "--model",
    "concurrency": "--concurrency",
    "temperature": "--temperature",
    "answer_tokens": "--answer-tokens",
    "timeout_s": "--timeout",
    "max_retries": "--max-retries",
    "backoff_s": "--backoff",
    "price_in": "--price-in",
    "price_out": "--price-out",
}


def _arg(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def command_for(config: SynthConfig) -> list[str]:
    """The `longctx synth` command line that runs `config` (what the Generate tab shows).

    Only settings that differ from the defaults are spelled out. The API key never is: the
    command reads $OPENAI_API_KEY. Edited prompts are marked, since the command takes them from
    files (`--prompt NAME=FILE`).
    """
    default, default_ep = SynthConfig(), EndpointConfig()
    # Compared with what the prompt set fills in, so that the command replays the same run.
    suggested = SynthConfig.suggested(config.prompt_set, config.task)
    argv = ["longctx", "synth", config.task]
    for name in _SYNTH_FLAGS:
        value = getattr(config, name)
        if value not in ("", None) and value != suggested.get(name, getattr(default, name)):
            argv += ["--" + name.replace("_", "-"), _arg(value)]
    argv += ["--drop-unsupported"] if config.drop_unsupported else []
    argv += ["--no-cache"] if not config.use_cache else []
    for name, flag in _ENDPOINT_FLAGS.items():
        value = getattr(config.endpoint, name)
        if value != suggested.get(name, getattr(default_ep, name)) or name in ("base_url", "model"):
            argv += [flag, _arg(value)]
    for name in sorted(config.prompts or {}):
        argv += ["--prompt", f"{name}=FILE"]
    return argv


def make_command_for(
    task: str,
    n: int,
    length: int,
    tokenizer_name: str,
    seed: int,
    depths: list[float] | None,
    n_topics: int,
    out: Any = None,
    source: str = sources.BUILTIN,
) -> list[str]:
    """The `longctx data make` command line for a procedural or text set (same arguments as
    `core.synth.jobs.start_procedural`)."""
    argv = [
        "longctx",
        "data",
        "make",
        task,
        "--n",
        str(n),
        "--length",
        str(length),
        "--model",
        tokenizer_name or "embedded",
        "--seed",
        str(seed),
    ]
    if task == text.TASK:
        return argv + ["--source", source] + (["--out", str(out)] if out else [])
    if depths:
        argv += ["--depths", *(_arg(float(d)) for d in depths)]
    if task == "topics":
        argv += ["--topics", str(n_topics)]
    return argv + (["--out", str(out)] if out else [])


def add_make_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add a `make` command to any sub-command group (`longctx make`, or `longctx data make`)."""
    p = subparsers.add_parser(
        "make",
        help="make procedural samples with exact answers (passkey, keys, topics), or plain-text "
        "samples cut from documents (text); no API",
        description="Samples sized in tokens of --model's tokenizer and chat template, with the "
        "evidence at the depths you choose; or (text) stretches of long documents, trained on "
        "every token like the paper's RedPajama part. Same seed, same samples.",
    )
    p.add_argument("task", choices=(*procedural.TASKS, text.TASK))
    p.add_argument("--n", type=int, default=100, help="number of samples")
    p.add_argument("--length", type=int, default=4096, help="tokens per sample (template included)")
    p.add_argument("--model", default="embedded", help="whose tokenizer and chat template count")
    p.add_argument(
        "--out", default="", help="output JSONL (default: datasets/<task>-<length>.jsonl)"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--depth", type=float, help="evidence depth in %% (0: start, 100: end)")
    where.add_argument(
        "--depths", type=float, nargs="+", help="depths in %% cycled through the samples"
    )
    p.add_argument("--topics", type=int, default=5, help="topics per conversation (topics task)")
    p.add_argument(
        "--source",
        default=sources.BUILTIN,
        help="text task: 'builtin', a folder of documents (.txt .md .pdf .epub .html) or a .jsonl",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make)
    return p


def _make(args: argparse.Namespace) -> int:
    from core.data import io
    from core.models.tokenizers import load_tokenizer

    depths = [args.depth] if args.depth is not None else args.depths
    if args.task == text.TASK and depths:
        raise ConfigError("text samples have no evidence to place: drop --depth/--depths")
    if depths and args.task == "topics":
        raise ConfigError(
            "topics always asks for the first topic; move it deeper with --topics N or --length"
        )
    default = workspace.subdir("datasets") / f"{args.task}-{args.length}.jsonl"
    out = Path(args.out).expanduser() if args.out else default
    tokenizer = load_tokenizer(args.model)
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if tty:
            print(f"\rmaking {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    if args.task == text.TASK:
        source = workspace.allow_given(args.source)
        unreadable: list[str] = []
        samples = text.text_samples(
            source,
            args.n,
            args.length,
            tokenizer,
            seed=args.seed,
            progress=show,
            unreadable=unreadable,
        )
        for reason in unreadable:
            print(f"left out: {reason}", file=sys.stderr)
        if len(samples) < args.n:
            print(
                f"the source has {len(samples)} stretches of {args.length // 2:,}..{args.length:,} "
                f"tokens, not {args.n}",
                file=sys.stderr,
            )
    else:
        samples = procedural.make(
            args.task,
            args.n,
            args.length,
            tokenizer,
            seed=args.seed,
            depths=depths,
            n_topics=args.topics,
            progress=show,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = io.write_jsonl(out, samples)
    lengths = [s["length"] for s in samples]
    print(
        f"wrote {saved.rows} {args.task} samples of {min(lengths):,}..{max(lengths):,} tokens "
        f"to {out}"
    )
    return 0
