"""Synthetic training data: the paper's LLM-written tasks and procedural tasks with exact answers.

- `config`: `SynthConfig` (+ `client.EndpointConfig`), the typed settings of a generation run.
- `engine`: `SynthJob` — `estimate()` (dry run), `run()` (progress, cancel, live samples),
  `status()`; plain result records.
- `tasks`: the three tasks (single-detail QA, multi-detail QA, biography): requests and samples.
- `sources`: documents (folder, .jsonl, built-in corpus), token-sized contexts, chunks, clusters.
- `client`: the OpenAI-compatible generator client (retries, re-asks, usage); `cache`: replies
  on disk; `parsing`: lenient JSON; `checks`: support and duplicates; `prompts`: editable prompts.
- `procedural`: passkey, multi-key and topic tasks that need no API.
- `cli`: `longctx synth` and `longctx make`.

Nothing here imports gradio; the Generate tab calls `config` and `engine`.
"""
