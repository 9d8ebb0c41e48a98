"""The OpenAI wire format: request models, the error shape, and fault descriptions for tests.

Knows nothing about models or HTTP serving; `core.serve.app` uses these to parse and answer.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.


class APIError(Exception):
    """A refusal to answer, carrying the HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers or {}

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _from_validation(errors: list[Any]) -> APIError:
    """One 400 from pydantic's error list: the first problem named by its JSON path."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        return APIError(400, "the request body is not valid JSON", code="invalid_json")
    path = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(path) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if first.get("type") not in ("missing", "too_short") and "input" in first:
        message += f" (got {json.dumps(first['input'], default=str)[:80]})"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return APIError(400, message, param=param, code="invalid_value")


# ---------------------------------------------------------------------------------------------
# Request bodies. Strict: "hot" is not a temperature and "yes" is not a boolean, as with OpenAI;
# unknown fields (user, frequency_penalty, ...) are accepted and ignored.


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ContentPart(_Strict):
    type: str
    text: str | None = None


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    # OpenAI's seed is a 64-bit integer; torch's generator refuses anything outside
    # [-2**63, 2**64) while decoding, which was a 500 instead of this 400.
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    n: int | None = None
    # vLLM's extensions, sent by the openai client through `extra_body`: end the prompt inside
    # the last (assistant) message instead of opening a new turn, to prefill an answer's start.
    add_generation_prompt: bool | None = None
    continue_final_message: bool = False


def template_flags(req: ChatRequest, messages: list[dict[str, str]]) -> tuple[bool, bool]:
    """`(add_generation_prompt, continue_final_message)` for rendering `req`'s prompt.

    `add_generation_prompt` defaults to the opposite of `continue_final_message` (vLLM wants it
    set to false by hand; leaving it out is no contradiction here).

    Raises:
        APIError: 400 for combinations that cannot both hold: both true, or a final message to
            continue that is not the assistant's.
    """
    if not req.continue_final_message:
        return req.add_generation_prompt is not False, False
    if req.add_generation_prompt:
        raise APIError(
            400,
            "continue_final_message and add_generation_prompt cannot both be true: the first "
            "continues the last assistant message, the second opens a new assistant turn; set "
            "add_generation_prompt to false",
            param="continue_final_message",
            code="invalid_value",
        )
    if messages[-1]["role"] != "assistant":
        raise APIError(
            400,
            "continue_final_message needs the last of messages to be the assistant's (the start "
            f"of the answer to continue), got a {messages[-1]['role']!r} message; send "
            "add_generation_prompt instead to start a new answer",
            param="continue_final_message",
            code="invalid_value",
        )
    return False, True


class Fault(BaseModel):
    """What `/_faults` makes the next chat request do instead of (or before) answering."""

    model_config = ConfigDict(strict=True, extra="forbid")
    status: int | None = Field(None, ge=400, le=599)
    """Answer with this error status (OpenAI error JSON) without generating."""
    broken_json: bool = False
    """Answer 200, but with the real answer cut in half and ending in a stray `{`."""
    delay_s: float = Field(0.0, ge=0, le=600)
    """Sleep this long first (the request holds its queue slot meanwhile)."""
    retry_after_s: float = Field(0.1, gt=0, le=60)
    """Sent with an error status as `retry-after-ms` (and a rounded-up `Retry-After`)."""


def _text_of(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise APIError(
                400,
                f"only text content parts are supported, got a {part.type!r} part",
                param=f"messages.{index}.content",
                code="invalid_value",
            )
        texts.append(part.text)
    return "\n".join(texts)
