"""Data tab, shared parts: the path adapters and the file lists.

What one browser session has open is a `core.data.session.Opened`, kept in a `gr.State`. The
path helpers here turn what a user typed
or uploaded into paths the workspace allows (reading: the workspace, assets/, roots given on the
command line; writing: the workspace only). The work itself is done by `core.data`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core import workspace
from core.data import io, stats
from core.data.rows import HUB_PREFIX
from core.data.stats import SampleStats
from core.errors import LongCtxError
from ui.theme import ASSETS

SAMPLE = ASSETS / "sample" / "longctx-sample.jsonl"
SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet")
FIRST_PAGE = 50
_NOT_DATASETS = {"presets"}  # folders of assets/ that hold no datasets


def resolve_spec(spec: str | None) -> str:
    """A dataset spec typed by the user, its path checked against the allowed roots.

    Relative paths are taken from the workspace, or from its datasets/ folder where the file
    is (a bare name finds what the app saved); `path[N]` keeps its `[N]`; `hub:org/name` is not
    a path and passes as it is.
    """
    text = (spec or "").strip()
    if not text:
        raise LongCtxError("give a dataset file (or pick one from the list)")
    if text.startswith(HUB_PREFIX):
        return text
    path, n = io.parse_spec(text)
    resolved = workspace.resolve_inside(path)
    if not resolved.exists():
        saved = workspace.resolve_inside(path, base=workspace.subdir("datasets"))
        resolved = saved if saved.exists() else resolved
    return f"{resolved}[{n}]" if n is not None else str(resolved)


def writable_path(name: str) -> Path:
    """Where a file the user names is written: under workspace/datasets unless absolute, and
    always inside the workspace; `.jsonl` is added when the name has no JSON suffix."""
    name = (name or "").strip()
    if not name:
        raise LongCtxError("give a file name to write (it goes under workspace/datasets)")
    path = workspace.resolve_inside(name, base=workspace.subdir("datasets"))
    if not path.is_relative_to(workspace.home()):
        raise LongCtxError(
            f"{name!r} is outside the workspace; the app only writes under {workspace.home()}"
        )
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        path = path.with_name(path.name + ".jsonl")
    return path


def save_target(source: io.Source, save_as: str | None) -> tuple[Path | None, str]:
    """(where to save, why there): None saves in place; a file outside the workspace (assets/,
    a root given on the command line) or a `path[N]` sample gets a copy under workspace/datasets."""
    if (save_as or "").strip():
        return writable_path(save_as), ""
    if isinstance(source, io.SampledSource):
        base = getattr(source.base, "path", Path(source.base.name))
        return writable_path(f"{Path(base).stem}-sample{len(source)}.jsonl"), (
            "a sample is saved as a new file"
        )
    path = getattr(source, "path", None)
    if isinstance(source, io.JsonlSource) and path.resolve().is_relative_to(workspace.home()):
        return None, ""
    stem = Path(path).stem if path is not None else source.name.split("/")[-1]
    return writable_path(f"{stem}.jsonl"), "the app writes only inside the workspace"


def import_upload(uploaded: str | os.PathLike) -> Path:
    """Copy an uploaded file into workspace/datasets under a name not taken yet."""
    src = Path(uploaded)
    folder = workspace.subdir("datasets")
    target, n = folder / src.name, 1
    while target.exists():
        target = folder / f"{src.stem}-{n}{src.suffix}"
        n += 1
    shutil.copyfile(src, target)
    return target


def dataset_files() -> list[tuple[str, str]]:
    """(label, path) of the datasets offered in the path box: the workspace's, then assets/."""
    out = []
    for root, label in ((workspace.subdir("datasets"), "workspace/datasets"), (ASSETS, "assets")):
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _NOT_DATASETS)
            if (here / "dataset_info.json").exists() and here != root:  # a save_to_disk folder
                out.append((f"{label}/{here.relative_to(root)}", str(here)))
                dirs[:] = []
                continue
            for name in sorted(files):
                if Path(name).suffix.lower() in SUFFIXES and not name.startswith("."):
                    out.append((f"{label}/{(here / name).relative_to(root)}", str(here / name)))
    return out


def first_page(source: io.Source) -> list[SampleStats]:
    """Token-free rows of the first page, read while the rest of the file is indexed."""
    source.wait(timeout=0.5)  # a small file is indexed by then
    return stats.scan(source, range(min(FIRST_PAGE, len(source))))
