"""Generate tab, part 2: the settings form — source, contexts, generator, prompts, procedural sets.

Each sub-builder lays out one group and returns its components by name (SynthConfig and
EndpointConfig field names where there is one); `synth_config` and `procedural_args` turn the
widget values into what `core.synth` takes. Validation is the engine's (`SynthConfig.validate`).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import gradio as gr

from core.errors import LongCtxError
from core.synth import procedural, prompts, sources, text
from core.synth.client import EndpointConfig
from core.synth.config import SynthConfig, field_help
from core.synth.tasks import MULTI_MODES, TASKS
from ui import generate_jobs as jobs
from ui.data_common import writable_path

HELP, EP_HELP = field_help(SynthConfig), field_help(EndpointConfig)
EMBEDDED, CUSTOM = "embedded", "custom"
# Settings that only some tasks use; the others are hidden when another task is picked.
NO_API = (*procedural.TASKS, text.TASK)
"""Tasks made on this machine (`generate_jobs.start_procedural`), not asked of a model."""
ONLY_FOR = {
    "qa_per_chunk": {"single-detail", "multi-detail"},
    "chunks_per_doc": {"single-detail", "biography"},
    "multi_box": {"multi-detail"},
    "characters": {"biography"},
    "depths": {"passkey", "keys"},
    "n_topics": {"topics"},
}


def _num(name: str, d: SynthConfig | EndpointConfig, label: str, **kw: Any) -> gr.Number:
    helps = EP_HELP if isinstance(d, EndpointConfig) else HELP
    return gr.Number(getattr(d, name), label=label, info=helps.get(name), elem_id=f"gen-{name}",
                     **kw)  # fmt: skip


def _source() -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Source documents", open=True):
        with gr.Row():
            c["source_kind"] = gr.Radio([("Built-in demo corpus (Python docs)", sources.BUILTIN),
                                         ("A folder or file", "folder")], value=sources.BUILTIN,
                                        show_label=False, scale=3, elem_id="gen-source-kind")  # fmt: skip
            c["check"] = gr.Button("Count documents", scale=1, size="sm", elem_id="gen-check")
        c["source_path"] = gr.Textbox(label="Folder or file", visible=False, elem_id="gen-source",
                                      placeholder="documents (.txt .md .pdf .epub .html) or a .jsonl; relative to the "
                                      "workspace; others must be allowed with --allow")  # fmt: skip
        c["source_info"] = gr.Markdown("Press *Count documents* to see how many documents the "
                                       "source has and how long they are.",
                                       elem_id="gen-source-info", elem_classes="preset-note")  # fmt: skip
    return c


def _contexts(d: SynthConfig) -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Contexts and questions", open=True):
        with gr.Row():
            c["n_docs"] = _num("n_docs", d, "Samples", precision=0)
            c["min_tokens"] = _num("min_tokens", d, "Min context tokens", precision=0)
            c["max_tokens"] = _num("max_tokens", d, "Max context tokens", precision=0)
        with gr.Row():
            c["chunk_tokens"] = _num("chunk_tokens", d, "Chunk tokens", precision=0)
            c["qa_per_chunk"] = _num("qa_per_chunk", d, "Q&A per request", precision=0)
            c["chunks_per_doc"] = _num("chunks_per_doc", d, "Chunks per context", precision=0)
            c["characters"] = _num("characters", d, "Characters", precision=0, visible=False)
        with gr.Row(visible=False) as c["multi_box"]:
            c["multi_mode"] = gr.Dropdown(list(MULTI_MODES), value=d.multi_mode, label="Mode",
                                          info=HELP["multi_mode"], elem_id="gen-multi_mode")  # fmt: skip
            c["passages"] = _num("passages", d, "Passages per question", precision=0)
            c["multi_requests"] = _num("multi_requests", d, "Requests per context", precision=0)
            c["clusters"] = _num("clusters", d, "Clusters", precision=0)
        with gr.Row():
            c["min_support"] = _num("min_support", d, "Min support", minimum=0, maximum=1)
            c["drop_unsupported"] = gr.Checkbox(d.drop_unsupported, label="Drop flagged answers",
                                                info=HELP["drop_unsupported"])  # fmt: skip
            c["use_cache"] = gr.Checkbox(d.use_cache, label="Use the reply cache",
                                         info=HELP["use_cache"])  # fmt: skip
    return c


def _endpoint(e: EndpointConfig) -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Generator", open=True):
        c["endpoint_kind"] = gr.Radio([("Embedded model via a local server", EMBEDDED),
                                       ("OpenAI-compatible endpoint", CUSTOM)], value=EMBEDDED,
                                      show_label=False, elem_id="gen-endpoint-kind")  # fmt: skip
        with gr.Row():
            c["base_url"] = gr.Textbox(jobs.embedded_url() or "", label="Base URL",
                                       placeholder="starts on the first run", interactive=False,
                                       info=EP_HELP["base_url"], elem_id="gen-base_url")  # fmt: skip
            c["model"] = gr.Textbox(EMBEDDED, label="Model", interactive=False,
                                    info=EP_HELP["model"], elem_id="gen-model")  # fmt: skip
        c["api_key"] = gr.Textbox(label="API key", type="password", visible=False,
                                  placeholder="empty: $OPENAI_API_KEY", info=EP_HELP["api_key"])  # fmt: skip
        with gr.Row():
            c["concurrency"] = _num("concurrency", e, "Concurrency", precision=0)
            c["temperature"] = _num("temperature", e, "Temperature", minimum=0, maximum=2)
            c["answer_tokens"] = _num("answer_tokens", e, "Answer tokens", precision=0)
        with gr.Row():
            c["price_in"] = _num("price_in", e, "$ / 1M input tokens", minimum=0)
            c["price_out"] = _num("price_out", e, "$ / 1M output tokens", minimum=0)
    return c


def _prompts() -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Prompts", open=False):
        gr.Markdown("What the generator is asked. `{placeholders}` are filled in per request and "
                    "must stay; edited prompts make new requests (not served from the cache).",
                    elem_classes="preset-note")  # fmt: skip
        for name, text in prompts.DEFAULTS.items():
            c[f"prompt:{name}"] = gr.Textbox(text, label=name.replace("_", " ").capitalize(),
                                             lines=2, max_lines=14, elem_id=f"gen-prompt-{name}")  # fmt: skip
        c["reset_prompts"] = gr.Button("Reset prompts", size="sm")
    return c


def _procedural() -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Procedural set", open=True):
        with gr.Row():
            c["n"] = gr.Number(20, label="Samples", precision=0, minimum=1, elem_id="gen-n")
            c["length"] = gr.Number(4096, label="Tokens per sample", precision=0, minimum=32,
                                    info="chat template included (text: the text alone)", elem_id="gen-length")  # fmt: skip
            c["depths"] = gr.Textbox(label="Depths (%)", placeholder="e.g. 0 25 50 75 100",
                                     info="cycled through the samples; empty: random",
                                     elem_id="gen-depths")  # fmt: skip
            c["n_topics"] = gr.Number(5, label="Topics per conversation", precision=0, minimum=1,
                                      visible=False, elem_id="gen-n_topics")  # fmt: skip
    return c


def _output(d: SynthConfig) -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Output", open=True):
        with gr.Row():
            c["tokenizer"] = gr.Textbox(d.tokenizer, label="Tokenizer", info=HELP["tokenizer"],
                                        elem_id="gen-tokenizer")  # fmt: skip
            c["seed"] = gr.Number(d.seed, label="Seed", precision=0, info=HELP["seed"])
            c["out"] = gr.Textbox(label="Output file", elem_id="gen-out",
                                  info="under workspace/datasets; empty: synth-<task>.jsonl, or "
                                  "<task>-<length>.jsonl for a procedural set")  # fmt: skip
    return c


def build() -> tuple[list[gr.Column], dict[str, Any]]:
    """([source box, LLM settings box, procedural box], every component by name)."""
    d = SynthConfig()
    with gr.Column(visible=True) as source_box:
        c = _source()
    with gr.Column(visible=True) as llm_box:
        c.update({**_contexts(d), **_endpoint(d.endpoint), **_prompts()})
    with gr.Column(visible=False) as proc_box:
        c.update(_procedural())
    c.update(_output(d))
    return [source_box, llm_box, proc_box], c


INPUTS = ("source_kind", "source_path", "n_docs", "min_tokens", "max_tokens", "chunk_tokens",
          "qa_per_chunk", "chunks_per_doc", "characters", "multi_mode", "passages",
          "multi_requests", "clusters", "min_support", "drop_unsupported", "use_cache",
          "endpoint_kind", "base_url", "model", "api_key", "concurrency", "temperature",
          "answer_tokens", "price_in", "price_out",
          *(f"prompt:{n}" for n in prompts.DEFAULTS), "n", "length", "depths", "n_topics",
          "tokenizer", "seed", "out")  # fmt: skip
"""The value-carrying components, in the order callbacks receive them."""


def visibility(task: str) -> list[Any]:
    """Updates for (source box, LLM box, procedural box, *ONLY_FOR) when `task` is picked."""
    llm = task in TASKS
    return [gr.update(visible=llm or task == text.TASK), gr.update(visible=llm),
            gr.update(visible=not llm),
            *(gr.update(visible=task in tasks) for tasks in ONLY_FOR.values())]  # fmt: skip


def endpoint_kind(kind: str) -> list[Any]:
    """Updates for (base URL, model, API key) when the generator kind changes."""
    if kind == EMBEDDED:
        return [gr.update(value=jobs.embedded_url() or "", interactive=False),
                gr.update(value=EMBEDDED, interactive=False), gr.update(visible=False)]  # fmt: skip
    return [gr.update(value="", interactive=True, placeholder="https://api.openai.com/v1"),
            gr.update(value="", interactive=True, placeholder="gpt-4o"), gr.update(visible=True)]  # fmt: skip


def source(v: dict[str, Any]) -> str:
    return sources.BUILTIN if v["source_kind"] == sources.BUILTIN else (v["source_path"] or "")


def synth_config(task: str, v: dict[str, Any], *, serve: bool) -> SynthConfig:
    """The SynthConfig the form describes, validated; `serve` starts the embedded server."""
    base_url, model = v["base_url"], v["model"]
    if v["endpoint_kind"] == EMBEDDED:
        server = jobs.embedded_server() if serve else None
        base_url = server.base_url if server else jobs.embedded_url() or EndpointConfig.base_url
        model = EMBEDDED
    endpoint = EndpointConfig(
        base_url=(base_url or "").strip(), model=(model or "").strip(), api_key=v["api_key"] or "",
        concurrency=v["concurrency"], temperature=v["temperature"] or 0.0,
        answer_tokens=v["answer_tokens"], price_in=v["price_in"] or 0.0,
        price_out=v["price_out"] or 0.0,
    )  # fmt: skip
    edited = {n: v[f"prompt:{n}"] for n, text in prompts.DEFAULTS.items()
              if v[f"prompt:{n}"] != text}  # fmt: skip
    names = ("n_docs", "min_tokens", "max_tokens", "chunk_tokens", "qa_per_chunk",
             "chunks_per_doc", "characters", "multi_mode", "passages", "multi_requests",
             "clusters", "min_support", "drop_unsupported", "use_cache", "seed")  # fmt: skip
    return SynthConfig(
        task=task, source=source(v), tokenizer=(v["tokenizer"] or "").strip(), prompts=edited,
        out=str(output(v) or ""), endpoint=endpoint, **{n: v[n] for n in names},
    ).validate()  # fmt: skip


def output(v: dict[str, Any]) -> Path | None:
    """The file the user named, under workspace/datasets (None: the engine's default name)."""
    return writable_path(v["out"]) if (v["out"] or "").strip() else None


def procedural_args(v: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `generate_jobs.start_procedural` from the form."""
    if any(v[k] is None for k in ("n", "length", "n_topics", "seed")):
        raise LongCtxError("samples, tokens per sample, topics and seed each need a number")
    return {"n": v["n"], "length": v["length"], "tokenizer_name": (v["tokenizer"] or "").strip(),
            "seed": v["seed"], "depths": depths(v["depths"]), "n_topics": v["n_topics"],
            "out": output(v), "source": source(v)}  # fmt: skip


def depths(text: str | None) -> list[float] | None:
    try:
        values = [float(x) for x in (text or "").replace(",", " ").split()]
    except ValueError:
        raise LongCtxError(f"depths must be numbers from 0 to 100, got {text!r}") from None
    return values or None


def source_info(v: dict[str, Any], progress: Any = None) -> str:
    """How many documents the source has and how long they are, in the chosen tokenizer;
    `progress(done, total)` follows the files being read."""
    if not source(v).strip():
        return "Type a folder or a file (under the workspace, or allowed with --allow) and press Enter."
    unreadable: list[str] = []
    docs = sources.load_documents(source(v), unreadable, progress)
    count = sources.token_counter(jobs.tokenizer((v["tokenizer"] or "").strip()))
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
