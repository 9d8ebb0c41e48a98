"""What answers the evaluation prompts: a local model, or any OpenAI-compatible endpoint.

Both backends take prompts one at a time from an iterator and yield `(prompt, Reply)` as each
answer is complete, so cells can be recorded (and drawn) as they finish.

The local backend is built for grids whose prompts share long prefixes (a haystack up to the
needle, a conversation up to its last topic). It keeps one running KV cache: for the next prompt
it crops the cache back to the longest common token prefix with what the cache already holds and
feeds only the rest, so the tasks hand prompts over in an order where neighbours share the most
(NIAH: deepest needle first). Greedy decoding then verifies up to `lookup_tokens` tokens per
forward pass drafted from the prompt itself (prompt-lookup decoding: a retrieval answer mostly
copies the needle); a draft token is kept only where it equals the model's own argmax, so the
answer is the plain greedy answer. Where the model's cache cannot be cropped (sliding-window
layers), both tricks switch off and every prompt is computed from scratch.

This module knows nothing about haystacks, scoring or result folders.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.models.generation import cache_argument
from core.models.loader import LoadedModel, ModelSpec
from core.models.nll import token_nlls
from core.models.openai_compat import create_chat_completion


class Cancelled(LongCtxError):
    """The cancel event was set; the current prompt was abandoned."""

    def __init__(self) -> None:
        super().__init__("evaluation cancelled")


@dataclass
class Prompt:
    """One evaluation prompt, both as exact token ids and as chat messages."""

    key: str
    """Unique within an evaluation (`L2000-D50`); names the cell in cells.jsonl."""
    ids: list[int]
    """Token ids with the chat template applied, as the local backend feeds them."""
    messages: list[dict[str, str]]
    """The same prompt as OpenAI-style messages, for endpoints (they apply their own template)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Cell fields known before answering (length, depth, expected answer, ...)."""
    answer_prefix: str = ""
    """The start of the answer the model continues ("The pass key is"), already at the end of
    both: after the chat template's generation prompt in `ids`, and as a last assistant message
    in `messages` (sent with `continue_final_message`). Empty: the model starts the answer."""


def prefilled(
    tokenizer: Any, ids: list[int], messages: list[dict[str, str]], answer_prefix: str
) -> tuple[list[int], list[dict[str, str]]]:
    """`ids` and `messages` (ready for the assistant's turn) with the answer started by
    `answer_prefix`: its tokens after the generation prompt, and a last assistant message.

    Tokenized on its own, the prefix gives the tokens a chat template rendering the assistant
    message gives (`continue_final_message`), since the generation prompt ends a line.
    """
    if not answer_prefix:
        return ids, messages
    prefix_ids = tokenizer(answer_prefix, add_special_tokens=False)["input_ids"]
    return [*ids, *prefix_ids], [*messages, {"role": "assistant", "content": answer_prefix}]


def full_answer(answer_prefix: str, continuation: str) -> str:
    """The answer as the scorer reads it: the prefix, then what the model wrote after it.

    A space goes between only where both sides would otherwise glue two words together
    ("is" + "12345"); a continuation that starts with a space or punctuation is kept as is.
    """
    glue = " " if answer_prefix[-1:].isalnum() and continuation[:1].isalnum() else ""
    return f"{answer_prefix}{glue}{continuation}".strip()


@dataclass
class Reply:
    text: str
    """What the model wrote, spaces kept (it may continue an answer prefix: " 12345.")."""
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    reused_tokens: int = 0
    """Prompt tokens whose KV came from the cache instead of being computed (local only)."""


@dataclass
class Endpoint:
    """An OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp, `longctx serve`, OpenAI)."""

    base_url: str
    """Up to and including `/v1`, e.g. http://127.0.0.1:8000/v1."""
    model: str
    """The model name the server knows."""
    api_key: str | None = None
    """Sent as a bearer token; never written to disk. Falls back to $OPENAI_API_KEY."""

    def __post_init__(self) -> None:
        problems = []
        self.base_url = (self.base_url or "").strip().rstrip("/")
        self.model = (self.model or "").strip()
        if not self.base_url.startswith(("http://", "https://")):
            problems.append(
                f"endpoint URL must start with http:// or https://, got {self.base_url!r}"
            )
        if not self.model:
            problems.append("endpoint model name is empty; give the name the server serves")
        if problems:
            raise ConfigError(problems)

    def public(self) -> dict[str, Any]:
        """What may be saved: everything but the key."""
        return {"base_url": self.base_url, "model": self.model}

    def client(self, timeout: float = 600.0) -> Any:
        import os

        from openai import OpenAI

        key = self.api_key or os.environ.get("OPENAI_API_KEY") or "none"
        return OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=2)


