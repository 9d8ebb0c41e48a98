"""Running as a public app (a Hugging Face Space): who is the owner, what visitors may run,
where the workspace lives, and the launch rules for public addresses."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from core import workspace
from core.hosting import space

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def on_space(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "alice/longctx-studio")
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "Alice")
    monkeypatch.delenv("LONGCTX_OWNERS", raising=False)


def test_off_a_space_the_local_user_may_do_everything(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("LONGCTX_PUBLIC", raising=False)
    assert not space.restricted()
    assert space.Visitor().is_owner
    assert space.Visitor().refusal("Launching training") is None


def test_on_a_space_only_the_author_or_the_apps_login_is_the_owner(on_space, monkeypatch):
    assert space.restricted()
    assert not space.Visitor().is_owner
    assert not space.Visitor(hf_user="mallory").is_owner
    assert space.Visitor(hf_user="alice").is_owner  # Hub names compare case-insensitively
    assert space.Visitor(auth_user="whoever-has-the-password").is_owner
    why = space.Visitor(hf_user="mallory").refusal("Launching training")
    assert why.startswith("Launching training is for the owner")
    assert "signed in as mallory" in why and "as alice" in why
    monkeypatch.setenv("LONGCTX_OWNERS", "bob, carol")
    assert space.Visitor(hf_user="carol").is_owner


def test_public_flag_restricts_a_self_hosted_app(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("LONGCTX_PUBLIC", "1")
    assert space.restricted()
    assert not space.Visitor().is_owner  # no author, no login: nobody trains on a public demo


def test_public_limits_allow_small_local_grids_only():
    limits = space.PublicLimits(max_length=8192, max_cells=40)
    assert limits.refusal(cells=40, longest=8192, paid=False) is None
    assert "41 cells" in limits.refusal(cells=41, longest=1000, paid=False)
    assert "16,384 tokens" in limits.refusal(cells=4, longest=16384, paid=False)
    assert "API endpoint" in limits.refusal(cells=1, longest=100, paid=True)


def test_tasks_report_their_longest_prompt():
    from core.evals.niah import NiahConfig
    from core.evals.retrieval import PasskeyConfig, TopicsConfig

    assert NiahConfig(lengths=[1000, 4000], depths=[0, 50]).longest() == 4000
    assert PasskeyConfig(lengths=[2000, 500]).longest() == 2000
    assert TopicsConfig(n_topics=[2, 8], turn_tokens=300).longest() == 2400


def test_persistent_storage_becomes_the_workspace_on_a_space(on_space, monkeypatch, tmp_path):
    storage = tmp_path / "data"
    storage.mkdir()
    monkeypatch.setattr(space, "PERSISTENT_STORAGE", storage)
    monkeypatch.delenv("LONGCTX_HOME", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    assert workspace.home() == storage / "longctx-studio"
    assert (storage / "longctx-studio" / "runs").is_dir()
    space.keep_downloads_persistent()
    assert Path(space.os.environ["HF_HOME"]) == storage / ".huggingface"
    # An explicit LONGCTX_HOME still wins; off a Space /data is never taken.
    monkeypatch.setenv("LONGCTX_HOME", str(tmp_path / "mine"))
    assert workspace.home() == tmp_path / "mine"
    monkeypatch.delenv("SPACE_ID")
    assert space.persistent_home() is None


def test_without_the_spaces_package_gpu_work_runs_as_is(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import fails as if not installed

    def work(x):
        return x + 1

    assert space.gpu(30)(work) is work


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.mark.integration
def test_public_demo_listens_on_all_addresses_without_a_login():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--host", "0.0.0.0", "--port", str(port), "--public"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_http(f"http://127.0.0.1:{port}/", proc) == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.integration
def test_on_zero_gpu_an_evaluation_runs_in_the_gpu_function_from_its_folder(
    monkeypatch, tmp_path, embedded
):
    from core.evals import jobs as evaluate_jobs
    from core.evals.backends import Target
    from core.evals.retrieval import PasskeyConfig
    from core.evals.runner import Evaluation
    from core.models.loader import ModelSpec

    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    folders = []
    on_gpu = evaluate_jobs._evaluate_on_gpu
    monkeypatch.setattr(evaluate_jobs, "_evaluate_on_gpu", lambda p: folders.append(p) or on_gpu(p))
    evaluation = Evaluation(
        PasskeyConfig(lengths=[300], depths=[0, 100], max_new_tokens=8),
        Target(ModelSpec()),
        out=tmp_path / "ev",
    )
    job = evaluate_jobs.start(["zero-gpu-session"], evaluation)
    job.thread.join(timeout=300)
    assert folders == [str(evaluation.path)]  # rebuilt from its folder, not handed the object
    assert job.state == "completed" and job.done == job.total == 2
    assert len(Evaluation.open(evaluation.path).cells()) == 2
