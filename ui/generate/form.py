"""Generate tab, part 2: the settings form — source, contexts, generator, prompts, procedural sets.

Each sub-builder lays out one group and returns its components by name (SynthConfig and
EndpointConfig field names where there is one); ui/generate/values.py turns the widget values
into what `core.synth` takes. Validation is the engine's (`SynthConfig.validate`).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from core.configs import field_help
from core.serve import local
from core.synth import procedural, prompts, sources, text
from core.synth.client import EndpointConfig
from core.synth.config import SynthConfig
from core.synth.tasks import MULTI_MODES, TASKS

HELP, EP_HELP = field_help(SynthConfig), field_help(EndpointConfig)
EMBEDDED, CUSTOM = "embedded", "custom"
# Settings that only some tasks use; the others are hidden when another task is picked.
NO_API = (*procedural.TASKS, text.TASK)
"""Tasks made on this machine (`core.synth.jobs.start_procedural`), not asked of a model."""
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
    return gr.Number(
        getattr(d, name), label=label, info=helps.get(name), elem_id=f"gen-{name}", **kw
    )


def _source() -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Source documents", open=True):
        with gr.Row():
            c["source_kind"] = gr.Radio(
                [
                    ("Built-in demo corpus (Python docs)", sources.BUILTIN),
                    ("A folder or file", "folder"),
                ],
                value=sources.BUILTIN,
                show_label=False,
                scale=3,
                elem_id="gen-source-kind",
            )
            c["check"] = gr.Button("Count documents", scale=1, size="sm", elem_id="gen-check")
        c["source_path"] = gr.Textbox(
            label="Folder or file",
            visible=False,
            elem_id="gen-source",
            placeholder="documents (.txt .md .pdf .epub .html) or a .jsonl; relative to the "
            "workspace; others must be allowed with --allow",
        )
        c["source_info"] = gr.Markdown(
            "Press *Count documents* to see how many documents the "
            "source has and how long they are.",
            elem_id="gen-source-info",
            elem_classes="preset-note",
        )
    return c


PROMPT_SETS = [
    ("Studio: questions on chosen passages", "studio"),
    ("Paper: the paper's requests (whole context, temperature 0)", "paper"),
]
TRAINING_NOTE = (
    "A sample longer than the training **max length** is dropped at training, so keep *Max "
    "context tokens* below it with room for the questions and answers: the defaults fit the "
    "embedded model's 8K (6K contexts), and the paper's files hold 64K-class contexts for its "
    "80K max length (about 80%)."
)


def _contexts(d: SynthConfig) -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Contexts and questions", open=True):
        c["prompt_set"] = gr.Radio(
            PROMPT_SETS,
            value=d.prompt_set,
            label="Prompt set",
            info=HELP["prompt_set"],
            elem_id="gen-prompt_set",
        )
        gr.Markdown(TRAINING_NOTE, elem_classes="preset-note", elem_id="gen-length-note")
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
            c["multi_mode"] = gr.Dropdown(
                list(MULTI_MODES),
                value=d.multi_mode,
                label="Mode",
                info=HELP["multi_mode"],
                elem_id="gen-multi_mode",
            )
            c["passages"] = _num("passages", d, "Passages per question", precision=0)
            c["multi_requests"] = _num("multi_requests", d, "Requests per context", precision=0)
            c["clusters"] = _num("clusters", d, "Clusters", precision=0)
        with gr.Row():
            c["min_support"] = _num("min_support", d, "Min support", minimum=0, maximum=1)
            c["drop_unsupported"] = gr.Checkbox(
                d.drop_unsupported, label="Drop flagged answers", info=HELP["drop_unsupported"]
            )
            c["use_cache"] = gr.Checkbox(
                d.use_cache, label="Use the reply cache", info=HELP["use_cache"]
            )
    return c


def _endpoint(e: EndpointConfig) -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Generator", open=True):
        c["endpoint_kind"] = gr.Radio(
            [
                ("Embedded model via a local server", EMBEDDED),
                ("OpenAI-compatible endpoint", CUSTOM),
            ],
            value=EMBEDDED,
            show_label=False,
            elem_id="gen-endpoint-kind",
        )
        with gr.Row():
            c["base_url"] = gr.Textbox(
                local.embedded_url() or "",
                label="Base URL",
                placeholder="starts on the first run",
                interactive=False,
                info=EP_HELP["base_url"],
                elem_id="gen-base_url",
            )
            c["model"] = gr.Textbox(
                EMBEDDED,
                label="Model",
                interactive=False,
                info=EP_HELP["model"],
                elem_id="gen-model",
            )
        c["api_key"] = gr.Textbox(
            label="API key",
            type="password",
            visible=False,
            placeholder="empty: $OPENAI_API_KEY",
            info=EP_HELP["api_key"],
        )
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
        gr.Markdown(
            "What the generator is asked. `{placeholders}` are filled in per request and "
            "must stay; edited prompts make new requests (not served from the cache).",
            elem_classes="preset-note",
        )
        for name, text in prompts.DEFAULTS.items():
            c[f"prompt:{name}"] = gr.Textbox(
                text,
                label=name.replace("_", " ").capitalize(),
                lines=2,
                max_lines=14,
                elem_id=f"gen-prompt-{name}",
            )
        c["reset_prompts"] = gr.Button("Reset prompts", size="sm")
    return c


def _procedural() -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Procedural set", open=True):
        with gr.Row():
            c["n"] = gr.Number(20, label="Samples", precision=0, minimum=1, elem_id="gen-n")
            c["length"] = gr.Number(
                4096,
                label="Tokens per sample",
                precision=0,
                minimum=32,
                info="chat template included (text: the text alone)",
                elem_id="gen-length",
            )
            c["depths"] = gr.Textbox(
                label="Depths (%)",
                placeholder="e.g. 0 25 50 75 100",
                info="cycled through the samples; empty: random",
                elem_id="gen-depths",
            )
            c["n_topics"] = gr.Number(
                5,
                label="Topics per conversation",
                precision=0,
                minimum=1,
                visible=False,
                elem_id="gen-n_topics",
            )
    return c


def _output(d: SynthConfig) -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Accordion("Output", open=True):
        with gr.Row():
            c["tokenizer"] = gr.Textbox(
                d.tokenizer, label="Tokenizer", info=HELP["tokenizer"], elem_id="gen-tokenizer"
            )
            c["seed"] = gr.Number(d.seed, label="Seed", precision=0, info=HELP["seed"])
            c["out"] = gr.Textbox(
                label="Output file",
                elem_id="gen-out",
                info="under workspace/datasets; empty: synth-<task>.jsonl, or "
                "<task>-<length>.jsonl for a procedural set",
            )
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


INPUTS = (
    "source_kind",
    "source_path",
    "prompt_set",
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
    "endpoint_kind",
    "base_url",
    "model",
    "api_key",
    "concurrency",
    "temperature",
    "answer_tokens",
    "price_in",
    "price_out",
    *(f"prompt:{n}" for n in prompts.DEFAULTS),
    "n",
    "length",
    "depths",
    "n_topics",
    "tokenizer",
    "seed",
    "out",
)
"""The value-carrying components, in the order callbacks receive them."""


def visibility(task: str) -> list[Any]:
    """Updates for (source box, LLM box, procedural box, *ONLY_FOR) when `task` is picked."""
    llm = task in TASKS
    return [
        gr.update(visible=llm or task == text.TASK),
        gr.update(visible=llm),
        gr.update(visible=not llm),
        *(gr.update(visible=task in tasks) for tasks in ONLY_FOR.values()),
    ]


def prompt_set_settings(prompt_set: str, task: str, *, on_task_change: bool = False) -> list[Any]:
    """Updates for (temperature, Q&A per request, multi mode, answer tokens): what the prompt
    set starts from.

    A change of task re-fills them only under the paper set (its question count is per task);
    under the studio set the user's own values stay.
    """
    if on_task_change and prompt_set != "paper":
        return [gr.skip()] * 4
    s = SynthConfig.suggested(prompt_set, task)
    return [
        gr.update(value=s[k])
        for k in ("temperature", "qa_per_chunk", "multi_mode", "answer_tokens")
    ]


def endpoint_kind(kind: str) -> list[Any]:
    """Updates for (base URL, model, API key) when the generator kind changes."""
    if kind == EMBEDDED:
        return [
            gr.update(value=local.embedded_url() or "", interactive=False),
            gr.update(value=EMBEDDED, interactive=False),
            gr.update(visible=False),
        ]
    return [
        gr.update(value="", interactive=True, placeholder="https://api.openai.com/v1"),
        gr.update(value="", interactive=True, placeholder="gpt-4o"),
        gr.update(visible=True),
    ]