@dataclass
class Target:
    """The model under evaluation: a local `ModelSpec`, or an endpoint plus a tokenizer."""

    model: ModelSpec | None = None
    """Load this model locally (base, base + adapter, RoPE override)."""
    endpoint: Endpoint | None = None
    """Or ask this endpoint."""
    tokenizer: str | None = None
    """Endpoint only: the model name whose tokenizer measures prompt lengths (a Hub id, a folder
    or `embedded`). Default: the endpoint's model name."""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelSpec(**self.model)
        if isinstance(self.endpoint, dict):
            self.endpoint = Endpoint(**self.endpoint)
        if (self.model is None) == (self.endpoint is None):
            raise ConfigError("give either a local model or an endpoint to evaluate, not both")

    @classmethod
    def saved(cls, public: dict[str, Any], api_key: str | None = None) -> Target:
        """The target a folder's config.json recorded (`public()`); keys are never saved, so
        an endpoint gets `api_key` again."""
        return cls(
            model=ModelSpec(**public["model"]) if public.get("model") else None,
            endpoint=Endpoint(**public["endpoint"], api_key=api_key)
            if public.get("endpoint")
            else None,
            tokenizer=public.get("tokenizer"),
        )

    @property
    def label(self) -> str:
        if self.endpoint is not None:
            return f"{self.endpoint.model} @ {self.endpoint.base_url}"
        assert self.model is not None
        return self.model.label

    @property
    def slug(self) -> str:
        """A few words for the evaluation's folder name: the model, the run or repo its adapter
        came from, the RoPE base; e.g. `embedded-cpu-keys-rope-1e6`."""
        if self.endpoint is not None:
            return self.endpoint.model
        assert self.model is not None
        words = [Path(self.model.name).name]
        if self.model.adapter:
            adapter = Path(self.model.adapter)
            # A run's adapter or merged model: name the run, without its date and time.
            run = re.sub(r"^\d{8}-\d{6}-", "", adapter.parent.name)
            words.append(run if adapter.name in ("adapter", "merged") and run else adapter.name)
        setting = self.model.rope_setting()
        if setting is not None and setting.method != "base":
            words.append(setting.method + (f"-x{setting.factor:g}" if setting.factor else ""))
        if setting is not None and setting.theta:
            # 1e+06 -> 1e6: in a slug the '+' would become '-' and read as 1e-06.
            words.append("rope-" + re.sub(r"e\+0*", "e", f"{setting.theta:g}"))
        return "-".join(words)

    def public(self) -> dict[str, Any]:
        from dataclasses import asdict

        model = asdict(self.model) if self.model else None
        if model is not None:
            # Only a setting that is there is recorded, so folders written before the field
            # existed still compare equal (and resume).
            rope = model.pop("rope", None)
            if rope is not None:
                model["rope"] = self.model.rope.to_dict()
        return {
            "model": model,
            "endpoint": self.endpoint.public() if self.endpoint else None,
            "tokenizer": self.tokenizer,
        }


