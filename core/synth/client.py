"""The generator client: chat requests to any OpenAI-compatible endpoint, cached, retried, counted.

One `Generator` serves a whole run from many threads. Each request is first looked up in the
reply cache (`core.synth.cache`), so nothing is paid for twice; otherwise it is sent with the
`openai` package, with the client's own retries off and ours on: 408/409/429, 5xx, timeouts and
lost connections are retried with exponential backoff (honouring `retry-after-ms` /
`Retry-After`), and a stop request (`cancel`) interrupts the waiting. 401/403/404 stop the run:
every other request would fail the same way. An answer that cannot be read is re-asked once
with a stricter instruction. Token usage is counted for the cost shown before and during a run.

The API key comes from the config or `$OPENAI_API_KEY`; it is held in memory only.
This module knows nothing about documents, tasks or the training format.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from core.errors import LongCtxError
from core.models.openai_compat import create_chat_completion
from core.synth.cache import ReplyCache, request_key

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRY_STATUS = (408, 409, 429)
_FATAL_STATUS = (401, 403, 404)


@dataclass
class EndpointConfig:
    """Where the generator is and how to talk to it. Field docstrings are the help text."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """OpenAI-compatible API root: https://api.openai.com/v1, a vLLM server, `longctx serve`."""
    model: str = "embedded"
    """Model name the endpoint knows (gpt-4o, the served name of a vLLM model, ...)."""
    api_key: str = field(default="", repr=False)
    """API key; empty reads $OPENAI_API_KEY. Kept in memory, never written to disk."""
    concurrency: int = 4
    """Requests in flight at once."""
    timeout_s: float = 300.0
    """Seconds one request may take before it is retried."""
    max_retries: int = 4
    """Retries of one request after 429, 5xx, a timeout or a lost connection."""
    backoff_s: float = 2.0
    """First wait before a retry; doubles each time (with jitter) unless the server says."""
    max_backoff_s: float = 60.0
    """Longest wait between two attempts."""
    temperature: float = 0.7
    """Sampling temperature of the generator."""
    answer_tokens: int = 1024
    """Most tokens the generator may write per request (`max_tokens`)."""
    seed: int | None = None
    """Sent as `seed` when set (repeatable sampling where the endpoint supports it)."""
    price_in: float = 0.0
    """USD per million prompt tokens, for the cost estimate."""
    price_out: float = 0.0
    """USD per million completion tokens, for the cost estimate."""

    def problems(self) -> list[str]:
        """Every problem with these settings (empty when there is none)."""
        p = []
        parts = urlsplit(str(self.base_url or ""))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            p.append(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {self.base_url!r}"
            )
        if not str(self.model or "").strip():
            p.append("model is empty; give the name the endpoint serves (see its /v1/models)")
        if not isinstance(self.concurrency, int) or not 1 <= self.concurrency <= 256:
            p.append(f"concurrency must be 1..256, got {self.concurrency!r}")
        if not isinstance(self.max_retries, int) or not 0 <= self.max_retries <= 20:
            p.append(f"max_retries must be 0..20, got {self.max_retries!r}")
        if not self.timeout_s or self.timeout_s <= 0:
            p.append(f"timeout_s must be positive, got {self.timeout_s!r}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            p.append("backoff_s must be >= 0 and max_backoff_s at least backoff_s")
        if not 0 <= float(self.temperature) <= 2:
            p.append(f"temperature must be 0..2, got {self.temperature}")
        if not isinstance(self.answer_tokens, int) or self.answer_tokens < 1:
            p.append(f"answer_tokens must be a positive integer, got {self.answer_tokens!r}")
        if self.price_in < 0 or self.price_out < 0:
            p.append("prices must be 0 or more (USD per million tokens)")
        return p

    def params(self) -> dict[str, Any]:
        """The sampling parameters sent with every request (and part of its cache key)."""
        params: dict[str, Any] = {
            "temperature": float(self.temperature),
            "max_tokens": self.answer_tokens,
        }
        if self.seed is not None:
            params["seed"] = int(self.seed)
        return params

    def public_url(self) -> str:
        """The base URL without any user:password part (what metadata and logs show)."""
        parts = urlsplit(self.base_url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_in + completion_tokens * self.price_out) / 1e6


@dataclass
class Usage:
    """Requests and tokens of a run so far; a snapshot is a plain copy."""

    sent: int = 0
    """Requests answered by the endpoint (paid for)."""
    cached: int = 0
    """Requests answered from the cache (not paid again)."""
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0

    def copy(self) -> Usage:
        return Usage(**asdict(self))


@dataclass
class Reply:
    """One answer of the generator."""

    key: str
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    attempts: int = 1


class Cancelled(Exception):
    """The run was asked to stop before this request was sent."""


class RequestFailed(Exception):
    """A request gave no usable answer; `reason` says why, for the failure log."""

    def __init__(self, reason: str, attempts: int = 1, key: str = ""):
        super().__init__(reason)
        self.reason, self.attempts, self.key = reason, attempts, key


class FailureLog:
    """Failed requests, one JSON line each, appended as they happen (`failures.jsonl`)."""

    def __init__(self, path: Path | None = None):
        self.path, self.entries = path, []
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def add(self, **entry: Any) -> None:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry}
        with self._lock:
            self.entries.append(entry)
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(entry, ensure_ascii=False) + "\n")


