"""Chat with a local model or an OpenAI-compatible endpoint, over an attached long document.

Turns a conversation (system prompt, history, new message, optional document) into the message
list a model sees, counts its tokens against the model's window, and streams the reply as
`core.models.generation.Chunk`s whichever side answers. The document goes into the first user turn,
ahead of the question, the same layout as the paper's training samples.

Knows nothing about gradio: the Chat tab keeps the history and calls these functions.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core import threads
from core.errors import ConfigError, LongCtxError
from core.models import loader, tokenizers
from core.models.generation import Chunk, SamplingParams, count_prompt_tokens, stream_chat
from core.models.openai_compat import create_chat_completion
from core.text import documents

LOCAL, ENDPOINT = "local", "endpoint"
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024  # ~5M tokens: far past any window, still bounded


@dataclass
class ChatTarget:
    """Who answers: a local model (`spec`) or an OpenAI-compatible endpoint."""

    kind: str = LOCAL
    spec: loader.ModelSpec = field(default_factory=loader.ModelSpec)
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    endpoint_model: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in (LOCAL, ENDPOINT):
            problems.append(f"chat target must be {LOCAL!r} or {ENDPOINT!r}, got {self.kind!r}")
        if self.kind == ENDPOINT:
            if not self.base_url.strip().startswith(("http://", "https://")):
                problems.append("endpoint base URL must start with http:// or https://")
            if not self.endpoint_model.strip():
                problems.append("name the endpoint's model (as listed by its /v1/models)")
        if problems:
            raise ConfigError(problems)

    @property
    def label(self) -> str:
        if self.kind == ENDPOINT:
            return f"{self.endpoint_model} @ {self.base_url}"
        return self.spec.label


def build_messages(
    message: str,
    history: list[dict[str, str]] | None = None,
    system: str = "",
    document: str = "",
) -> list[dict[str, str]]:
    """The message list sent to the model.

    Args:
        message: the new user message (may be empty when only the history is re-sent).
        history: earlier turns, alternating user/assistant, without the document.
        system: optional system prompt.
        document: optional long text placed before the first user message.
    """
    turns = [{"role": t["role"], "content": _text(t["content"])} for t in history or []]
    if message.strip():
        turns.append({"role": "user", "content": message})
    if not turns or turns[0]["role"] != "user":
        raise LongCtxError("write a message first")
    if document.strip():
        turns[0] = {"role": "user", "content": f"{document.strip()}\n\n{turns[0]['content']}"}
    return ([{"role": "system", "content": system}] if system.strip() else []) + turns


def as_sample(
    history: list[dict[str, Any]],
    system: str = "",
    document: str = "",
    model: str = "",
) -> dict[str, Any]:
    """A conversation as a training sample in the paper's format: the document before the first
    question, then every question with its answer (a question left without one, stopped or
    failed, is left out, so the turns alternate as training expects).

    Raises:
        LongCtxError: there is no answer yet.
    """
    history = list(history or [])
    turns = []
    for turn, reply in zip(history, history[1:] + [None], strict=True):
        answered = reply is not None and reply["role"] == "assistant"
        if turn["role"] == "user" and answered and _text(reply["content"]).strip():
            turns += [turn, reply]
    if not turns:
        raise LongCtxError("there is no answer to keep yet: send a message first")
    record: dict[str, Any] = {"conversations": build_messages("", turns, system, document)}
    record.update({"source": "chat", "model": model} if model else {"source": "chat"})
    return record


def pending_messages(
    message: str,
    history: list[dict[str, str]] | None = None,
    system: str = "",
    document: str = "",
) -> list[dict[str, str]]:
    """What Send would put before the model now, for the context budget: the conversation so far
    plus the message being typed. Before anything is written that is one empty user turn (with
    the document, if any), so the template's own tokens are counted too."""
    if message.strip() or history:
        return build_messages(message, history, system, document)
    return build_messages(" ", [{"role": "user", "content": ""}], system, document)


