"""Opening datasets lazily in every format, `path[N]` sampling, and atomic saves with backups."""

from __future__ import annotations

import json
import os
import time

import pytest
from test_data_support import PAPER_ROWS, chat, write_jsonl

from core.data import io
from core.errors import LongCtxError


def test_jsonl_rows_lines_and_raw_bytes(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", PAPER_ROWS)
    src = io.open_source(str(path))
    assert (src.format, src.unit, len(src)) == ("jsonl", "line", len(PAPER_ROWS))
    lines = path.read_bytes().split(b"\n")
    for i in range(len(src)):
        assert src.raw(i) == lines[i]
        assert src.row(i).line == i + 1
    assert src.row(0).record["id"] == "a" and src.row(0).kind == "chat"
    assert src.row(1).record is None and src.row(1).problems[0].startswith("bad JSON")
    assert src.row(7).problems == ["empty line"]


def test_jsonl_without_final_newline_and_crlf(tmp_path):
    path = tmp_path / "d.json"  # the paper's files are JSONL named .json
    path.write_bytes(b'{"text": "a"}\r\n{"text": "b"}')
    src = io.open_source(str(path))
    assert src.format == "jsonl" and len(src) == 2
    assert src.raw(0) == b'{"text": "a"}' and src.raw(1) == b'{"text": "b"}'
    assert src.raw_line(0) == b'{"text": "a"}\r\n' and src.raw_line(1) == b'{"text": "b"}'
    assert [r.record["text"] for r in io.iter_raw(src)] == ["a", "b"]


def test_empty_file_has_no_rows(tmp_path):
    (tmp_path / "e.jsonl").write_bytes(b"")
    assert len(io.open_source(str(tmp_path / "e.jsonl"))) == 0


def test_first_rows_are_readable_while_indexing(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_CHUNK", 64)  # index in tiny steps
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i}"} for i in range(3000)])
    src = io.open_source(str(path), wait=False)
    deadline = time.monotonic() + 10
    while len(src) < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert src.row(0).record == {"text": "row 0"}
    src.wait()
    assert src.complete and len(src) == 3000 and src.row(2999).record == {"text": "row 2999"}


def test_json_array_items_by_structure(tmp_path):
    items = [
        chat("C", "Q?", "A", id=1),
        {"text": 'quotes " and \\ and ] } [ { , inside'},
        {"text": "x"},
    ]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(items, indent=2), encoding="utf-8")
    src = io.open_source(str(path))
    assert (src.format, src.unit, len(src)) == ("json", "item", 3)
    assert [src.row(i).record for i in range(3)] == items
    path.write_text('[{"text": "ok"}, {"text": }, {"text": "z"}]')
    src = io.open_source(str(path))
    assert len(src) == 3 and src.row(1).problems[0].startswith("bad JSON")
    path.write_text('[{"text": "a"}]\n{"text": "b"}\n')
    with pytest.raises(LongCtxError, match="more after the array's closing"):
        io.open_source(str(path))
    path.write_text('[{"text": "never closed"')
    with pytest.raises(LongCtxError, match="not closed"):
        io.open_source(str(path))


def test_parquet_and_save_to_disk(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [chat("C", "Q?", "A", id="p0"), chat("D", "Q2?", "B", id="p1")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", row_group_size=1)
    src = io.open_source(str(tmp_path / "d.parquet"))
    assert (src.format, len(src)) == ("parquet", 2)
    assert src.row(1).record == rows[1] and src.row(1).raw is None
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "arrow"))
    src = io.open_source(str(tmp_path / "arrow"))
    assert (src.format, len(src)) == ("arrow", 2)
    assert src.row(0).record == rows[0]


def test_sampling_syntax_is_seeded(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": str(i)} for i in range(100)])
    assert io.parse_spec(f"{path}[10]") == (str(path), 10)
    a = io.open_source(f"{path}[10]", seed=1)
    b = io.open_source(f"{path}[10]", seed=1)
    c = io.open_source(f"{path}[10]", seed=2)
    assert len(a) == 10 and a.indices == b.indices != c.indices
    assert a.indices == sorted(a.indices)
    assert a.row(0).record == {"text": str(a.indices[0])} and a.row(0).line == a.indices[0] + 1
    assert len(io.open_source(f"{path}[1000]")) == 100


def test_missing_paths_and_hub_offline(tmp_path):
    with pytest.raises(LongCtxError, match="no such file"):
        io.open_source(str(tmp_path / "nope.jsonl"))
    with pytest.raises(LongCtxError, match="network access"):
        io.open_source("someone/some-dataset")
    with pytest.raises(LongCtxError, match="no such file"):
        io.open_source("data/train.jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(LongCtxError, match="save_to_disk"):
        io.open_source(str(tmp_path / "folder"))


def test_file_changed_on_disk_is_detected(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}])
    src = io.open_source(str(path))
    path.write_text('{"text": "changed"}\n')
    with pytest.raises(LongCtxError, match="changed on disk"):
        src.row(0)


def test_atomic_write_keeps_a_backup(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"old\n")
    size = io.atomic_write(path, [b"new", b"\n"])
    assert size == 4 and path.read_bytes() == b"new\n"
    assert io.backup_path(path).read_bytes() == b"old\n"
    io.atomic_write(path, [b"newer\n"])
    assert io.backup_path(path).read_bytes() == b"new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "d.jsonl.bak"]


def test_atomic_write_failure_leaves_the_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"precious\n")

    def chunks():
        yield b"half"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.atomic_write(path, chunks())
    assert path.read_bytes() == b"precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]

    def no_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(OSError, match="I/O error"):
        io.atomic_write(path, [b"other\n"])
    assert path.read_bytes() == b"precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_write_jsonl_serialises_records(tmp_path):
    result = io.write_jsonl(tmp_path / "o.jsonl", [b'{"text": "raw"}', {"text": "é"}], backup=False)
    assert result.rows == 2 and result.backup is None
    assert (tmp_path / "o.jsonl").read_text(encoding="utf-8") == '{"text": "raw"}\n{"text": "é"}\n'


def test_validate_reports_every_problem_with_its_line(tmp_path):
    from test_data_support import PAPER_PROBLEMS

    seen = []
    result = io.validate(
        io.open_source(str(write_jsonl(tmp_path / "p.jsonl", PAPER_ROWS))),
        progress=lambda d, n: seen.append((d, n)),
    )
    assert [str(p) for p in result.problems] == PAPER_PROBLEMS
    assert (result.rows, result.kinds, result.bad_rows) == (9, {"chat": 2, "text": 1, "bad": 6}, 6)
    assert seen[-1] == (9, 9)
