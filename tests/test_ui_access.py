"""A public app (a Space) in the browser: visitors are told what they may do, and the owner's
actions are refused with a reason while nothing is started or written."""

from __future__ import annotations

import pytest
from conftest import start_app

from core import workspace

pytestmark = pytest.mark.integration

OWNER_ONLY = "is for the owner of this app"


@pytest.fixture
def public_app(monkeypatch, embedded):
    monkeypatch.setenv("SPACE_ID", "alice/longctx-studio")
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "alice")
    monkeypatch.delenv("OAUTH_CLIENT_ID", raising=False)

    def start(auth=None):
        demo, url = start_app(auth=auth)
        started.append(demo)
        return url

    started = []
    yield start
    for demo in started:
        demo.close()


def _toast(page, text: str) -> str:
    toast = page.locator(".toast-body", has_text=text).first
    toast.wait_for(timeout=30000)
    return toast.inner_text()


def test_visitor_sees_the_limits_and_cannot_train_generate_or_evaluate_big(public_app, browser):
    runs_before = set(workspace.subdir("runs").iterdir())
    evals_before = set(workspace.subdir("evals").iterdir())
    page = browser.new_page()
    page.goto(public_app())
    page.locator("#access-note", has_text="Public demo").wait_for(timeout=30000)

    page.get_by_role("tab", name="Train").click()
    page.locator("#train-launch").click()
    assert "Sign in with Hugging Face as alice" in _toast(page, "Launching training " + OWNER_ONLY)
    assert set(workspace.subdir("runs").iterdir()) == runs_before

    page.get_by_role("tab", name="Generate").click()
    page.locator("#gen-run").click()
    _toast(page, "Generating data " + OWNER_ONLY)

    page.get_by_role("tab", name="Evaluate").click()
    lengths = page.locator("#eval-lengths textarea, #eval-lengths input").first
    lengths.fill("1000,16000")
    lengths.press("Tab")
    page.locator("#eval-plan", has_text="10 cells").wait_for(timeout=20000)
    page.locator("#eval-run").click()
    assert "16,000 tokens" in _toast(page, "Visitors may run up to")
    assert set(workspace.subdir("evals").iterdir()) == evals_before  # refused: nothing written
    page.close()


def test_the_apps_own_login_makes_the_owner(public_app, browser):
    page = browser.new_page()
    page.goto(public_app(auth=("alice", "s3cret-pass")))
    page.locator("input[type=password]").wait_for(timeout=30000)
    page.locator("input[type=text], input:not([type])").first.fill("alice")
    page.locator("input[type=password]").fill("s3cret-pass")
    page.get_by_role("button", name="Login").click()
    note = page.locator("#access-note", has_text="Signed in as")
    note.wait_for(timeout=30000)
    assert "alice" in note.inner_text() and "the owner" in note.inner_text()
    page.close()


def test_uploads_over_the_cap_are_refused(app_url):
    import httpx

    from ui.theme import MAX_UPLOAD

    cap = int(MAX_UPLOAD.removesuffix("mb")) * 1024 * 1024
    small = httpx.post(app_url + "gradio_api/upload", files={"files": ("ok.jsonl", b"{}\n")})
    assert small.status_code == 200 and small.json()
    big = httpx.post(
        app_url + "gradio_api/upload",
        timeout=60,
        files={"files": ("big.jsonl", b"x" * (cap + 1024))},
    )
    assert big.status_code == 413
