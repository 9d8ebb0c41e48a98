"""Editing: every change undoable; saving rewrites only what was edited, atomically, with a backup."""

from __future__ import annotations

import json
import os

import pytest
from test_data_support import PAPER_ROWS, chat, write_jsonl

from core.data import io
from core.data.edit import EditSession
from core.errors import ConfigError, LongCtxError


@pytest.fixture
def paper(tmp_path):
    path = write_jsonl(tmp_path / "paper.jsonl", PAPER_ROWS, newline_at_end=False)
    return path, EditSession(io.open_source(str(path)))


def test_save_rewrites_only_edited_rows(paper):
    path, session = paper
    before = path.read_bytes()
    old_lines = before.split(b"\n")
    session.set_turn(0, 1, content="On a hill, they say.")
    session.add_turn(2, "user", "And then?")
    session.add_turn(2, "assistant", "Nothing.")
    session.remove_turn(2, 4)
    session.remove_turn(2, 4)
    session.set_turn(2, 3, content="Tides and winds.")
    copy_at = session.duplicate(4)
    session.delete(5 + 1)  # the {"id": "c"} row, shifted by the duplicate
    assert session.dirty and len(session) == 9
    result = session.save()
    assert result.rows == 9 and result.backup == io.backup_path(path)
    assert result.backup.read_bytes() == before
    new_lines = path.read_bytes().split(b"\n")
    assert new_lines == [
        new_lines[0],  # edited
        old_lines[1],  # malformed, untouched: same bytes
        new_lines[2],  # edited
        old_lines[3],
        old_lines[4],
        old_lines[4],  # the duplicate, byte for byte
        old_lines[6],
        old_lines[7],  # the empty line stays
        old_lines[8],  # was last without a newline, still last without one
    ]
    assert copy_at == 5
    assert json.loads(new_lines[0])["conversations"][1]["content"] == "On a hill, they say."
    edited = json.loads(new_lines[2])
    assert [t["content"] for t in edited["conversations"]][1:] == [
        "At dawn.",
        "Why?",
        "Tides and winds.",
    ]
    assert edited["id"] == "b"  # metadata kept
    assert not session.dirty and len(session) == 9  # the session continues on the saved file


def test_untouched_file_saves_byte_identical(paper):
    path, session = paper
    before = path.read_bytes()
    session.save()
    assert path.read_bytes() == before


def test_undo_reverts_each_change(paper):
    path, session = paper
    first = session.record(0)
    session.set_turn(0, 0, role="user", content="Changed context.\n\nQ?")
    session.duplicate(0)
    session.delete(3)
    session.append({"text": "new"})
    assert session.history == [
        "edit turn 1 of sample 0",
        "duplicate sample 0",
        "delete sample 3",
        "add a sample",
    ]
    undone = [session.undo() for _ in range(4)]
    assert undone == [
        "add a sample",
        "delete sample 3",
        "duplicate sample 0",
        "edit turn 1 of sample 0",
    ]
    assert session.undo() is None and not session.dirty
    assert session.record(0) == first and len(session) == len(PAPER_ROWS)
    before = path.read_bytes()
    session.save()
    assert path.read_bytes() == before


def test_several_samples_go_in_one_change_and_come_back_in_place(paper):
    path, session = paper
    records = [session.record(i) for i in range(len(session))]
    session.set_record(1, {"text": "Edited before the deletion."})
    edited = session.record(1)
    assert session.delete_many([len(session) - 1, 0, 1, 0]) == 3  # any order, repeats once
    assert session.history[-1] == "delete 3 samples"
    assert [session.record(i) for i in range(len(session))] == records[2:-1]
    with pytest.raises(LongCtxError, match="no sample 99"):
        session.delete_many([0, 99])
    assert len(session) == len(records) - 3  # a bad index deletes nothing
    assert session.undo() == "delete 3 samples"
    assert [session.record(i) for i in range(len(session))] == [records[0], edited, *records[2:]]
    session.delete_many([0, 1])
    session.save()
    saved = EditSession(io.open_source(str(path)))
    assert [saved.record(i) for i in range(len(saved))] == records[2:]


def test_malformed_rows_are_reported_and_can_be_fixed(paper):
    path, session = paper
    problems = [str(p) for p in session.problems()]
    assert problems[0].startswith("line 2: bad JSON")
    with pytest.raises(LongCtxError, match="not valid JSON; replace it"):
        session.set_turn(1, 0, content="x")
    with pytest.raises(LongCtxError, match="bad JSON"):
        session.set_json(1, '{"text": ')
    session.set_json(1, json.dumps(chat("Fixed.", "Q?", "A.")))
    assert not any(p.startswith("line 2") for p in map(str, session.problems()))
    session.set_turn(3, 0, role="user")
    session.set_turn(3, 1, role="assistant")
    session.add_turn(3, "user", "Hello?", position=0)
    reasons = [str(p) for p in session.problems() if p.unit == "edited row"]
    assert reasons == [
        "edited row 4: roles do not alternate user/assistant: turn 2 is 'user' after 'user'"
    ]


def test_refusals_say_what_to_do(paper, tmp_path):
    path, session = paper
    with pytest.raises(ConfigError, match="role must be one of"):
        session.set_turn(0, 0, role="human")
    with pytest.raises(LongCtxError, match="has no turn 9"):
        session.remove_turn(0, 8)
    with pytest.raises(LongCtxError, match="not a text sample"):
        session.set_text(0, "x")
    with pytest.raises(LongCtxError, match="no sample 99"):
        session.delete(99)
    sampled = EditSession(io.open_source(f"{path}[3]"))
    with pytest.raises(LongCtxError, match="save it to a new file"):
        sampled.save()
    with pytest.raises(LongCtxError, match="drop the rows not sampled"):
        sampled.save(path)
    out = sampled.save(tmp_path / "sample.jsonl")
    assert out.rows == 3 and out.backup is None


def test_save_refuses_a_file_changed_on_disk(paper):
    path, session = paper
    session.set_turn(0, 1, content="x")
    with open(path, "ab") as f:
        f.write(b"\n{}")
    with pytest.raises(LongCtxError, match="changed on disk"):
        session.save()


def test_a_failing_save_changes_nothing(paper, monkeypatch):
    path, session = paper
    before = path.read_bytes()
    session.set_turn(0, 1, content="x")
    session.set_record(2, {"text": "y", "bad": {1, 2}})  # a set cannot be written as JSON
    with pytest.raises(TypeError):
        session.save()
    assert path.read_bytes() == before and not io.backup_path(path).exists()
    session.undo()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        session.save()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["paper.jsonl"]
    assert session.dirty  # nothing lost: save again once the disk is fixed


def test_json_array_source_saves_as_jsonl(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    session = EditSession(io.open_source(str(path)))
    with pytest.raises(LongCtxError, match="save the edited dataset to a .jsonl"):
        session.save()
    session.set_text(1, "B")
    session.save(tmp_path / "a.jsonl")
    assert (tmp_path / "a.jsonl").read_text() == '{"text": "a"}\n{"text": "B"}\n'


def test_crlf_files_stay_crlf(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n{"text": "b"}\r\n')
    session = EditSession(io.open_source(str(path)))
    session.set_text(0, "A")
    session.set_text(1, "B")
    session.append({"text": "c"})
    session.save()
    assert path.read_bytes() == b'{"text": "A"}\r\n{"text": "B"}\r\n{"text": "c"}\r\n'
