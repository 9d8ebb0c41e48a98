"""What every typed config shares: help texts read from the attribute docstrings of its fields,
and the folders of YAML presets (training presets, experiment presets).

A config dataclass documents each field with a string literal under it (the style of
`TrainConfig`, `SynthConfig`, `ModelSpec`); the UI shows that text beside the control, the CLI in
`--help` and the YAML writer as a comment, so the words live in one place.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

from core.errors import ConfigError


def field_help(cls: type) -> dict[str, str]:
    """{field: help text} from the attribute docstrings of a config dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    helps = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            helps[node.target.id] = " ".join(after.value.value.split())
    return helps


def preset_names(folder: Path) -> list[str]:
    """The presets in a folder of YAML files, by name (the file's stem)."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def preset_file(folder: Path, name: str, what: str = "preset") -> Path:
    """The YAML file of preset `name` in `folder`.

    Raises:
        ConfigError: no such preset (the message lists the ones there are).
    """
    path = folder / f"{name}.yaml"
    if not path.exists():
        names = ", ".join(preset_names(folder))
        raise ConfigError(f"no {what} {name!r}; presets: {names}")
    return path
