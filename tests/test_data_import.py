"""`longctx data import`: Alpaca / LongAlpaca, ShareGPT and OpenAI-messages files become valid
conversations with their metadata, and rows that do not convert are listed by line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.data.convert import RowError, convert_record, default_output

ROOT = Path(__file__).resolve().parent.parent
PAPER = "The paper begins. " + "Attention is computed over long inputs. " * 50 + "The paper ends."


def data(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", "data", *args],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _imported(source: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, list]:
    done = data("import", str(source), "--out", str(out), *extra)
    assert done.returncode == 0, done.stderr
    checked = data("validate", str(out))
    assert checked.returncode == 0, checked.stdout  # what it wrote is valid training data
    return done, [json.loads(line) for line in out.read_text().splitlines()]


def test_longalpaca_json_array_imports_with_its_metadata(tmp_path):
    # LongAlpaca-12k ships as one JSON array; its rows carry the paper's file name.
    rows = [
        {
            "instruction": PAPER + "\nSummarize the paper.",
            "input": "",
            "output": "It is long.",
            "file": "2307.00001.pdf",
        },
        {"instruction": "Translate.", "input": "Bonjour", "output": "Hello", "id": 7},
        {"instruction": "Answer nothing.", "output": ""},
    ]
    source = tmp_path / "LongAlpaca-12k.json"
    source.write_text(json.dumps(rows, indent=1))
    done, out = _imported(source, tmp_path / "longalpaca.jsonl")
    assert out[0] == {
        "conversations": [
            {"role": "user", "content": PAPER + "\nSummarize the paper."},
            {"role": "assistant", "content": "It is long."},
        ],
        "file": "2307.00001.pdf",
    }
    assert out[1]["conversations"][0]["content"] == "Translate.\n\nBonjour" and out[1]["id"] == 7
    assert done.stderr.splitlines() == ["skipped item 3: turn 2 (assistant) has empty content"]
    assert f"imported 2 of 3 rows (2 alpaca): {tmp_path / 'longalpaca.jsonl'}" in done.stdout


def test_sharegpt_jsonl_imports_and_lists_what_does_not_convert(tmp_path):
    rows = [
        {
            "id": "a1",
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": PAPER + "\n\nWhat begins?"},
                {"from": "gpt", "value": "The paper."},
                {"from": "human", "value": "And ends?"},
                {"from": "gpt", "value": "The paper too."},
            ],
        },
        {
            "id": "a2",
            "conversations": [
                {"from": "human", "value": "Call it."},
                {"from": "function_call", "value": "{}"},
            ],
        },
        "{not json",
        {
            "id": "a4",
            "conversations": [
                {"from": "gpt", "value": "Hi!"},
                {"from": "human", "value": "Hello."},
            ],
        },
    ]
    done, out = _imported(_jsonl(tmp_path / "share.jsonl", rows), tmp_path / "out.jsonl")
    assert len(out) == 1 and out[0]["id"] == "a1"
    assert [t["role"] for t in out[0]["conversations"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert out[0]["conversations"][2]["content"] == "The paper."
    skipped = done.stderr.splitlines()
    assert skipped[0] == "skipped line 2: turn 2: speaker 'function_call' has no role in our format"
    assert skipped[1].startswith("skipped line 3: bad JSON")
    assert skipped[2] == (
        "skipped line 4: first turn is not user (it is 'assistant'); last turn "
        "is a user question without an answer"
    )


def test_openai_messages_import(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "developer", "content": "Answer from the document."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": PAPER},
                        {"type": "text", "text": "\n\nHow long?"},
                    ],
                },
                {"role": "assistant", "content": "Very."},
            ],
            "source": "synthetic",
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                {"role": "assistant", "content": "A cat."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "tool", "content": "sunny"},
            ]
        },
    ]
    done, out = _imported(
        _jsonl(tmp_path / "chat.jsonl", rows), tmp_path / "out.jsonl", "--format", "openai"
    )
    assert out == [
        {
            "conversations": [
                {"role": "system", "content": "Answer from the document."},
                {"role": "user", "content": PAPER + "\n\nHow long?"},
                {"role": "assistant", "content": "Very."},
            ],
            "source": "synthetic",
        }
    ]
    assert done.stderr.splitlines() == [
        "skipped line 2: message 1 has non-text parts (['image_url'])",
        "skipped line 3: message 2: role 'tool' has no role in our format",
    ]


def test_rows_in_our_format_pass_and_clashing_keys_are_renamed():
    ours = {
        "conversations": [
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "A."},
        ],
        "task": "qa",
    }
    assert convert_record(ours) == (ours, "ours")
    # The original Alpaca release has a pre-rendered prompt under `text`.
    alpaca = {"instruction": "Q?", "output": "A.", "text": "### Instruction: Q? ### Response: A."}
    record, found = convert_record(alpaca)
    assert found == "alpaca" and record["original_text"] == alpaca["text"] and "text" not in record
    history = {"instruction": "And then?", "output": "B.", "history": [["First?", "A."]]}
    assert [t["content"] for t in convert_record(history)[0]["conversations"]] == [
        "First?",
        "A.",
        "And then?",
        "B.",
    ]
    with pytest.raises(RowError, match="not a sharegpt row"):
        convert_record(alpaca, "sharegpt")
    with pytest.raises(RowError, match="its keys: answer, question"):
        convert_record({"question": "Q?", "answer": "A."})


def test_default_output_never_overwrites_the_input(tmp_path):
    assert default_output("Yukang/LongAlpaca-12k", tmp_path) == tmp_path / "LongAlpaca-12k.jsonl"
    assert default_output("hub:org/set:train", tmp_path) == tmp_path / "set.jsonl"
    same = tmp_path / "mine.jsonl"
    assert default_output(str(same), tmp_path) == tmp_path / "mine.imported.jsonl"
