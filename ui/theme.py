"""How the app looks: the gradio theme, our CSS, the upload cap, and the state badges that runs,
evaluations and generation jobs share.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MAX_UPLOAD = "50mb"

_BADGE_COLOURS = {
    "created": "#6b7280",
    "starting": "#2563eb",
    "loading": "#2563eb",
    "running": "#2563eb",
    "stopping": "#d97706",
    "completed": "#059669",
    "stopped": "#6b7280",
    "failed": "#dc2626",
    "interrupted": "#dc2626",
}


def style_kwargs() -> dict:
    """Theme, CSS and the upload cap: gradio 6 takes them at launch(), not in Blocks()."""
    return {
        "theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="emerald"),
        "css_paths": [ASSETS / "app.css"],
        "max_file_size": MAX_UPLOAD,
    }


def badge(state: str) -> str:
    """A coloured pill naming a job's state (grey for states it does not know)."""
    colour = _BADGE_COLOURS.get(state, "#6b7280")
    return f'<span class="run-badge" style="background:{colour}">{html.escape(state)}</span>'
