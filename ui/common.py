"""Helpers every tab uses: turning core errors into `gr.Error`, small formatting functions."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from core.errors import LongCtxError

log = logging.getLogger(__name__)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show `LongCtxError`s (bad input, a missing model...) as a red toast with their message.

    Works for plain callbacks and for generator callbacks that stream updates.
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except LongCtxError as exc:
                raise gr.Error(str(exc), print_exception=False) from exc

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LongCtxError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc

    return wrapper


def optional_float(value: Any) -> float | None:
    """A gr.Number left empty or at 0 means "keep the model's own value"."""
    return float(value) if value not in (None, "", 0) else None


def optional_int(value: Any) -> int | None:
    return int(value) if value not in (None, "", 0) else None
