"""User-facing errors.

A `LongCtxError` carries a message written for the person at the keyboard: what went wrong and
what to change. The CLI prints it as one line and exits 1; the UI turns it into `gr.Error`.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class LongCtxError(Exception):
    """An error whose message is meant for the user, not a traceback."""


class ConfigError(LongCtxError):
    """A configuration (from YAML, the CLI or the UI) failed validation.

    Collects every problem so the user fixes them all at once.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (library errors run to pages), or the
    exception's type name when the message is empty."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