def _text(content: Any) -> str:
    """Chat UIs store a message as a string or as a list of parts; keep the text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    return str(content or "")


def read_document(
    path: str | Path, max_bytes: int = MAX_DOCUMENT_BYTES, progress: Any = None
) -> str:
    """An uploaded document as text (`core.text.documents`: text, Markdown, PDF, EPUB, HTML);
    `progress(done, total)` follows the pages or chapters of a book.

    Raises:
        LongCtxError: another file type, more than `max_bytes` of text, or no text to read.
    """
    return documents.read_text(path, max_bytes=max_bytes, progress=progress)


# ---------------------------------------------------------------------------------------------
# Context budget.


@dataclass
class Budget:
    """How the prompt compares with the model's window."""

    prompt_tokens: int
    window: int | None
    reserved: int
    """Tokens kept free for the answer (max_tokens)."""
    exact: bool
    """False when counted with an approximation (an endpoint whose tokenizer is unknown)."""

    @property
    def over(self) -> bool:
        return self.window is not None and self.prompt_tokens + self.reserved > self.window

    @property
    def fraction(self) -> float:
        return (self.prompt_tokens / self.window) if self.window else 0.0

    def message(self) -> str:
        approx = "" if self.exact else "≈"
        if self.window is None:
            return f"{approx}{self.prompt_tokens:,} prompt tokens (window unknown)"
        text = f"{approx}{self.prompt_tokens:,} / {self.window:,} tokens"
        if self.prompt_tokens >= self.window:
            return text + (
                " — over the window: shorten the document (Trim its middle) or give the model "
                "a larger Window (tokens)"
            )
        if self.over:
            return text + f" — leaves fewer than {self.reserved} tokens for the answer"
        return text


@functools.lru_cache(maxsize=16)
def _window(spec_key: str) -> int:
    spec = loader.ModelSpec(**json.loads(spec_key))
    return int(loader.load_config(spec).config.max_position_embeddings)


_windows: dict[tuple[str, str, str], int | None] = {}


def endpoint_window(base_url: str, api_key: str, model: str) -> int | None:
    """The endpoint's context length when its /v1/models says (vLLM: `max_model_len`).

    An answer is remembered for the life of the process; a failure is not (the endpoint may
    just not be up yet), so the next call asks again.
    """
    key = (base_url, api_key, model)
    if key not in _windows:
        try:
            entries = _client(base_url, api_key).models.list().data
        except Exception:  # an unreachable endpoint shows up when the user sends; no window here
            return None
        _windows[key] = next((_reported_window(e) for e in entries if e.id == model), None)
    return _windows[key]


def _reported_window(entry: Any) -> int | None:
    extra = entry.model_extra or {}
    value = extra.get("max_model_len") or extra.get("context_length")
    return int(value) if value else None


