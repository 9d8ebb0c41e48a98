"""Generate tab, part 3: the form's values -> what `core.synth` takes.

`synth_config` builds the validated `SynthConfig` of an LLM task, `procedural_args` the arguments
of a procedural or text set, and `source_info` counts the documents a source holds. The layout
is ui/generate/form.py; the values arrive as a dict keyed by its `INPUTS`.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from core.errors import LongCtxError
from core.models import tokenizers
from core.serve import local
from core.synth import prompts, sources
from core.synth.client import EndpointConfig
from core.synth.config import SynthConfig
from ui.data.common import writable_path
from ui.generate.form import EMBEDDED


def source(v: dict[str, Any]) -> str:
    return sources.BUILTIN if v["source_kind"] == sources.BUILTIN else (v["source_path"] or "")


def synth_config(task: str, v: dict[str, Any], *, serve: bool) -> SynthConfig:
    """The SynthConfig the form describes, validated; `serve` starts the embedded server."""
    base_url, model = v["base_url"], v["model"]
    if v["endpoint_kind"] == EMBEDDED:
        server = local.embedded_server() if serve else None
        base_url = server.base_url if server else local.embedded_url() or EndpointConfig.base_url
        model = EMBEDDED
    endpoint = EndpointConfig(
        base_url=(base_url or "").strip(),
        model=(model or "").strip(),
        api_key=v["api_key"] or "",
        concurrency=v["concurrency"],
        temperature=v["temperature"] or 0.0,
        answer_tokens=v["answer_tokens"],
        price_in=v["price_in"] or 0.0,
        price_out=v["price_out"] or 0.0,
    )
    edited = {
        n: v[f"prompt:{n}"] for n, text in prompts.DEFAULTS.items() if v[f"prompt:{n}"] != text
    }
    names = (
        "n_docs",
        "min_tokens",
        "max_tokens",
        "chunk_tokens",
        "qa_per_chunk",
        "chunks_per_doc",
        "characters",
        "multi_mode",
        "passages",
        "multi_requests",
        "clusters",
        "min_support",
        "drop_unsupported",
        "use_cache",
        "seed",
    )
    return SynthConfig(
        task=task,
        prompt_set=v["prompt_set"],
        source=source(v),
        tokenizer=(v["tokenizer"] or "").strip(),
        prompts=edited,
        out=str(output(v) or ""),
        endpoint=endpoint,
        **{n: v[n] for n in names},
    ).validate()


def output(v: dict[str, Any]) -> Path | None:
    """The file the user named, under workspace/datasets (None: the engine's default name)."""
    return writable_path(v["out"]) if (v["out"] or "").strip() else None


def procedural_args(v: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `core.synth.jobs.start_procedural` from the form."""
    if any(v[k] is None for k in ("n", "length", "n_topics", "seed")):
        raise LongCtxError("samples, tokens per sample, topics and seed each need a number")
    return {
        "n": v["n"],
        "length": v["length"],
        "tokenizer_name": (v["tokenizer"] or "").strip(),
        "seed": v["seed"],
        "depths": depths(v["depths"]),
        "n_topics": v["n_topics"],
        "out": output(v),
        "source": source(v),
    }


def depths(text: str | None) -> list[float] | None:
    problem = LongCtxError(f"depths must be numbers from 0 to 100, got {text!r}")
    try:
        values = [float(x) for x in (text or "").replace(",", " ").split()]
    except ValueError:
        raise problem from None
    if any(not 0 <= v <= 100 for v in values):
        raise problem
    return values or None


def source_info(v: dict[str, Any], progress: Any = None) -> str:
    """How many documents the source has and how long they are, in the chosen tokenizer;
    `progress(done, total)` follows the files being read."""
    if not source(v).strip():
        return "Type a folder or a file (under the workspace, or allowed with --allow) and press Enter."
    unreadable: list[str] = []
    docs = sources.load_documents(source(v), unreadable, progress)
    count = sources.token_counter(tokenizers.cached_tokenizer((v["tokenizer"] or "").strip()))
    sizes = [count(doc.text) for doc in docs]
    low, high = v["min_tokens"] or 0, v["max_tokens"] or 0
    fit = sum(s >= low for s in sizes)
    text = (
        f"**{len(docs)} documents**, {sum(sizes):,} tokens in all: {min(sizes):,} to "
        f"{max(sizes):,} each (median {statistics.median(sizes):,.0f}). {fit} reach the "
        f"{low:,}-token minimum"
    )
    text += f"; longer than {high:,} are cut into several contexts." if max(sizes) > high else "."
    if unreadable:
        more = "; …" if len(unreadable) > 3 else ""
        files = f"{len(unreadable)} file{'s' if len(unreadable) > 1 else ''}"
        text += f" **{files} left out:** {'; '.join(unreadable[:3])}{more}"
    return text
