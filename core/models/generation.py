"""Token-by-token chat generation on a loaded local model, streamed as text deltas.

Used by the Chat tab, the OpenAI-compatible server and the evaluations. The decoding loop is
written here rather than taken from `model.generate` + `TextIteratorStreamer` because callers
need four things that combination does not give together: text deltas from the calling thread
(no helper thread to leak when a browser disconnects), OpenAI `stop` semantics (the stop string
is cut from the output, never shown), cancellation between any two tokens, and exact prompt /
completion token counts. Prefill asks the model for the last position's logits only, and reads
a long prompt in pieces: Stop works between them, the caller can show how far reading has got
(a 50K-token document takes minutes on a CPU), and the activations of one forward pass stay
those of one piece.

This module knows nothing about HTTP, gradio or where the messages came from.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError, LongCtxError
from core.models.loader import LoadedModel

PREFILL_CHUNK = 2048


@dataclass
class SamplingParams:
    """Decoding settings, named as in the OpenAI API."""

    max_tokens: int = 512
    """Most new tokens to produce (also capped by what is left of the window)."""
    temperature: float = 0.7
    """0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    stop: list[str] = field(default_factory=list)
    """Strings that end the answer; they are not part of it."""
    seed: int | None = None
    """Makes sampling repeatable."""

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in (self.stop or []) if s]
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            problems.append(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not 0 <= float(self.temperature) <= 2:
            problems.append(f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0 < float(self.top_p) <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if len(self.stop) > 4:
            problems.append(f"at most 4 stop strings, got {len(self.stop)}")
        if problems:
            raise ConfigError(problems)


@dataclass
class Chunk:
    """A piece of a streamed answer. The last chunk has `finish_reason` set."""

    text: str
    finish_reason: str | None = None
    """None while streaming, then `stop` (end of turn or a stop string), `length` or `cancelled`."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    read: int | None = None
    """While a long prompt is read (in `PREFILL_CHUNK` pieces): the tokens read so far, with no
    text yet. None once answer tokens come."""


class PromptTooLong(LongCtxError):
    """The prompt does not fit in the model's context window."""

    def __init__(self, prompt_tokens: int, window: int):
        self.prompt_tokens, self.window = prompt_tokens, window
        super().__init__(
            f"the prompt has {prompt_tokens} tokens but the model's window is {window}; "
            "shorten the document or raise the window with a RoPE override"
        )


def cache_argument(model: Any) -> str:
    """The name under which `model`'s forward takes its KV cache.

    transformers renamed `past_key_values` to `cache` during 5.x; unsloth pins transformers at
    5.17, from before the rename, so both must work.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_argument(type(base))


@functools.cache
def _cache_argument(cls: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def prompt_ids(
    tokenizer: Any,
    messages: list[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
) -> list[int]:
    """Token ids of `messages` rendered by the chat template.

    By default the prompt ends ready for a new assistant turn. With `continue_final_message`
    (and `add_generation_prompt` False) the last message, an assistant's, is left open, so the
    model continues it: an answer prefix such as "The pass key is" (vLLM's request fields of
    the same names).
    """
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tokenize=True,
        )
        if hasattr(ids, "keys"):  # transformers v5 returns a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    # A base model without a template: plain concatenation, the way such models were trained.
    # An answer starts after a newline; a message to continue sits where that answer would.
    contents = [m["content"] for m in messages]
    if continue_final_message:
        return tokenizer("\n\n".join(contents[:-1]) + "\n" + contents[-1])["input_ids"]
    return tokenizer("\n\n".join(contents) + "\n")["input_ids"]


def count_prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    return len(prompt_ids(tokenizer, messages))


def eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for source in (loaded.tokenizer.eos_token_id, _generation_eos(loaded.model)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return ids


def _generation_eos(model: Any) -> Any:
    config = getattr(model, "generation_config", None)
    return getattr(config, "eos_token_id", None) if config is not None else None


def _sample(logits: Any, params: SamplingParams, generator: Any) -> int:
    import torch

    if params.temperature == 0:
        return int(torch.argmax(logits))
    # In float64 and shifted so the largest is 0: any positive temperature, however small, then
    # gives 0 for the best token and at worst -inf for the others (float32 would overflow to
    # inf - inf, or see a temperature under 1e-45 as a division by zero).
    logits = logits.double()
    probs = torch.softmax((logits - logits.max()) / params.temperature, dim=-1)
    if params.top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep every token whose preceding mass is below top_p, and always the most likely one
        # (a top_p that rounds to 0 in float32 would keep none).
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
        keep[0] = True
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def _safe_prefix_len(text: str, stops: list[str]) -> int:
    """How much of `text` can be shown without revealing the start of a stop string."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return len(text) - hold


def stream_chat(
    loaded: LoadedModel,
    messages: list[dict[str, str]],
    params: SamplingParams | None = None,
    cancel: threading.Event | None = None,
    ids: list[int] | None = None,
    prefill_chunk: int = PREFILL_CHUNK,
) -> Iterator[Chunk]:
    """Generate the assistant's reply to `messages`, yielding text deltas as they are decoded.

    A prompt longer than `prefill_chunk` tokens is read in pieces of that size, with a chunk
    (`read` set, no text) after each piece but the last.

    Args:
        loaded: the model (its lock is held for the whole generation).
        messages: OpenAI-style [{"role", "content"}] list.
        params: sampling settings.
        cancel: set it from another thread to stop after the current token, or the current
            piece of the prompt.
        ids: pre-rendered prompt ids, when the caller already tokenized.
        prefill_chunk: tokens of the prompt read per forward pass.

    Raises:
        PromptTooLong: the prompt leaves no room for a single new token.
    """
    import torch

    params = params or SamplingParams()
    tokenizer = loaded.tokenizer
    ids = list(ids) if ids is not None else prompt_ids(tokenizer, messages)
    n_prompt = len(ids)
    window = loaded.window or 10**9
    if n_prompt >= window:
        raise PromptTooLong(n_prompt, window)
    budget = min(params.max_tokens, window - n_prompt)
    stops = eos_ids(loaded)
    generator = None
    if params.temperature > 0:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(
            params.seed if params.seed is not None else torch.seed() % (2**63 - 1)
        )

    out: list[int] = []
    shown = ""
    finish = "length"
    hit_stop_string = False
    # The lock spans the whole reply, but inference mode is entered per forward: a consumer such
    # as gradio resumes this generator on different threads, and grad mode is per thread.
    with loaded.lock:
        model = loaded.model
        device = next(model.parameters()).device
        from transformers import DynamicCache

        past = DynamicCache(config=model.config)  # filled in place by each forward
        cache = {cache_argument(model): past}
        # All of the prompt but its last piece: that one goes through the loop below, which
        # samples the first answer token from its logits.
        last = max(0, (n_prompt - 1) // prefill_chunk * prefill_chunk)
        for start in range(0, last, prefill_chunk):
            if cancel is not None and cancel.is_set():
                yield Chunk("", "cancelled", n_prompt, 0)
                return
            piece = torch.tensor([ids[start : start + prefill_chunk]], device=device)
            with torch.inference_mode():
                model(input_ids=piece, **cache, use_cache=True, logits_to_keep=1)
            yield Chunk("", None, n_prompt, 0, read=start + prefill_chunk)
        step_input = torch.tensor([ids[last:]], device=device)
        while len(out) < budget:
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            with torch.inference_mode():
                result = model(input_ids=step_input, **cache, use_cache=True, logits_to_keep=1)
            token = _sample(result.logits[0, -1].to("cpu"), params, generator)
            if token in stops:
                finish = "stop"
                break
            out.append(token)
            step_input = torch.tensor([[token]], device=device)
            text = tokenizer.decode(out, skip_special_tokens=True)
            cut = min((text.find(s) for s in params.stop if s in text), default=-1)
            if cut >= 0:
                text, finish, hit_stop_string = text[:cut], "stop", True
            visible = text if hit_stop_string else text[: _safe_prefix_len(text, params.stop)]
            # A multi-byte character split across tokens decodes to U+FFFD until complete.
            if visible.endswith("\ufffd") and not hit_stop_string:
                continue
            if len(visible) > len(shown) and visible.startswith(shown):
                yield Chunk(visible[len(shown) :], None, n_prompt, len(out))
                shown = visible
            if hit_stop_string:
                break
    # Whatever was held back (a partial stop string that never completed, an unfinished
    # character) belongs to the answer unless a stop string cut it.
    final = shown if hit_stop_string else tokenizer.decode(out, skip_special_tokens=True)
    tail = final[len(shown) :] if final.startswith(shown) else ""
    yield Chunk(tail, finish, n_prompt, len(out))


def complete_chat(
    loaded: LoadedModel,
    messages: list[dict[str, str]],
    params: SamplingParams | None = None,
    cancel: threading.Event | None = None,
) -> Chunk:
    """The whole reply at once: one Chunk with the full text, finish reason and usage."""
    parts, last = [], Chunk("")
    for chunk in stream_chat(loaded, messages, params, cancel):
        parts.append(chunk.text)
        last = chunk
    return Chunk("".join(parts), last.finish_reason, last.prompt_tokens, last.completion_tokens)