def budget(
    target: ChatTarget, messages: list[dict[str, str]], max_tokens: int, window: int | None = None
) -> Budget:
    """Count the prompt tokens of `messages` for `target` and compare with its window."""
    if target.kind == LOCAL:
        tokenizer = tokenizers.cached_tokenizer(target.spec.adapter or target.spec.name)
        return Budget(
            prompt_tokens=count_prompt_tokens(tokenizer, messages),
            window=window or _window(target.spec.key()),
            reserved=max_tokens,
            exact=True,
        )
    # The endpoint's tokenizer is unknown here: ~4 characters per token for English text.
    chars = sum(len(m["content"]) for m in messages) + 8 * len(messages)
    return Budget(chars // 4, window, max_tokens, exact=False)


def fit_document(
    target: ChatTarget,
    message: str,
    history: list[dict[str, str]] | None,
    system: str,
    document: str,
    max_tokens: int,
    window: int | None = None,
) -> tuple[str, int]:
    """`document` cut in the middle so that what Send would send (`pending_messages`) plus
    `max_tokens` for the answer fits the target's window; the start and the end are kept, as
    training keeps them (`core.data.render`). Returns (document, tokens cut).

    Raises:
        LongCtxError: the window is unknown, or the conversation alone leaves no room.
    """

    def with_doc(doc: str) -> Budget:
        return budget(target, pending_messages(message, history, system, doc), max_tokens, window)

    doc = document.strip()
    full = with_doc(doc)
    if full.window is None:
        raise LongCtxError("the model's window is unknown: set it in Window (tokens) to trim")
    if not full.over:
        return document, 0
    excess = full.prompt_tokens + max_tokens - full.window
    if target.kind == LOCAL:
        tokenizer = tokenizers.cached_tokenizer(target.spec.adapter or target.spec.name)
        encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        decode = tokenizer.decode
    else:  # the budget's approximation: 4 characters a token
        encode = lambda s: [s[i : i + 4] for i in range(0, len(s), 4)]  # noqa: E731
        decode = "".join
    ids = encode(doc)
    for _ in range(4):  # the pieces re-tokenize a little differently at the cut: re-check
        keep = len(ids) - excess - 24  # the marker line's tokens, with room to spare
        if keep < 64:
            raise LongCtxError(
                "the conversation alone leaves no room for the document: clear it, lower Max "
                "new tokens (under Sampling) or give the model a larger Window (tokens)"
            )
        cut = len(ids) - keep
        head, tail = decode(ids[: keep // 2]), decode(ids[len(ids) - (keep - keep // 2) :])
        trimmed = f"{head}\n\n[… {cut:,} tokens cut from the middle …]\n\n{tail}"
        check = with_doc(trimmed)
        if not check.over:
            return trimmed, cut
        excess += check.prompt_tokens + max_tokens - check.window
    raise LongCtxError("the document could not be trimmed to fit; shorten it by hand")


# ---------------------------------------------------------------------------------------------
# Streaming replies.


@functools.lru_cache(maxsize=8)
def _client(base_url: str, api_key: str) -> Any:
    from openai import OpenAI

    # Local servers accept any key, the client insists on one.
    key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    return OpenAI(base_url=base_url.rstrip("/"), api_key=key, max_retries=1)


def stream_reply(
    target: ChatTarget,
    messages: list[dict[str, str]],
    params: SamplingParams,
    cancel: threading.Event | None = None,
) -> Iterator[Chunk]:
    """Stream the reply of `target` to `messages`; the last chunk has finish_reason and usage."""
    if target.kind == LOCAL:
        loaded = loader.default_cache.get(target.spec)
        # In the app: its share of the cores, which a training run may hold; busy meanwhile.
        with threads.computing():
            for chunk in stream_chat(loaded, messages, params, cancel):
                threads.tick()  # re-plans now and then: a training run may have ended
                yield chunk
        return
    yield from _stream_endpoint(target, messages, params, cancel)


def _stream_endpoint(
    target: ChatTarget,
    messages: list[dict[str, str]],
    params: SamplingParams,
    cancel: threading.Event | None,
) -> Iterator[Chunk]:
    import openai

    kwargs: dict[str, Any] = {
        "model": target.endpoint_model,
        "messages": messages,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if params.stop:
        kwargs["stop"] = params.stop
    if params.seed is not None:
        kwargs["seed"] = params.seed
    finish, usage, produced = None, None, 0
    try:
        stream = create_chat_completion(_client(target.base_url, target.api_key), **kwargs)
        with stream:
            for event in stream:
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                if event.usage is not None:
                    usage = event.usage
                for choice in event.choices:
                    if choice.delta and choice.delta.content:
                        produced += 1
                        yield Chunk(choice.delta.content)
                    finish = choice.finish_reason or finish
    except openai.APIStatusError as exc:
        raise LongCtxError(
            f"{target.label} answered {exc.status_code}: {_api_message(exc)}"
        ) from exc
    except openai.APIConnectionError as exc:
        raise LongCtxError(f"cannot reach {target.base_url}: {exc}") from exc
    yield Chunk(
        "",
        finish or "stop",
        usage.prompt_tokens if usage else 0,
        usage.completion_tokens if usage else produced,
    )


def coalesced(
    chunks: Iterator[Chunk], every: float = 0.1, clock: Callable[[], float] = time.monotonic
) -> Iterator[Chunk]:
    """`chunks` with the text of those that come within `every` seconds of the last one passed on
    merged into one; progress through the prompt and the last chunk pass on at once.

    A small model on a free core streams hundreds of tokens a second, two sides at once in the
    Chat tab; each piece passed on re-renders the whole conversation in the browser, which then
    falls behind and stops answering clicks (Stop among them). Ten updates a second read as live.
    """
    pending: list[str] = []
    last = clock()
    for chunk in chunks:
        if chunk.read is not None:
            yield chunk
            continue
        pending.append(chunk.text)
        now = clock()
        if chunk.finish_reason is not None or now - last >= every:
            yield replace(chunk, text="".join(pending))
            pending, last = [], now
    if pending:  # a stream that ended without a last chunk: nothing it sent is dropped
        yield Chunk("".join(pending))


def _api_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(exc)
