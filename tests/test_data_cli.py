"""`longctx data ...` run as a real process: exit codes and the exact lines it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_data_support import PAPER_PROBLEMS, PAPER_ROWS, chat, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", "data", *args],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_validate_lists_every_problem_and_exits_1(tmp_path):
    path = write_jsonl(tmp_path / "paper.jsonl", PAPER_ROWS)
    proc = run("validate", str(path))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == PAPER_PROBLEMS
    assert "8 problem(s) in 6 of 9 rows" in proc.stderr


def test_validate_ok_exits_0(tmp_path):
    path = write_jsonl(tmp_path / "good.jsonl", [chat("C", "Q?", "A."), {"text": "T"}])
    proc = run("validate", str(path))
    assert (proc.returncode, proc.stdout) == (0, "ok: 2 samples (1 chat, 1 text)\n")


def test_missing_file_is_one_line_error(tmp_path):
    proc = run("validate", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"longctx data: error: no such file: '{tmp_path / 'nope.jsonl'}'"


@pytest.mark.integration
def test_stats_json_and_text(tmp_path, workspace_home):
    from test_data_support import embedded_tokenizer

    rows = [chat("The sea is calm. " * 20, "How is the sea?", "Calm.", task="qa"), "{broken"]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    proc = run("stats", str(path), "--max-length", "50", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    expected = len(
        embedded_tokenizer().apply_chat_template(rows[0]["conversations"], tokenize=True)[
            "input_ids"
        ]
    )
    assert data["rows"][0]["total_tokens"] == expected
    assert (data["samples"], data["malformed"], data["over_max_length"]) == (2, 1, 1)
    proc = run("stats", str(path), "--max-length", "50")
    assert proc.returncode == 0
    assert "1 samples over (100.0 %)" in proc.stdout and "read from cache" in proc.stdout
    proc = run("show", str(path), "0")
    assert proc.returncode == 0 and "⟦Calm.<|im_end|>⟧" in proc.stdout


def test_mix(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}"} for i in range(10)] + ["bad"])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(10)])
    out = tmp_path / "m.jsonl"
    proc = run("mix", str(out), f"{a}:4", f"{b}:50%", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote 8 samples to {out}" in proc.stdout
    assert proc.stderr.startswith(f"skipped {a}: line 11: bad JSON")
    assert len(out.read_text().splitlines()) == 8
