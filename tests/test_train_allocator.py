"""The allocator a CPU training process runs on (core/train/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.train import allocator

ROOT = Path(__file__).resolve().parent.parent

needs_library = pytest.mark.skipif(
    allocator.find() is None or not sys.platform.startswith("linux"),
    reason="neither tcmalloc nor jemalloc is installed (make setup installs libtcmalloc-minimal4 "
    "where apt-get exists)",
)


def _maps_of_child(env: dict[str, str]) -> str:
    code = "print(open('/proc/self/maps').read())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


@needs_library
def test_child_env_preloads_the_library_into_the_child():
    env = allocator.child_env({k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    soname = allocator.find()
    assert env["LD_PRELOAD"] == soname and env["LONGCTX_ALLOCATOR_ACTIVE"] == soname
    assert soname.split(".so")[0] in _maps_of_child(env)
    assert allocator.child_env(env) is env  # already prepared: nothing stacked twice


def test_system_setting_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("LONGCTX_ALLOCATOR", "system")
    env = {"PATH": os.environ["PATH"]}
    assert allocator.child_env(env) is env
    assert allocator.tune_glibc() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_glibc_fallback_takes_effect():
    # In a child: it changes how the whole process allocates, so not in the test runner.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGCTX_ALLOCATOR")}
    code = "from core.train import allocator; print(allocator.tune_glibc())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout  # fmt: skip
    assert out.strip() == "True"
