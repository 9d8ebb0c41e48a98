"""Owner-only actions on a public app: gradio's request and OAuth profile -> `core.hosting.space.Visitor`.

A callback that trains, spends an API key or changes files takes `request: gr.Request` and
`profile: gr.OAuthProfile | None` as parameters (gradio fills both in from the session) and
calls `require_owner` first. The policy itself lives in `core.hosting.space`.
"""

from __future__ import annotations

import os

import gradio as gr

from core.hosting import space


def visitor(request: gr.Request | None, profile: gr.OAuthProfile | None) -> space.Visitor:
    auth_user = getattr(request, "username", None) if request is not None else None
    return space.Visitor(auth_user=auth_user or None, hf_user=getattr(profile, "username", None))


def require_owner(request: gr.Request | None, profile: gr.OAuthProfile | None, action: str) -> None:
    """Raise a red toast when the visitor may not do `action`."""
    why = visitor(request, profile).refusal(action)
    if why:
        raise gr.Error(why, print_exception=False)


def oauth_configured() -> bool:
    """Whether "Sign in with Hugging Face" works: on a Space whose README sets `hf_oauth: true`."""
    return space.space_id() is not None and bool(os.environ.get("OAUTH_CLIENT_ID"))


def banner(request: gr.Request, profile: gr.OAuthProfile | None) -> str:
    """One line under the header saying what this visitor may do (empty off a public app)."""
    if not space.restricted():
        return ""
    who = visitor(request, profile)
    if who.is_owner:
        name = who.hf_user or who.auth_user
        return f"Signed in as **{name}**, the owner: every tab is yours."
    limits = space.PUBLIC_LIMITS
    sign_in = " Sign in with Hugging Face as the owner to do more." if oauth_configured() else ""
    return (
        f"Public demo: chat with the app's models, browse data, and run evaluations up to "
        f"{limits.max_length:,} tokens and {limits.max_cells} cells. Training, API-paid "
        f"generation and saving files are for the owner.{sign_in}"
    )
