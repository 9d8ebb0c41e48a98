"""The import direction app.py -> ui/ -> core/ holds, and every module says what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_gradio_or_ui():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "core").rglob("*.py")
        if _imports(p) & {"gradio", "ui"}
    ]
    assert offenders == []


def test_every_module_has_a_docstring():
    missing = [
        str(p.relative_to(ROOT))
        for folder in ("core", "ui")
        for p in (ROOT / folder).rglob("*.py")
        if p.stat().st_size and ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """(dotted name, call) for every call of a name or attribute, e.g. ('yaml.load', ...)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func, parts = node.func, []
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            out.append((".".join(reversed(parts)), node))
    return out


def test_no_unsafe_loading_and_no_shell():
    """User files are never unpickled or read with an unsafe YAML loader; child processes get
    argument lists, never a shell."""
    unsafe = {"pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "os.system",
              "os.popen", "marshal.loads"}  # fmt: skip
    offenders = []
    for path in [*(ROOT / "core").rglob("*.py"), *(ROOT / "ui").rglob("*.py"), ROOT / "app.py"]:
        for name, call in _calls(path):
            shell = any(
                k.arg == "shell" and getattr(k.value, "value", False) for k in call.keywords
            )
            weights_only = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True
                               for k in call.keywords)  # fmt: skip
            if name in unsafe or shell or (name == "torch.load" and not weights_only):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
    assert offenders == []
