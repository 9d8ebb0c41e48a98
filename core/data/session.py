"""The dataset one user has open for editing: its source, its edit session, its statistics under
the chosen model's tokenizer, and a full-text search that is recomputed only when stale.

The Data tab keeps one `Opened` per browser session; everything here works without the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.data import edit, io, stats, table
from core.data.stats import SampleStats
from core.errors import LongCtxError
from core.models import names, tokenizers


@dataclass
class Opened:
    """The dataset one browser session has open."""

    spec: str
    """What was opened (a resolved path, `path[N]` or `hub:...`)."""
    source: io.Source
    model: str = names.EMBEDDED
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
        return stats.measurer_for(tokenizers.cached_tokenizer(self.model), self.model)

    def measure(self, progress: io.Progress | None = None) -> None:
        """Statistics of the file (cached on disk), with the unsaved edits on top."""
        session = self.edits()
        self.base = stats.measure(
            session.source,
            tokenizers.cached_tokenizer(self.model),
            name=self.model,
            with_evidence=self.with_evidence,
            progress=progress,
            measurer=self.measurer(),
        )
        self.stats = self.base if not session.dirty else self.changed()

    def changed(self) -> stats.DatasetStats:
        """Re-measure after an edit (only the edited rows are tokenized again)."""
        self.version += 1
        self.stats = stats.refresh(
            self.base, self.edits(), self.measurer(), with_evidence=self.with_evidence
        )
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
