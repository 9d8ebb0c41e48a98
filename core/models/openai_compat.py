"""Chat completions on any OpenAI-compatible server, smoothing over `max_tokens`.

OpenAI's newest models (the o-series, gpt-5) refuse `max_tokens` and want
`max_completion_tokens`, while many other servers (older vLLM, TGI, llama.cpp) know only
`max_tokens`. The openai client passes either through untouched and cannot know which a server
takes, hence this wrapper: it sends `max_tokens`; when a server refuses it and names
`max_completion_tokens`, it resends once with that and remembers the choice for that address.
"""

from __future__ import annotations

import threading
from typing import Any

_NEW_NAME = "max_completion_tokens"
_wants_new_name: set[str] = set()
_lock = threading.Lock()


def create_chat_completion(client: Any, **kwargs: Any) -> Any:
    """`client.chat.completions.create(**kwargs)`, with `max_tokens` renamed where needed."""
    import openai

    address = str(client.base_url)
    with _lock:
        rename = address in _wants_new_name
    if rename and "max_tokens" in kwargs:
        kwargs[_NEW_NAME] = kwargs.pop("max_tokens")
    try:
        return client.chat.completions.create(**kwargs)
    except openai.BadRequestError as exc:
        if "max_tokens" not in kwargs or _NEW_NAME not in str(exc):
            raise
    with _lock:
        _wants_new_name.add(address)
    kwargs[_NEW_NAME] = kwargs.pop("max_tokens")
    return client.chat.completions.create(**kwargs)
