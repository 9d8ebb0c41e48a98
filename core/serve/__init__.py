"""An OpenAI-compatible HTTP server (`/v1/chat/completions`, `/v1/models`) over one local model.

`longctx serve` (and `BackgroundServer`, which the app and the tests start on 127.0.0.1) put a
model loaded by `core.models` behind the subset of the OpenAI API that chat clients use: plain and
streamed (SSE) chat completions with true token usage, `stop`, `seed`, `max_tokens`, errors in
OpenAI's JSON shape with a 4xx status. Decoding is `core.models.generation.stream_chat`, run on a worker
thread per request; the model's own lock serializes requests, a bounded queue turns overload into
429s, and a client that goes away cancels its generation. With `fault_injection`, `/_faults` and
`/_stats` let tests script 429s, 5xx, broken JSON and delays to exercise OpenAI clients' retries.

This module knows nothing about gradio, datasets, training or what the clients do with answers;
it does not decode tokens itself and never loads more than the one model it was given.
"""
