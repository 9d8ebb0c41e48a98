"""The Generate tab in a real browser: headless Debian Chromium driven by Playwright.

A procedural set made from the tab lands on disk as a valid dataset and shows in the preview
(and a reload finds the job again); a dry run prices a single-detail run on the built-in corpus;
a tiny real run against the embedded model moves and stops on Stop.
Skipped (with the reason) where /usr/bin/chromium is not installed.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SHOTS = Path(tempfile.gettempdir()) / "longctx-shots"
SHOTS.mkdir(exist_ok=True)


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Generate").click()
    return page


def _pick_task(page, label: str) -> None:
    page.locator("#gen-task label", has_text=label).click()


def _set(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.fill(str(value))
    box.press("Tab")


def test_procedural_keys_set_is_written_and_previewed(app_url, browser, workspace_home):
    from core.data import io

    page = _open(browser, app_url)
    _pick_task(page, "Multi-key")
    page.locator("#gen-depths").wait_for(state="visible")
    assert not page.locator("#gen-dry").is_visible()  # no API, nothing to price
    _set(page, "gen-n", 3)
    _set(page, "gen-length", 300)
    _set(page, "gen-depths", "10 90")
    page.locator("#gen-run").click()
    status = page.locator("#gen-status")
    status.get_by_text("completed", exact=True).wait_for(timeout=90_000)
    assert "3/3 samples" in status.inner_text()
    path = Path(page.locator("#gen-output textarea").input_value())
    assert path == workspace_home / "datasets" / "keys-300.jsonl"
    check = io.validate(io.open_source(path))
    assert check.rows == 3 and not check.problems
    preview = page.locator("#gen-preview .gen-sample")
    assert preview.count() == 3
    assert "keys-0-2" in preview.first.inner_text()  # newest first
    assert "What is the value of key" in preview.first.inner_text()
    page.screenshot(path=str(SHOTS / "generate-keys.png"), full_page=True)

    # The result opens in the Data tab in one click.
    page.locator("#gen-to-data").click()
    page.locator(".data-status", has_text="keys-300.jsonl").wait_for(timeout=60_000)
    assert page.get_by_role("tab", name="Data", selected=True).count() == 1
    page.get_by_role("tab", name="Generate").click()

    # A reload is a new gradio session; the browser remembers its job and shows it again.
    page.reload()
    page.get_by_role("tab", name="Generate").click()
    page.locator("#gen-status").get_by_text("completed", exact=True).wait_for(timeout=20_000)
    assert page.locator("#gen-output textarea").input_value() == str(path)
    page.close()


def test_dry_run_prices_single_detail_on_the_builtin_corpus(app_url, browser):
    page = _open(browser, app_url)
    _set(page, "gen-n_docs", 2)
    _set(page, "gen-price_in", 2.5)
    _set(page, "gen-price_out", 10)
    page.locator("#gen-check").click()
    page.locator("#gen-source-info").get_by_text("documents").wait_for(timeout=60_000)
    page.locator("#gen-dry").click()
    estimate = page.locator("#gen-estimate")
    estimate.get_by_text("requests to send").wait_for(timeout=60_000)
    text = estimate.inner_text()
    assert "2 contexts" in text
    head = text.split("requests to send")[0].split()
    assert int(head[-1]) > 0, text
    assert "cost at most $0.0" in text and "(no prices set)" not in text
    # The dry run sends nothing: no server was started for the embedded generator.
    assert page.locator("#gen-base_url textarea, #gen-base_url input").first.input_value() == ""
    page.screenshot(path=str(SHOTS / "generate-dry-run.png"), full_page=True)
    page.close()


def test_the_paper_prompt_set_fills_its_settings_and_asks_once_per_context(app_url, browser):
    page = _open(browser, app_url)
    note = page.locator("#gen-length-note").inner_text()
    assert "dropped at training" in note and "80K" in note
    _set(page, "gen-n_docs", 2)
    page.locator("#gen-prompt_set label", has_text="Paper").click()

    def value(elem_id: str) -> str:
        return page.locator(f"#{elem_id} input").first.input_value()

    page.wait_for_function("document.querySelector('#gen-temperature input').value === '0'")
    assert value("gen-qa_per_chunk") == "4" and value("gen-answer_tokens") == "4096"
    _pick_task(page, "Multi-detail QA")
    page.wait_for_function("document.querySelector('#gen-qa_per_chunk input').value === '10'")
    command = page.locator("#gen-command textarea")
    page.wait_for_function(
        "document.querySelector('#gen-command textarea').value.includes('--prompt-set paper')"
    )
    assert "--temperature" not in command.input_value()  # the set's own 0
    page.locator("#gen-dry").click()
    estimate = page.locator("#gen-estimate")
    estimate.get_by_text("requests to send").wait_for(timeout=60_000)
    text = estimate.inner_text()
    assert "2 contexts" in text and "2 requests now" in text, text  # the whole context, once
    page.close()


def test_a_folder_of_pdfs_and_books_is_counted_and_unreadable_files_named(
    app_url, browser, tmp_path
):
    from conftest import make_epub, make_pdf

    from core import workspace

    line = "The harbour master counted ships, tides and storms in a long and careful ledger"
    make_pdf(tmp_path / "ledger.pdf", [[f"{line} {i}." for i in range(30)]])
    make_epub(tmp_path / "novel.epub", [("one.xhtml", "<p>" + "A quiet chapter. " * 200 + "</p>")])
    make_pdf(tmp_path / "scan.pdf", [[]])
    workspace.allow_root(tmp_path)  # as `python app.py --allow DIR` does
    page = _open(browser, app_url)
    page.locator("#gen-source-kind label", has_text="A folder or file").click()
    _set(page, "gen-source", tmp_path)
    page.locator("#gen-check").click()
    info = page.locator("#gen-source-info")
    info.get_by_text("2 documents").wait_for(timeout=60_000)
    assert "1 file left out" in info.inner_text()
    assert "scan.pdf has no text layer" in info.inner_text()

    # The same folder makes plain-text samples (the RedPajama part of the paper's mix).
    _pick_task(page, "Text from documents")
    assert page.locator("#gen-source").is_visible() and not page.locator("#gen-depths").is_visible()
    _set(page, "gen-n", 3)
    _set(page, "gen-length", 200)
    _set(page, "gen-out", "books-text.jsonl")
    command = page.locator("#gen-command textarea")
    page.wait_for_function(
        "() => (document.querySelector('#gen-command textarea')?.value || '').includes('--length 200')",
        timeout=20_000,
    )
    assert command.input_value().startswith("longctx data make text --n 3 --length 200")
    assert f"--source {tmp_path}" in command.input_value()
    page.locator("#gen-run").click()
    page.locator("#gen-status").get_by_text("completed", exact=True).wait_for(timeout=60_000)
    written = Path(page.locator("#gen-output textarea").input_value())
    rows = [json.loads(line) for line in written.read_text().splitlines()]
    assert len(rows) == 3 and all(r["task"] == "text" and r["text"] for r in rows)
    assert {r["source"] for r in rows} <= {"ledger.pdf", "novel.epub"}
    assert "text-0-0" in page.locator("#gen-preview").inner_text()
    page.close()


def _requests(status: str) -> tuple[int, int]:
    """(done, total) from the status line, e.g. `running single-detail · 2/6 requests · ...`."""
    found = re.search(r"(\d+)/(\d+) requests", status)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def test_embedded_run_moves_and_stops(app_url, browser, embedded):
    page = _open(browser, app_url)
    # Small contexts and short answers: the embedded model is slow on a CPU.
    for elem_id, value in [
        ("gen-n_docs", 2),
        ("gen-min_tokens", 100),
        ("gen-max_tokens", 240),
        ("gen-chunk_tokens", 120),
        ("gen-qa_per_chunk", 1),
        ("gen-answer_tokens", 32),
        ("gen-concurrency", 1),
        ("gen-out", "ui-stop.jsonl"),
    ]:
        _set(page, elem_id, value)
    page.locator("#gen-run").click()
    status = page.locator("#gen-status")
    status.get_by_text("running", exact=True).wait_for(timeout=60_000)
    assert page.locator("#gen-base_url textarea, #gen-base_url input").first.input_value()
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 1:  # a request finished: progress moved
        time.sleep(0.5)
        done, total = _requests(status.inner_text())
    assert done >= 1
    page.locator("#gen-stop").click()
    status.get_by_text("stopped", exact=True).wait_for(timeout=120_000)
    done, total = _requests(status.inner_text())
    assert done < total  # it did not run to the end
    assert page.locator("#gen-output textarea").input_value().endswith("ui-stop.jsonl")
    assert page.locator("#gen-failures textarea").input_value().endswith(".failures.jsonl")
    page.screenshot(path=str(SHOTS / "generate-stopped.png"), full_page=True)
    page.close()


def test_depths_out_of_range_are_a_form_error_not_a_failed_job():
    from core.errors import LongCtxError
    from ui.generate.values import depths

    assert depths("0, 50 100") == [0.0, 50.0, 100.0] and depths("  ") is None
    for text in ("150", "-5", "middle"):
        with pytest.raises(LongCtxError, match="depths must be numbers from 0 to 100"):
            depths(text)
