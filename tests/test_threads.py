"""The thread budget: real processes, real run folders and claim files, no stand-ins.

A "training run" here is a run folder whose status.json names a live process (a child that
sleeps), exactly what `core.threads` reads; the serving process is a child Python that claims
its budget the way `longctx serve` does. The end-to-end test trains the tiny Llama next to it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core import threads, workspace
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
N = threads.cores()


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _fake_status_run(name: str, pid: int, state: str = "running", device: str = "cpu") -> Path:
    run = workspace.subdir("runs") / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "status.json").write_text(json.dumps({"state": state, "pid": pid, "device": device}))
    return run


def test_settings_win_and_bad_ones_say_so(monkeypatch):
    assert threads.plan("serve", setting=3) == threads.Budget(3, "3 (set in its configuration)")
    monkeypatch.setenv(threads.ENV, "2")
    assert threads.plan("train").threads == 2 and threads.ENV in threads.plan("train").reason
    assert threads.parse_setting("0", "--threads") is None  # 0: the budget decides
    with pytest.raises(ConfigError, match="--threads must be a whole number of threads"):
        threads.parse_setting("-2", "--threads")
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(ConfigError, match=threads.ENV):
        threads.plan("serve")


def test_a_training_run_takes_most_cores_and_gives_them_back_when_it_ends():
    assert threads.plan("serve").threads == N  # nothing else: everything
    trainer = _sleeper()
    run = _fake_status_run("budget-run", trainer.pid)
    try:
        shared = threads.plan("serve")
        assert shared.threads == threads.reserve(N) and "budget-run" in shared.reason
        # Other runs' states do not count: finished, or on a GPU.
        _fake_status_run("gpu-run", trainer.pid, device="cuda")
        _fake_status_run("done-run", os.getpid(), state="completed")
        assert threads.plan("eval").threads == threads.reserve(N)
    finally:
        trainer.kill()
        trainer.wait()
    assert threads.plan("serve").threads == N  # its process is gone: the cores come back
    for name in ("budget-run", "gpu-run", "done-run"):
        shutil.rmtree(run.parent / name)


def test_governor_applies_on_its_thread_and_claims_until_closed():
    gov = threads.Governor("eval", setting=1, every_s=0)
    try:
        assert gov.tick().threads == 1 and torch.get_num_threads() == 1
        mine = [c for c in threads.claims() if c["pid"] == os.getpid()]
        assert [(c["kind"], c["busy"]) for c in mine] == [("eval", False)]
        with gov.computing():  # busy however long a forward pass takes, ticks or not
            assert [c["busy"] for c in threads.claims() if c["pid"] == os.getpid()] == [True]
        assert [c["busy"] for c in threads.claims() if c["pid"] == os.getpid()] == [False]
    finally:
        gov.close()
    assert not [c for c in threads.claims() if c["pid"] == os.getpid()]


def test_an_idle_server_leaves_a_training_run_every_core():
    server = _sleeper()
    claim = threads._claims_dir() / f"{server.pid}-serve.json"
    claim.parent.mkdir(parents=True, exist_ok=True)
    try:
        shared, stale = max(1, N - threads.reserve(N)), time.time() - threads.IDLE_S - 1
        for active, busy, expected in (
            (time.time(), False, shared),
            (stale, True, shared),
            (stale, False, N),
        ):
            claim.write_text(
                json.dumps({"pid": server.pid, "kind": "serve", "active": active, "busy": busy})
            )
            assert threads.plan("train").threads == expected, (active, busy)
    finally:
        server.kill()
        server.wait()
    threads.claims()  # its process is gone: the claim file is swept away
    assert not claim.exists()


@pytest.mark.integration
def test_cpu_training_next_to_a_server_gets_its_share_and_says_so(tiny_llama_dir, tmp_path):
    from test_train_run import tiny_config

    from core.train import runs

    # A serving process, claiming as `longctx serve` does (a real process, then killed).
    code = (
        "from core import threads; import time\n"
        "threads.governor('serve')\n"
        "while True: threads.tick(); time.sleep(0.5)"
    )
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not any(c["pid"] == server.pid for c in threads.claims()):
            assert time.monotonic() < deadline and server.poll() is None, "no claim appeared"
            time.sleep(0.1)
        # The budget it will get, by the same rules the training child applies.
        expected = max(1, N - threads.reserve(N)) if N > 1 else 1
        run_dir = runs.launch(tiny_config(tiny_llama_dir, name="shared", max_steps=2))
        final = runs.wait(run_dir, timeout=600)
        assert final["state"] == "completed", runs.tail_log(run_dir)
    finally:
        server.kill()
        server.wait()
    status = runs.read_status(run_dir)
    assert status["threads"] == expected and "serve" in status["threads_reason"]
    shown = subprocess.run(
        [sys.executable, "-m", "core.cli", "runs", "show", run_dir.name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"threads          {status['threads_reason']}" in shown.stdout, shown.stdout
