"""Column-store datasets: Parquet files, `datasets.save_to_disk` folders and Hub datasets.

Rows are read one at a time from memory-mapped Arrow data (Parquet one row group at a time);
columns holding None for a row (keys the row does not have) are dropped, so a row reads as the
JSON object it was. Saving such a dataset after edits writes JSONL (see `edit`).

This module knows nothing about validation (the `Source` base class asks `schema`), tokenizers
or the UI.
"""

from __future__ import annotations

import bisect
import threading
from pathlib import Path
from typing import Any

from core.data.rows import HUB_PREFIX, Source
from core.errors import LongCtxError, first_line


def open_columnar(path_text: str, fmt: str) -> Source:
    """Open a `parquet` file, an `arrow` (save_to_disk) folder or a `hub` dataset."""
    path = Path(path_text).expanduser()
    if fmt == "parquet":
        return ParquetSource(path)
    if fmt == "arrow":
        return DatasetSource(str(path), _load_arrow(path), "arrow")
    return DatasetSource(path_text, _load_hub(path_text), "hub")


class _TableSource(Source):
    """Rows of an Arrow-backed table; None-valued columns (absent keys) are dropped."""

    unit = "row"

    def __init__(self, name: str, n_rows: int):
        super().__init__(name)
        self._n = n_rows
        self._done.set()

    def __len__(self) -> int:
        return self._n

    def _record(self, i: int) -> dict | None:
        return {k: v for k, v in self._get(i).items() if v is not None}

    def _get(self, i: int) -> dict:
        raise NotImplementedError


class ParquetSource(_TableSource):
    """A Parquet file, read one row group at a time."""

    format = "parquet"

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.path = path
        self._file = pq.ParquetFile(path)
        meta = self._file.metadata
        self._group_starts = [0]
        for g in range(meta.num_row_groups):
            self._group_starts.append(self._group_starts[-1] + meta.row_group(g).num_rows)
        self._cached: tuple[int, Any] | None = None
        self._lock = threading.Lock()
        super().__init__(str(path), meta.num_rows)

    def _get(self, i: int) -> dict:
        g = bisect.bisect_right(self._group_starts, i) - 1
        with self._lock:
            if self._cached is None or self._cached[0] != g:
                self._cached = (g, self._file.read_row_group(g))
            table = self._cached[1]
        return table.slice(i - self._group_starts[g], 1).to_pylist()[0]

    def identity(self) -> dict[str, Any]:
        st = self.path.stat()
        return {"path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class DatasetSource(_TableSource):
    """A `datasets.Dataset` (memory-mapped Arrow): a save_to_disk folder or a Hub dataset."""

    def __init__(self, name: str, dataset: Any, fmt: str):
        self.format = fmt
        self._ds = dataset
        super().__init__(name, len(dataset))

    def _get(self, i: int) -> dict:
        return self._ds[i]

    def identity(self) -> dict[str, Any]:
        fingerprint = getattr(self._ds, "_fingerprint", None)
        return {"name": self.name, "format": self.format, "fingerprint": fingerprint}


def _load_arrow(path: Path) -> Any:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    return loaded


def _load_hub(name: str) -> Any:
    from core.models.names import hub_reachable

    repo, _, split = name.removeprefix(HUB_PREFIX).partition(":")
    if not hub_reachable():
        raise LongCtxError(
            f"Hub dataset {repo!r} needs network access to huggingface.co; download it on a "
            "connected machine (datasets save_to_disk or JSONL) and open the file instead"
        )
    import datasets

    try:
        return datasets.load_dataset(repo, split=split or "train")
    except Exception as exc:
        reason = first_line(exc)
        raise LongCtxError(f"cannot load Hub dataset {repo!r}: {reason}") from exc