def open_backend(target: Target, *, models: Any = None) -> LocalBackend | EndpointBackend:
    """Load (or reuse from `models`, a `core.models.loader.ModelCache`) what `target` names."""
    if target.endpoint is not None:
        from core.models.tokenizers import load_tokenizer

        name = target.tokenizer or target.endpoint.model
        try:
            tokenizer = load_tokenizer(name)
        except LongCtxError as exc:
            raise LongCtxError(
                f"cannot load a tokenizer for {name!r} to measure prompt lengths ({exc}); "
                "name one with --tokenizer (a Hub id, a folder, or 'embedded' for rough lengths)"
            ) from exc
        return EndpointBackend(target.endpoint, tokenizer)
    from core.models.loader import default_cache

    assert target.model is not None
    return LocalBackend((models or default_cache).get(target.model))


# ---------------------------------------------------------------------------------------------
# Local backend.


class LocalBackend:
    """Greedy answers from a loaded model, reusing the KV cache across prompts."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        reuse_prefix: bool = True,
        lookup_tokens: int = 32,
        prefill_chunk: int = 8192,
    ):
        """
        Args:
            loaded: the model.
            reuse_prefix: keep one KV cache across prompts and reuse common prefixes.
            lookup_tokens: most draft tokens verified per decoding step (0: one token a step).
            prefill_chunk: feed long prompts in pieces of this many tokens, bounding the
                activation memory of a forward pass at long context.
        """
        from core.models.generation import eos_ids

        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.reuse_prefix = reuse_prefix
        self.lookup_tokens = lookup_tokens
        self.prefill_chunk = prefill_chunk
        self.eos = eos_ids(loaded)
        self._cache: Any = None
        self._cached: list[int] = []  # the tokens whose KV the cache holds, in order
        self.stats = {"prompt_tokens": 0, "computed_tokens": 0, "forward_passes": 0}

    @property
    def window(self) -> int | None:
        return self.loaded.window or None

    @property
    def label(self) -> str:
        return self.loaded.label

    def answers(
        self,
        prompts: Iterable[Prompt],
        max_new_tokens: int,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[Prompt, Reply]]:
        """Answer each prompt greedily, in the given order.

        Raises:
            Cancelled: `cancel` was set; the prompt being answered is dropped.
        """
        try:
            for prompt in prompts:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                start = time.perf_counter()
                with self.loaded.lock:
                    out, reused = self._answer(prompt.ids, max_new_tokens, cancel)
                text = self.tokenizer.decode(out, skip_special_tokens=True)
                seconds = time.perf_counter() - start
                yield prompt, Reply(text, len(prompt.ids), len(out), seconds, reused)
        finally:
            # The cache of a long prompt can take gigabytes of GPU memory: free it for the chat
            # and the trainer as soon as the evaluation stops.
            self.reset()

    def losses(
        self, prompts: Iterable[Prompt], cancel: threading.Event | None = None
    ) -> Iterator[tuple[Prompt, list[float], float]]:
        """`(prompt, NLL of each token after the first, seconds)` for each prompt, in order
        (`core.models.nll.token_nlls`).

        Raises:
            Cancelled: `cancel` was set; checked between prompts.
        """
        self.reset()  # an answer cache is of no use here: free its memory
        for prompt in prompts:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            start = time.perf_counter()
            with self.loaded.lock:
                nlls = token_nlls(self.loaded.model, prompt.ids)
            yield prompt, nlls, time.perf_counter() - start

    def reset(self) -> None:
        """Drop the cached KV (frees its memory)."""
        self._cache, self._cached = None, []

    def _answer(
        self, ids: list[int], max_new_tokens: int, cancel: threading.Event | None
    ) -> tuple[list[int], int]:
        import torch

        if not ids:
            raise LongCtxError("empty prompt")
        try:
            with torch.inference_mode():
                logits, reused = self._prefill(ids)
                out = self._decode(ids, logits, max_new_tokens, cancel)
        except BaseException:
            # A forward pass that failed half way (out of memory, say) may have grown some
            # layers' KV and not others: never reuse that cache.
            self.reset()
            raise
        return out, reused

    def _croppable(self) -> bool:
        from transformers.cache_utils import DynamicLayer

        layers = getattr(self._cache, "layers", [])
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def _forward(self, ids: list[int], keep: int) -> Any:
        import torch

        device = next(self.loaded.model.parameters()).device
        model = self.loaded.model
        result = model(
            input_ids=torch.tensor([ids], device=device),
            **{cache_argument(model): self._cache},
            use_cache=True,
            logits_to_keep=keep,
        )
        self._cached.extend(ids)
        self.stats["forward_passes"] += 1
        return result.logits[0].float()

    def _prefill(self, ids: list[int]) -> tuple[Any, int]:
        """Bring the cache to hold `ids`; return the last position's logits and tokens reused."""
        from transformers import DynamicCache

        keep = 0
        if self.reuse_prefix and self._cache is not None and self._croppable():
            keep = _common_prefix(self._cached, ids)
            keep = min(keep, len(ids) - 1)  # at least one token to feed, for its logits
            if keep < len(self._cached):
                self._cache.crop(keep - len(self._cached))
                del self._cached[keep:]
        if keep == 0:
            self._cache = DynamicCache(config=self.loaded.model.config)
            self._cached = []
        self.stats["prompt_tokens"] += len(ids)
        self.stats["computed_tokens"] += len(ids) - keep
        logits = None
        for start in range(keep, len(ids), self.prefill_chunk):
            logits = self._forward(ids[start : start + self.prefill_chunk], 1)
        return logits[-1], keep

    def _decode(
        self, prompt: list[int], logits: Any, max_new_tokens: int, cancel: threading.Event | None
    ) -> list[int]:
        """Greedy decoding with drafts looked up in the prompt; returns the new token ids."""
        lookup = _NgramLookup(prompt) if self.lookup_tokens and self._croppable() else None
        out: list[int] = []
        token = int(logits.argmax())
        while True:
            if token in self.eos:
                return out
            out.append(token)
            if len(out) >= max_new_tokens:
                return out
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            room = max_new_tokens - len(out) - 1
            # Match only what the model wrote: an n-gram that runs into the template's
            # "assistant\n" would draft from wherever that pair happens to occur, and a rejected
            # draft costs a forward pass twice as dear as a single token (it needs a mask).
            draft = lookup.draft(out[-3:], min(self.lookup_tokens, room)) if lookup else []
            greedy = self._forward([token, *draft], len(draft) + 1).argmax(-1).tolist()
            accepted = 0
            while accepted < len(draft) and greedy[accepted] == draft[accepted]:
                accepted += 1
            if accepted < len(draft):  # the rejected drafts' KV must not stay in the cache
                self._cache.crop(accepted - len(draft))
                del self._cached[accepted - len(draft) :]
            for tok in draft[:accepted]:
                if tok in self.eos:
                    return out
                out.append(tok)
                if len(out) >= max_new_tokens:
                    return out
            token = greedy[accepted]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the common case for prompts in reuse order: one C-speed comparison
        return n
    lo, hi = 0, n  # binary search on slice equality: O(n log n) in C rather than a Python loop
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class _NgramLookup:
    """Drafts continuations of the last few tokens from their first occurrence in the prompt."""

    sizes = (3, 2)

    def __init__(self, prompt: list[int]):
        self.prompt = prompt
        self.index: dict[tuple[int, ...], int] = {}
        for n in self.sizes:
            for end in range(n, len(prompt)):
                self.index.setdefault(tuple(prompt[end - n : end]), end)

    def draft(self, context: list[int], k: int) -> list[int]:
        if k <= 0:
            return []
        for n in self.sizes:
            if len(context) < n:
                continue
            end = self.index.get(tuple(context[-n:]))
            if end is not None:
                return self.prompt[end : end + k]
        return []


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible endpoint backend.

