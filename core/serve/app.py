"""The FastAPI app: chat completions (plain and SSE) and model listing over one local model.

A worker thread per request runs `core.models.generation.stream_chat`; requests take turns at the model
in arrival order, a bounded queue turns overload into 429s, a request that waits past the queue
deadline gets a 503 (both with `Retry-After`, so OpenAI clients back off and retry), and a client
that goes away cancels its generation. With `fault_injection`, `/_faults` and `/_stats` let tests script failures.
Knows nothing about gradio, datasets or training.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ConfigError
from core.models.generation import Chunk, PromptTooLong, SamplingParams, prompt_ids
from core.models.loader import LoadedModel, ModelSpec, default_cache
from core.serve.protocol import (
    APIError,
    ChatRequest,
    Fault,
    _from_validation,
    _text_of,
    template_flags,
)
from core.serve.turns import Generation, ServerState
from core.threads import Governor

log = logging.getLogger(__name__)

# The window assumed for a model whose config names none.
_FALLBACK_WINDOW = 4096


def _load(loaded_or_spec: LoadedModel | ModelSpec | str) -> LoadedModel:
    if isinstance(loaded_or_spec, LoadedModel):
        return loaded_or_spec
    spec = loaded_or_spec if isinstance(loaded_or_spec, ModelSpec) else ModelSpec(loaded_or_spec)
    return default_cache.get(spec)


def create_app(
    loaded_or_spec: LoadedModel | ModelSpec | str,
    *,
    max_queue: int = 16,
    queue_timeout: float | None = 30.0,
    served_name: str | None = None,
    fault_injection: bool = False,
    refuse_max_tokens: bool = False,
    governor: Governor | None = None,
) -> FastAPI:
    """Build the FastAPI app serving one model (loading it now if given a spec or a name).

    Args:
        loaded_or_spec: a loaded model, or what to load through `core.models.loader.default_cache`.
        max_queue: requests that may wait behind the one generating; more get a 429.
        queue_timeout: seconds a request may wait for the model before it gets a 503 (None:
            no limit).
        served_name: the model id clients use (default: the spec's name, e.g. `embedded`).
        fault_injection: add `/_faults` and `/_stats` for testing clients.
        refuse_max_tokens: answer `max_tokens` with the 400 OpenAI's newest models give (they
            take only `max_completion_tokens`), for testing clients.
        governor: keeps generation on this process's thread budget (`longctx serve` passes
            one; a server inside another process follows that process's budget).
    """
    if max_queue < 0:
        raise ConfigError(f"max_queue must be 0 or more, got {max_queue}")
    if queue_timeout is not None and not queue_timeout > 0:
        raise ConfigError(
            f"queue_timeout must be more than 0 seconds, got {queue_timeout} (None: no limit)"
        )
    loaded = _load(loaded_or_spec)
    name = served_name or loaded.spec.name
    state = ServerState(loaded, name, max_queue, fault_injection, queue_timeout, governor)
    state.refuse_max_tokens = refuse_max_tokens

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.cancel_all()

    app = FastAPI(title="LongCtx Studio OpenAI-compatible server", lifespan=lifespan)
    app.state.longctx = state
    _add_error_handlers(app)
    _add_model_routes(app, state)
    if fault_injection:
        _add_fault_routes(app, state)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _from_validation(list(exc.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        error = APIError(exc.status_code, str(exc.detail), code=code, headers=exc.headers)
        return error.response()


def _add_model_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": state.served_name, "in_flight": state.in_flight}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {
            "id": state.served_name,
            "object": "model",
            "created": state.created,
            "owned_by": "longctx",
            # vLLM's name for the window: lets clients (the Chat tab) size their context budget.
            "max_model_len": state.loaded.window,
        }
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        state.requests += 1
        try:
            response = await _chat(request, state)
        except APIError as exc:
            response = exc.response()
        except Exception:
            log.exception("chat completion failed")
            response = APIError(500, "internal error; see the server log", type="server_error")
            response = response.response()
        state.by_status[str(response.status_code)] += 1
        return response


def _add_fault_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/_faults")
    async def add_faults(faults: list[Fault]) -> dict[str, int]:
        state.faults.extend(faults)
        return {"pending": len(state.faults)}

    @app.delete("/_faults")
    async def clear_faults() -> dict[str, int]:
        state.faults.clear()
        return {"pending": 0}

    @app.get("/_stats")
    async def stats() -> dict[str, Any]:
        return {
            "requests": state.requests,
            "by_status": dict(state.by_status),
            "message_hashes": list(state.message_hashes),
            "sampling": list(state.sampling),
            "finish_reasons": dict(state.finish_reasons),
            "in_flight": state.in_flight,
            "faults_pending": len(state.faults),
        }

    @app.delete("/_stats")
    async def reset_stats() -> dict[str, bool]:
        state.requests = 0
        state.by_status.clear()
        state.message_hashes.clear()
        state.sampling.clear()
        state.finish_reasons.clear()
        return {"reset": True}


# ---------------------------------------------------------------------------------------------
# One chat completion: parse -> render the prompt -> queue slot -> fault -> generate -> respond.


@dataclass
class _Call:
    request: ChatRequest
    messages: list[dict[str, str]]
    params: SamplingParams
    ids: list[int]


def _parse(raw: bytes, state: ServerState) -> tuple[ChatRequest, list[dict[str, str]]]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
    except RecursionError:  # e.g. b"[" * 100_000: json's decoder recurses per level (was a 500)
        raise APIError(
            400, "the request body is nested too deeply to parse", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_value")
    if state.fault_injection:
        digest = json.dumps(body.get("messages"), sort_keys=True, ensure_ascii=False)
        # surrogatepass: JSON may carry a lone surrogate ("\ud800"), which strict UTF-8 refuses
        # (that was a 500); the digest only has to tell requests apart.
        digest_bytes = digest.encode("utf-8", "surrogatepass")
        state.message_hashes.append(hashlib.sha256(digest_bytes).hexdigest()[:16])
        state.sampling.append({k: body.get(k) for k in ("temperature", "top_p", "max_tokens")})
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise _from_validation(exc.errors()) from None
    if req.model != state.served_name:
        raise APIError(
            404,
            f"the model {req.model!r} does not exist here; this server serves "
            f"{state.served_name!r} (see /v1/models)",
            param="model",
            code="model_not_found",
        )
    if state.refuse_max_tokens and req.max_tokens is not None:
        raise APIError(
            400,
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            param="max_tokens",
            code="unsupported_parameter",
        )
    if req.n not in (None, 1):
        raise APIError(400, f"only n=1 is supported, got n={req.n}", param="n")
    messages = [{"role": m.role, "content": _text_of(m, i)} for i, m in enumerate(req.messages)]
    return req, messages


async def _prepare(raw: bytes, state: ServerState) -> _Call:
    req, messages = _parse(raw, state)
    loaded = state.loaded
    # OpenAI's default is "as many as fit"; stream_chat caps it at what the prompt leaves.
    max_tokens = req.max_completion_tokens or req.max_tokens or loaded.window or _FALLBACK_WINDOW
    try:
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            stop=req.stop or [],
            seed=req.seed,
        )
    except ConfigError as exc:
        raise APIError(400, str(exc), code="invalid_value") from None

    add_generation_prompt, continue_final_message = template_flags(req, messages)

    def render() -> list[int]:
        with state.tokenize_lock:
            return prompt_ids(
                loaded.tokenizer,
                messages,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
            )

    try:
        ids = await run_in_threadpool(render)
    except Exception as exc:  # a chat template refusing these messages (e.g. role order)
        raise APIError(
            400, f"the chat template rejected the messages: {exc}", param="messages"
        ) from exc
    window = loaded.window or _FALLBACK_WINDOW
    if len(ids) >= window:
        error = PromptTooLong(len(ids), window)
        raise APIError(400, str(error), param="messages", code="context_length_exceeded")
    return _Call(req, messages, params, ids)


async def _chat(request: Request, state: ServerState) -> Response:
    call = await _prepare(await request.body(), state)
    slot = state.try_admit()
    if slot is None:
        raise APIError(
            429,
            f"the server is busy: {state.max_queue} requests are already waiting for the model "
            "(retry later, or start the server with a larger --max-queue)",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers=state.busy_headers(),
        )
    job, streaming, turn = None, False, False
    try:
        fault = state.faults.popleft() if state.faults else None
        if fault is not None:
            await _apply_fault(fault)
        turn = await _wait_for_turn(request, state)
        job = Generation(state, call.messages, call.ids, call.params)
        job.start(slot)  # from here on the generation thread releases the slot and the turn
        job.watch(request)
        # Waiting for the first token before answering lets an error still be a 4xx.
        first = await job.next()
        broken = fault is not None and fault.broken_json
        if call.request.stream:
            # From here Starlette listens for the disconnect itself; two listeners would race
            # for uvicorn's receive().
            job.unwatch()
            response, streaming = _stream(job, first, call, state, broken), True
            return response
        return await _complete(job, first, call, state, broken)
    except PromptTooLong as exc:
        raise APIError(400, str(exc), param="messages", code="context_length_exceeded") from None
    finally:
        if job is None:
            slot.release()
            if turn:
                state.turn().release()
        elif not streaming:  # a stream closes its job when it ends
            job.close()


async def _wait_for_turn(request: Request, state: ServerState) -> bool:
    """Wait in line for the model: True once it is this request's turn.

    Raises a 503 past the queue deadline, and gives up (499, which nobody reads) when the
    client hangs up first, so a queue of abandoned requests never holds the model.
    """
    turn = state.turn()
    acquire = asyncio.ensure_future(turn.acquire())

    async def hung_up() -> None:
        # The body is read: the next message uvicorn has for us is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    gone = asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait(
            {acquire, gone}, timeout=state.queue_timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
        if not acquire.done():
            acquire.cancel()  # asyncio.Lock passes a turn granted meanwhile to the next in line
    if acquire.done() and not acquire.cancelled():
        return True
    if gone.done() and not gone.cancelled():
        raise APIError(499, "the client closed the request while it waited", type="client_closed")
    raise APIError(
        503,
        f"the server is busy: this request waited {state.queue_timeout:g} s for the model "
        "(retry later, or start the server with a longer --queue-timeout)",
        type="server_error",
        code="queue_timeout",
        headers=state.busy_headers(),
    )


async def _apply_fault(fault: Fault) -> None:
    if fault.delay_s:
        await asyncio.sleep(fault.delay_s)
    if fault.status is not None:
        retry_ms = fault.retry_after_s * 1000
        headers = {
            "retry-after-ms": f"{retry_ms:g}",
            "Retry-After": str(math.ceil(fault.retry_after_s)),
        }
        kind = "rate_limit_error" if fault.status == 429 else "server_error"
        if fault.status < 500 and fault.status != 429:
            kind = "invalid_request_error"
        raise APIError(
            fault.status,
            f"injected fault: HTTP {fault.status}",
            type=kind,
            code="injected_fault",
            headers=headers,
        )


def _break(text: str) -> str:
    # Valid JSON never ends with "{", so this is invalid whatever the answer was.
    return text[: len(text) // 2] + "{"


def _base(state: ServerState, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": kind,
        "created": int(time.time()),
        "model": state.served_name,
        "system_fingerprint": None,
    }


def _usage(chunk: Chunk) -> dict[str, int]:
    return {
        "prompt_tokens": chunk.prompt_tokens,
        "completion_tokens": chunk.completion_tokens,
        "total_tokens": chunk.prompt_tokens + chunk.completion_tokens,
    }


async def _complete(
    job: Generation, chunk: Chunk, call: _Call, state: ServerState, broken: bool
) -> JSONResponse:
    parts = [chunk.text]
    while chunk.finish_reason is None:
        chunk = await job.next()
        parts.append(chunk.text)
    text = _break("".join(parts)) if broken else "".join(parts)
    body = _base(state, "chat.completion")
    body["choices"] = [
        {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": chunk.finish_reason,
        }
    ]
    body["usage"] = _usage(chunk)
    return JSONResponse(body)


def _stream(
    job: Generation, first: Chunk, call: _Call, state: ServerState, broken: bool
) -> StreamingResponse:
    base = _base(state, "chat.completion.chunk")
    options = call.request.stream_options
    include_usage = bool(options and options.include_usage)

    def event(delta: dict[str, str], finish: str | None) -> str:
        data = dict(base)
        data["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if include_usage:
            data["usage"] = None
        return f"data: {json.dumps(data)}\n\n"

    async def events() -> AsyncIterator[str]:
        try:
            yield event({"role": "assistant", "content": ""}, None)
            chunk, held = first, []
            while True:
                if broken:  # the cut needs the whole answer: send it at the end, in one piece
                    held.append(chunk.text)
                elif chunk.text:
                    yield event({"content": chunk.text}, None)
                if chunk.finish_reason is not None:
                    break
                chunk = await job.next()
            if broken:
                yield event({"content": _break("".join(held))}, None)
            yield event({}, chunk.finish_reason)
            if include_usage:
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': _usage(chunk)})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            # Runs when the client disconnects too (Starlette cancels this generator): stopping
            # the decoding frees the model for the next request in the queue.
            job.close()

    # The background task covers a disconnect before the generator ever started.
    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
        background=BackgroundTask(job.close),
    )
