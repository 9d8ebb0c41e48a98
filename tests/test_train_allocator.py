"""The allocator a CPU training process runs on (core/train/allocator.py)."""

from __future__ import annotations

import logging
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
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


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
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "True"


@pytest.mark.integration
def test_train_called_in_process_never_restarts_its_caller(tiny_llama_dir, tmp_path, capsys):
    from core.cli.main import main
    from core.train.config import DataSource, TrainConfig

    config = TrainConfig(
        name="in-process",
        model=str(tiny_llama_dir),
        quantization="none",
        precision="fp32",
        max_length=256,
        max_steps=1,
        global_batch_size=1,
        data=[DataSource(procedural="keys", n=2, length=120)],
    )
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    pid, level = os.getpid(), logging.getLogger().level
    try:
        assert main(["train", str(path)]) == 0  # a restart would have replaced this process
    finally:
        logging.getLogger().setLevel(level)  # `train` turns INFO on for its own output
    assert os.getpid() == pid and "completed at step 1" in capsys.readouterr().out