CONTINUE_FINAL_MESSAGE = {"continue_final_message": True, "add_generation_prompt": False}


def _retry_after(exc: Any, default: float) -> float:
    """Seconds a refusing server asked us to wait (`retry-after-ms`, then `Retry-After`)."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return min(60.0, max(0.1, float(headers[name]) * scale))
        except (KeyError, TypeError, ValueError):
            continue
    return default


class EndpointBackend:
    """Answers from an OpenAI-compatible chat endpoint, a few requests in flight at once."""

    BUSY = (429, 503)
    """Statuses of a server that sheds load (`longctx serve`, vLLM behind a gateway): ask again
    later, with fewer requests in flight."""

    def __init__(
        self,
        endpoint: Endpoint,
        tokenizer: Any,
        *,
        concurrency: int = 4,
        busy_patience_s: float = 900.0,
    ):
        self.endpoint = endpoint
        self.tokenizer = tokenizer
        self.concurrency = max(1, concurrency)
        self.busy_patience_s = busy_patience_s
        """How long one prompt may keep getting "busy" answers before the evaluation stops."""
        self.busy_answers = 0
        """Busy answers so far: each halves the requests kept in flight (down to one)."""
        self._client = endpoint.client()

    @property
    def window(self) -> int | None:
        return None

    @property
    def label(self) -> str:
        return f"{self.endpoint.model} @ {self.endpoint.base_url}"

    def _ask(self, prompt: Prompt, max_new_tokens: int) -> Reply:
        import openai

        start = time.perf_counter()
        # The answer prefix is the last, assistant, message: the server must continue it
        # (vLLM's and `longctx serve`'s request fields) rather than answer after it.
        extra = {"extra_body": CONTINUE_FINAL_MESSAGE} if prompt.answer_prefix else {}
        try:
            while True:
                try:
                    response = create_chat_completion(
                        self._client,
                        model=self.endpoint.model,
                        messages=prompt.messages,
                        max_tokens=max_new_tokens,
                        temperature=0,
                        **extra,
                    )
                    break
                except openai.APIStatusError as exc:
                    # The client's own retries (two, honouring Retry-After) were not enough: a
                    # busy server is asked again, patiently, while fewer requests are sent.
                    waited = time.perf_counter() - start
                    if exc.status_code not in self.BUSY or waited > self.busy_patience_s:
                        raise
                    self.busy_answers += 1
                    time.sleep(_retry_after(exc, default=min(30.0, 2.0 * self.busy_answers)))
        except openai.APIConnectionError as exc:
            raise LongCtxError(
                f"cannot reach the endpoint {self.endpoint.base_url}: {exc}; is the server up?"
            ) from exc
        except openai.APIStatusError as exc:
            hint = ""
            if prompt.answer_prefix and exc.status_code == 400:
                hint = (
                    "; a server that cannot continue an assistant message (continue_final_message"
                    " is vLLM's and longctx serve's) needs an empty answer prefix"
                )
            if exc.status_code in self.BUSY:
                hint = (
                    f"; it stayed busy for {self.busy_patience_s:g} s: lower the evaluation's "
                    "concurrency, or give the server a longer queue deadline"
                )
            raise LongCtxError(
                f"the endpoint {self.endpoint.base_url} refused the prompt {prompt.key} "
                f"(HTTP {exc.status_code}): {str(exc)[:300]}{hint}"
            ) from exc
        text = response.choices[0].message.content or ""
        usage = response.usage
        return Reply(
            text,
            usage.prompt_tokens if usage else len(prompt.ids),
            usage.completion_tokens if usage else 0,
            time.perf_counter() - start,
        )

    def answers(
        self,
        prompts: Iterable[Prompt],
        max_new_tokens: int,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[Prompt, Reply]]:
        """Answer the prompts, yielding each as it completes (not necessarily in order)."""
        pending: dict[Future, Prompt] = {}
        source = iter(prompts)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="eval-endpoint") as pool:
            try:
                while True:
                    # Each busy answer halves what is kept in flight (AIMD's decrease).
                    limit = max(1, self.concurrency >> self.busy_answers)
                    while len(pending) < limit and not (cancel and cancel.is_set()):
                        prompt = next(source, None)
                        if prompt is None:
                            break
                        pending[pool.submit(self._ask, prompt, max_new_tokens)] = prompt
                    if not pending:
                        break
                    done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield pending.pop(future), future.result()
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
            finally:
                for future in pending:
                    future.cancel()