class Generator:
    """Sends chat requests for a run: cache first, then the endpoint with retries.

    Example:
        gen = Generator(EndpointConfig(base_url=url, model="embedded"), cache=ReplyCache())
        reply = gen.complete([{"role": "user", "content": "Hi"}])
    """

    def __init__(
        self,
        endpoint: EndpointConfig,
        *,
        cache: ReplyCache | None = None,
        cancel: threading.Event | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ):
        self.endpoint, self.cache = endpoint, cache
        self.cancel = cancel or threading.Event()
        self.count_tokens = count_tokens
        self._usage = Usage()
        self._lock = threading.Lock()
        self._client: Any = None

    @property
    def usage(self) -> Usage:
        with self._lock:
            return self._usage.copy()

    def key(self, messages: list[dict[str, str]]) -> str:
        return request_key(self.endpoint.model, messages, self.endpoint.params())

    def is_cached(self, messages: list[dict[str, str]]) -> bool:
        return self.cache is not None and self.key(messages) in self.cache

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                key = self.endpoint.api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
                self._client = OpenAI(
                    base_url=self.endpoint.base_url.rstrip("/"),
                    api_key=key,
                    max_retries=0,  # ours: they count, log and stop on cancel
                    timeout=self.endpoint.timeout_s,
                )
            return self._client

    def complete(self, messages: list[dict[str, str]], label: str = "") -> Reply:
        """One answer, from the cache or the endpoint.

        Raises:
            Cancelled: the run was stopped before the request went out.
            RequestFailed: retries exhausted or a refusal that retrying cannot fix.
            LongCtxError: the endpoint refuses every request (bad key, unknown model).
        """
        key = self.key(messages)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            usage = hit.get("usage") or {}
            reply = Reply(
                key,
                hit["content"],
                hit.get("finish_reason"),
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
                cached=True,
            )
            with self._lock:
                self._usage.cached += 1
                self._usage.cached_prompt_tokens += reply.prompt_tokens
                self._usage.cached_completion_tokens += reply.completion_tokens
            return reply
        reply = self._send(key, messages, label)
        if self.cache is not None:
            self.cache.put(
                key,
                {
                    "model": self.endpoint.model,
                    "base_url": self.endpoint.public_url(),
                    "params": self.endpoint.params(),
                    "content": reply.content,
                    "finish_reason": reply.finish_reason,
                    "usage": {
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                    },
                    "created": int(time.time()),
                },
            )
        return reply

    def _send(self, key: str, messages: list[dict[str, str]], label: str) -> Reply:
        import openai

        ep = self.endpoint
        for attempt in range(1, ep.max_retries + 2):
            if self.cancel.is_set():
                raise Cancelled()
            try:
                response = create_chat_completion(
                    self._openai(), model=ep.model, messages=messages, **ep.params()
                )
            except openai.APIError as exc:
                retry, reason, wait = self._classify(exc)
                if not retry or attempt > ep.max_retries:
                    raise RequestFailed(reason, attempt, key) from None
                delay = wait if wait is not None else self._backoff(attempt)
                log.info("%s: %s; retry %d in %.1f s", label or key[:8], reason, attempt, delay)
                with self._lock:
                    self._usage.retries += 1
                if self.cancel.wait(delay):
                    raise Cancelled() from None
                continue
            return self._reply(key, messages, response, attempt)
        raise AssertionError("unreachable")

    def _reply(self, key: str, messages: list[dict], response: Any, attempts: int) -> Reply:
        choice = response.choices[0] if response.choices else None
        content = (choice.message.content or "") if choice is not None else ""
        usage = response.usage
        prompt = (
            usage.prompt_tokens if usage else self._count(" ".join(m["content"] for m in messages))
        )
        completion = usage.completion_tokens if usage else self._count(content)
        with self._lock:
            self._usage.sent += 1
            self._usage.prompt_tokens += prompt
            self._usage.completion_tokens += completion
        finish = choice.finish_reason if choice is not None else None
        return Reply(key, content, finish, prompt, completion, cached=False, attempts=attempts)

    def _count(self, text: str) -> int:
        return self.count_tokens(text) if self.count_tokens else 0

    def _classify(self, exc: Exception) -> tuple[bool, str, float | None]:
        """(retry?, reason for the log, seconds the server asked us to wait)."""
        import openai

        ep = self.endpoint
        if isinstance(exc, openai.APITimeoutError):
            return True, f"no answer within {ep.timeout_s:g} s", None
        if isinstance(exc, openai.APIConnectionError):
            return True, f"cannot reach {ep.public_url()}: {exc}", None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = f"HTTP {status}: {getattr(exc, 'message', exc)}"
            if status in _FATAL_STATUS:
                hint = {
                    401: "check the API key (--api-key or $OPENAI_API_KEY)",
                    403: "the key may not use this model",
                    404: f"check --base-url and that the endpoint serves {ep.model!r}",
                }[status]
                self.cancel.set()  # at once: no other thread may send the next request
                raise LongCtxError(f"the endpoint refused the request ({message}); {hint}")
            retry = status in _RETRY_STATUS or status >= 500
            return retry, message, self._retry_after(exc.response)
        return False, f"{type(exc).__name__}: {exc}", None

    def _retry_after(self, response: Any) -> float | None:
        headers = getattr(response, "headers", None) or {}
        for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
            try:
                value = float(headers.get(name)) * scale
            except (TypeError, ValueError):
                continue
            if 0 <= value <= self.endpoint.max_backoff_s:
                return value
        return None

    def _backoff(self, attempt: int) -> float:
        ep = self.endpoint
        return min(ep.max_backoff_s, ep.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def ask(
        self,
        messages: list[dict[str, str]],
        parse: Callable[[str], T],
        *,
        reask_suffix: str,
        label: str = "",
    ) -> tuple[T, list[Reply]]:
        """An answer read by `parse`; when it reads nothing, the request is re-asked once.

        The re-ask is the same conversation with `reask_suffix` added to the last message, so it
        has its own cache entry and a resumed run repeats neither.

        Raises:
            RequestFailed: neither answer could be read (the reason quotes the second one).
            Cancelled, LongCtxError: as `complete`.
        """
        first = self.complete(messages, label)
        value = parse(first.content)
        if value:
            return value, [first]
        last = messages[-1]
        again = [*messages[:-1], {**last, "content": last["content"] + reask_suffix}]
        second = self.complete(again, f"{label} (re-ask)")
        value = parse(second.content)
        if value:
            return value, [first, second]
        preview = " ".join(second.content.split())[:160]
        raise RequestFailed(
            f"unreadable answer, even after one re-ask (finish_reason {second.finish_reason}): "
            f"{preview!r}",
            first.attempts + second.attempts,
            second.key,
        )
