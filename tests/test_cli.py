"""The `longctx` command line and `app.py`: help, and refusals with one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_the_commands():
    result = _run("-m", "ui.cli", "--help")
    assert result.returncode == 0
    for command in ("app", "serve"):
        assert command in result.stdout


def test_public_address_without_auth_refuses_to_start():
    for args in (("-m", "ui.cli", "app"), ("app.py",)):
        result = _run(*args, "--host", "0.0.0.0", "--port", "7999")
        assert result.returncode == 1
        assert "give --auth user:password" in result.stderr
        assert "Traceback" not in result.stderr
