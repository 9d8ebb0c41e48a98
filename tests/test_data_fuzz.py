"""Fuzz: no input makes the loader or the validator raise; problems are always reported instead."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from core.data import io, schema
from core.errors import LongCtxError

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
TURN = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "human", "", 3]),
        "content": st.one_of(st.text(max_size=10), st.integers()),
    }
)
RECORDS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"conversations": st.lists(st.one_of(TURN, JSON_VALUES), max_size=5)}),
    st.fixed_dictionaries({"text": JSON_VALUES}),
)


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_parse_without_raising(raw):
    record, problems = schema.parse(raw)
    assert (record is None) == bool(problems) or problems
    assert all(isinstance(p, str) and p for p in problems)


@settings(max_examples=400, deadline=None)
@given(value=RECORDS)
def test_any_json_value_validates_without_raising(value):
    raw = json.dumps(value).encode()
    record, problems = schema.parse(raw)
    assert schema.kind(record, problems) in ("chat", "text", "bad")
    if not problems:
        assert schema.kind(record) in ("chat", "text")
        schema.qa_pairs(record), schema.context(record)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.one_of(RECORDS.map(json.dumps), st.text(max_size=30)), max_size=8),
    ending=st.sampled_from(["\n", "\r\n", ""]),
)
def test_any_jsonl_file_opens_and_every_row_is_accounted_for(lines, ending):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.jsonl"
        body = "\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines)
        path.write_text(body + (ending if lines else ""), encoding="utf-8", errors="surrogatepass")
        src = io.open_source(str(path))
        rows = list(io.iter_raw(src))
        expected = len(path.read_bytes().splitlines()) if path.stat().st_size else 0
        assert len(rows) == expected
        assert all(r.record is not None or r.problems for r in rows)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=120) | RECORDS.map(lambda v: json.dumps([v, v]).encode()))
def test_any_json_array_file_opens_or_says_why(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.json"
        path.write_bytes(b"[" + raw.lstrip(b"[ \t\r\n\xef\xbb\xbf"))
        try:
            src = io.open_source(str(path))
        except LongCtxError as exc:
            assert str(exc).startswith("cannot read")
            return
        for i in range(len(src)):
            row = src.row(i)
            assert row.record is not None or row.problems
