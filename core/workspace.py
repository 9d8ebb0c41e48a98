"""The workspace: the one directory everything the app writes lives under.

`LONGCTX_HOME` (default `./workspace` beside app.py, or the persistent storage of a Space that
has it mounted) holds `models/`, `datasets/`, `runs/`,
`evals/` and `cache/`. This module also decides which user paths may be read: the workspace and
roots the user allowed explicitly (paths given on the command line). It knows nothing about
what is stored in those folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import LongCtxError
from core.hosting import space

SUBDIRS = ("models", "datasets", "runs", "evals", "experiments", "cache")
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_extra_roots: list[Path] = []


def home() -> Path:
    """The workspace root, created on first use with its standard sub-folders."""
    configured = os.environ.get("LONGCTX_HOME")
    if configured:
        root = Path(configured).expanduser().resolve()
    else:
        root = (space.persistent_home() or _PROJECT_ROOT / "workspace").resolve()
    for sub in SUBDIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def subdir(name: str) -> Path:
    """One of the standard sub-folders (`models`, `datasets`, `runs`, `evals`, `experiments`,
    `cache`).

    `LONGCTX_MODELS` may point `models/` elsewhere, so several workspaces (or test sessions)
    share converted and downloaded weights.
    """
    if name not in SUBDIRS:
        raise ValueError(f"unknown workspace folder {name!r}; expected one of {SUBDIRS}")
    if name == "models" and os.environ.get("LONGCTX_MODELS"):
        path = Path(os.environ["LONGCTX_MODELS"]).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return home() / name


def allow_root(path: str | os.PathLike) -> None:
    """Let the app read files under `path` (used for paths the user gave on the command line)."""
    root = Path(path).expanduser().resolve()
    if root not in _extra_roots:
        _extra_roots.append(root)


def allow_given(source: str, builtin: str = "builtin") -> str:
    """A corpus named on the command line: `builtin` as it is; a folder or file resolved and
    allowed to be read (the user named it), returned as an absolute path."""
    if source == builtin:
        return source
    resolved = str(Path(source).expanduser().resolve())
    allow_root(resolved)
    return resolved


def allowed_roots() -> list[Path]:
    return [home(), _PROJECT_ROOT / "assets", *_extra_roots]


def shown(path: str | os.PathLike) -> str:
    """A path as the UI shows it: `workspace/...` or `assets/...` inside those roots (short, and
    no server paths on a public page); anywhere else as it is."""
    text = str(path)
    for root, label in ((home(), "workspace"), (_PROJECT_ROOT / "assets", "assets")):
        prefix = str(root)
        if text == prefix or text.startswith(prefix + os.sep):
            return label + text[len(prefix) :]
    return text


def model_from_user(name: str | None) -> str | None:
    """A model or adapter named in the UI: `embedded` and Hub ids pass as they are; a folder
    (anything written as a path, or that exists on disk) must lie inside the allowed roots and
    comes back absolute."""
    text = (name or "").strip()
    if not text:
        return name
    path = Path(text).expanduser()
    if path.is_absolute() or text.startswith((".", "~")) or path.exists():
        return str(resolve_inside(path.resolve()))
    return text


def resolve_inside(path: str | os.PathLike, base: Path | None = None) -> Path:
    """Resolve a user-supplied path and refuse it unless it lies under an allowed root.

    Relative paths are taken relative to `base` (default: the workspace). Symlinks are resolved
    first, so a link pointing outside is refused too.
    """
    raw = Path(path).expanduser()
    candidate = (raw if raw.is_absolute() else (base or home()) / raw).resolve()
    for root in allowed_roots():
        if candidate == root or candidate.is_relative_to(root):
            return candidate
    raise LongCtxError(
        f"path {str(path)!r} is outside the folders this app may read "
        f"(the workspace {home()} and roots given on the command line)"
    )
