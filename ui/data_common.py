"""Data tab, shared parts: the dataset a browser session has open, and the path adapters.

`Opened` holds what one browser session works on (the source, its edit session, its statistics
under the chosen model's tokenizer) inside a `gr.State`. The path helpers turn what a user typed
or uploaded into paths the workspace allows (reading: the workspace, assets/, roots given on the
command line; writing: the workspace only). The work itself is done by `core.data`.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import models, workspace
from core.data import edit, io, stats, table
from core.data.stats import SampleStats
from core.errors import LongCtxError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SAMPLE = ASSETS / "sample" / "longctx-sample.jsonl"
SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet")
FIRST_PAGE = 50
_NOT_DATASETS = {"presets"}  # folders of assets/ that hold no datasets


@functools.lru_cache(maxsize=4)
def tokenizer(name: str) -> Any:
    """The tokenizer (and chat template) of a model, loaded once per name."""
    return models.load_tokenizer(name)


@dataclass
class Opened:
    """The dataset one browser session has open."""

    spec: str
    """What was opened (a resolved path, `path[N]` or `hub:...`)."""
    source: io.Source
    model: str = models.EMBEDDED
    with_evidence: bool = True
    session: edit.EditSession | None = None
    """Created once the source is fully indexed."""
    base: stats.DatasetStats | None = None
    """Statistics of the file as it is on disk."""
    stats: stats.DatasetStats | None = None
    """Statistics of the rows as they are now (edits included)."""
    validation: io.Validation | None = None
    preview: list[SampleStats] = field(default_factory=list)
    """Token-free rows of the first page, shown while the file is indexed."""
    version: int = 0
    """Bumped by every change, so a search result knows when it is stale."""
    _search: tuple[Any, ...] = ()
    _matches: dict[int, str] | None = None

    @property
    def samples(self) -> list[SampleStats]:
        return self.stats.samples if self.stats is not None else self.preview

    @property
    def ready(self) -> bool:
        return self.session is not None and self.stats is not None

    def __len__(self) -> int:
        return len(self.session) if self.session is not None else len(self.source)

    def row(self, i: int) -> io.Row:
        return self.session.row(i) if self.session is not None else self.source.row(i)

    def edits(self) -> edit.EditSession:
        if self.session is None:
            raise LongCtxError("the file is still being opened; edit it once it is measured")
        return self.session

    def measurer(self) -> stats.Measurer:
        return stats.measurer_for(tokenizer(self.model), self.model)

    def measure(self, progress: io.Progress | None = None) -> None:
        """Statistics of the file (cached on disk), with the unsaved edits on top."""
        session = self.edits()
        self.base = stats.measure(session.source, tokenizer(self.model), name=self.model,
                                  with_evidence=self.with_evidence, progress=progress,
                                  measurer=self.measurer())  # fmt: skip
        self.stats = self.base if not session.dirty else self.changed()

    def changed(self) -> stats.DatasetStats:
        """Re-measure after an edit (only the edited rows are tokenized again)."""
        self.version += 1
        self.stats = stats.refresh(self.base, self.edits(), self.measurer(),
                                   with_evidence=self.with_evidence)  # fmt: skip
        return self.stats

    def search(self, text: str, fields: list[str], progress: io.Progress | None = None):
        """Rows matching a full-text search (None: no search), recomputed only when stale."""
        if not (text or "").strip():
            return None
        key = (text.strip().lower(), tuple(fields), self.version)
        if key != self._search:
            rows = self.session if self.session is not None else self.source
            self._matches = table.search(rows, text, fields=fields, progress=progress)
            self._search = key
        return self._matches


def resolve_spec(spec: str | None) -> str:
    """A dataset spec typed by the user, its path checked against the allowed roots.

    Relative paths are taken from the workspace, or from its datasets/ folder where the file
    is (a bare name finds what the app saved); `path[N]` keeps its `[N]`; `hub:org/name` is not
    a path and passes as it is.
    """
    text = (spec or "").strip()
    if not text:
        raise LongCtxError("give a dataset file (or pick one from the list)")
    if text.startswith(io.HUB_PREFIX):
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
