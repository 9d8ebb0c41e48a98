"""The import direction app.py -> ui/ -> core/ holds with no cycles, the UI is one package per tab,
and every module says what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


TABS = ("data", "generate", "train", "evaluate", "chat", "experiments")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    modules = {
        _module_name(p): p for folder in ("core", "ui") for p in (ROOT / folder).rglob("*.py")
    }
    modules["app"] = ROOT / "app.py"
    return modules


def _imported_names(module: str, path: Path) -> set[str]:
    """Every module name `path` imports, wherever the import sits (module level, inside a
    function, under `if`), relative imports resolved, plus the string argument of every
    `importlib.import_module(...)` / `__import__(...)` call: hiding an import does not hide a
    dependency."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0] if node.args else None
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                names.add(str(arg.value))
    return names


def _import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports}; `from pkg import name` counts as importing
    `pkg.name` when that is a module, else `pkg`."""
    modules = _project_modules()

    def owner(name: str) -> str | None:
        parts = name.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or None

    graph = {}
    for module, path in modules.items():
        targets = {owner(n) for n in _imported_names(module, path)}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_sees_hidden_imports(tmp_path):
    """The test above can fail: a function-level import and an importlib string make a cycle."""
    pkg = tmp_path / "core"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from core import b\n")
    (pkg / "b.py").write_text("import importlib\nM = importlib.import_module('core.a')\n")
    graph = {m: set() for m in ("core.a", "core.b")}
    for module in graph:
        path = pkg / f"{module.split('.')[1]}.py"
        graph[module] = {n for n in _imported_names(module, path) if n in graph}
    assert _cycles(graph) == [["core.a", "core.b"]]


def test_core_never_imports_gradio_or_ui():
    graph_offenders = [
        m
        for m, targets in _import_graph().items()
        if m.startswith("core") and any(t.split(".")[0] in ("ui", "app") for t in targets)
    ]
    gradio_offenders = [
        m
        for m, p in _project_modules().items()
        if m.startswith("core") and any(n.split(".")[0] == "gradio" for n in _imported_names(m, p))
    ]
    assert graph_offenders == [] and gradio_offenders == []


def test_ui_is_one_package_per_tab():
    """ui/<tab>/ for each tab, each with a `build()` returning that tab's `<Name>Tab` dataclass
    (the components other tabs wire to); loose modules in ui/ are only the shared ones."""
    for tab in TABS:
        module = ast.parse((ROOT / "ui" / tab / "tab.py").read_text())
        build = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "build")
        returned = ast.unparse(build.returns)
        assert returned == f"{tab.capitalize()}Tab", (tab, returned)
        assert any(isinstance(n, ast.ClassDef) and n.name == returned for n in module.body)
    loose = sorted(p.stem for p in (ROOT / "ui").glob("*.py") if p.stem != "__init__")
    assert not [m for m in loose if m.split("_")[0] in TABS], loose


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
    unsafe = {
        "pickle.load",
        "pickle.loads",
        "yaml.load",
        "yaml.unsafe_load",
        "os.system",
        "os.popen",
        "marshal.loads",
    }
    offenders = []
    for path in [*(ROOT / "core").rglob("*.py"), *(ROOT / "ui").rglob("*.py"), ROOT / "app.py"]:
        for name, call in _calls(path):
            shell = any(
                k.arg == "shell" and getattr(k.value, "value", False) for k in call.keywords
            )
            weights_only = any(
                k.arg == "weights_only" and getattr(k.value, "value", None) is True
                for k in call.keywords
            )
            if name in unsafe or shell or (name == "torch.load" and not weights_only):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
    assert offenders == []
