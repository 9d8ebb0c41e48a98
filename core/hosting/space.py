"""Running as a Hugging Face Space: who may do what, where files persist, how a GPU is borrowed.

A Space is recognised by the `SPACE_ID` variable the Hub sets. There (or anywhere with
`LONGCTX_PUBLIC=1`, for a self-hosted public app) the app is *restricted*: visitors chat,
browse data and run small evaluations, while anything that spends the owner's money or changes
the owner's files (training, generation through an API endpoint, saving datasets, pushing to
the Hub) needs the owner. The owner is whoever signed in with the app's Gradio credentials, or
the Hugging Face user named by `SPACE_AUTHOR_NAME` (plus `LONGCTX_OWNERS`, comma-separated).
Off a Space the app serves its one local user, who may do everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

F = TypeVar("F", bound=Callable)

# Where the Hub mounts a Space's persistent storage (a fact of the platform, not of this machine).
PERSISTENT_STORAGE = Path("/data")


def space_id() -> str | None:
    return os.environ.get("SPACE_ID") or None


def restricted() -> bool:
    """Whether visitors are strangers: on a Space, or when the app is declared public."""
    declared = os.environ.get("LONGCTX_PUBLIC", "").lower() in ("1", "true", "yes")
    return space_id() is not None or declared


def owners() -> set[str]:
    names = {os.environ.get("SPACE_AUTHOR_NAME", "")}
    names.update(os.environ.get("LONGCTX_OWNERS", "").split(","))
    return {n.strip().lower() for n in names if n.strip()}


@dataclass(frozen=True)
class Visitor:
    """Who is behind a request, as far as the app can tell."""

    auth_user: str | None = None
    """The name typed into the app's own login form (Gradio auth), if it has one."""
    hf_user: str | None = None
    """The Hugging Face account signed in through "Sign in with Hugging Face", if any."""

    @property
    def is_owner(self) -> bool:
        if not restricted():
            return True
        # Gradio auth's credentials are the owner's: only they can have passed the login form.
        if self.auth_user:
            return True
        return bool(self.hf_user) and self.hf_user.lower() in owners()

    def refusal(self, action: str) -> str | None:
        """Why `action` is refused for this visitor (one line), or None when it is allowed."""
        if self.is_owner:
            return None
        who = " or ".join(sorted(owners())) or "the owner"
        sign_in = f"sign in with Hugging Face as {who}"
        if self.hf_user:
            sign_in = f"You are signed in as {self.hf_user}; {sign_in}"
        else:
            sign_in = sign_in[0].upper() + sign_in[1:]
        return (
            f"{action} is for the owner of this app. {sign_in}, or duplicate the Space to "
            "run it on your own hardware."
        )


@dataclass(frozen=True)
class PublicLimits:
    """What a visitor who is not the owner may evaluate: small grids on the app's own models."""

    max_length: int = 8192
    max_cells: int = 40

    def refusal(self, cells: int, longest: int, paid: bool) -> str | None:
        """Why a visitor's evaluation is refused (one line), or None when it is small enough."""
        if paid:
            return "evaluating through an API endpoint or an LLM judge is for the owner of this app"
        if cells > self.max_cells or longest > self.max_length:
            return (
                f"visitors may run up to {self.max_cells} cells of at most {self.max_length:,} "
                f"tokens; this grid has {cells} cells up to {longest:,} tokens"
            )
        return None


PUBLIC_LIMITS = PublicLimits()


def persistent_home() -> Path | None:
    """The workspace on a Space's persistent storage, when the Space has it mounted."""
    if space_id() is None:
        return None
    if PERSISTENT_STORAGE.is_dir() and os.access(PERSISTENT_STORAGE, os.W_OK):
        return PERSISTENT_STORAGE / "longctx-studio"
    return None


def keep_downloads_persistent() -> None:
    """Point the Hugging Face cache at persistent storage too, so models survive a restart.

    Call before `huggingface_hub` is imported: it reads `HF_HOME` once."""
    home = persistent_home()
    if home is not None:
        os.environ.setdefault("HF_HOME", str(home.parent / ".huggingface"))


def zero_gpu() -> bool:
    """Whether this process runs on ZeroGPU hardware (the variable the `spaces` package reads)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def load_zero_gpu() -> None:
    """On ZeroGPU hardware, import `spaces` now: it must patch torch before anything touches
    CUDA, so before the app's modules load."""
    if zero_gpu():
        import spaces  # noqa: F401


def gpu(duration: int = 60) -> Callable[[F], F]:
    """Decorate a function that needs the GPU so that ZeroGPU lends one while it runs.

    `spaces.GPU` is itself a no-op off ZeroGPU hardware; without the `spaces` package this
    returns the function unchanged. On ZeroGPU the function runs in a worker process, so its
    arguments and results must pickle (no locks or events) and caches live in that worker.
    """
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
