"""Evaluate → Compare extension methods in a real browser (headless Debian Chromium driven by
Playwright): the form's command preview, a comparison launched as a child process on the embedded
model, and its table and figure drawn from the folder as it fills."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.integration


def _fill(page, selector: str, text: str, shows: str) -> None:
    """Fill a box of the form and wait until the command preview `shows` the change. Once in a
    full CI run a fill right after the accordion opened was lost (the preview kept the default
    methods while later fills reached it), so a fill the preview never shows is made again."""
    box = page.locator(f"{selector} textarea, {selector} input").first
    preview = page.locator("#methods-command textarea")
    for _ in range(3):
        box.fill(text)
        box.press("Tab")
        try:
            expect(preview).to_have_value(re.compile(re.escape(shows)), timeout=20000)
            return
        except AssertionError:
            continue
    assert shows in preview.input_value(), (box.input_value(), preview.input_value())


def test_compare_methods_runs_from_the_tab(app_url, browser):
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#methods-panel").get_by_text("Compare extension methods").click()
    command = page.locator("#methods-command textarea")
    # The preview is there before any change: the defaults' command.
    assert "--methods none yarn:factor=4" in command.input_value()
    _fill(page, "#methods-list", "none\nlinear:factor=2", "--methods none linear:factor=2 ")
    _fill(page, "#methods-lengths", "256,512", "--lengths 256,512")
    page.get_by_label("NIAH grid too (slow on a CPU)").uncheck()
    page.wait_for_function(
        "() => document.querySelector('#methods-command textarea').value.includes('--no-niah')",
        timeout=30000,
    )
    assert "--methods none linear:factor=2 --lengths 256,512" in command.input_value()
    # A bad setting is shown in place of the command, with every problem.
    _fill(page, "#methods-list", "none\nyarn", "needs a factor")
    _fill(page, "#methods-list", "none\nlinear:factor=2", "--methods none linear:factor=2 ")
    page.locator("#methods-run").click()
    table = page.locator("#methods-table")
    # The child process loads the model and measures 4 windows; the timer redraws meanwhile.
    table.get_by_text("linear x2").wait_for(timeout=240000)
    page.wait_for_function(
        "() => /completed/.test(document.querySelector('#methods-status').innerText)"
        " || /failed/.test(document.querySelector('#methods-status').innerText)",
        timeout=240000,
    )
    status = page.locator("#methods-status").inner_text()
    assert "completed" in status, status
    rows = [
        line for line in table.inner_text().splitlines() if "as is" in line or "linear x2" in line
    ]
    assert len(rows) == 2 and "-" not in rows[1].split("\t")[1:3], rows
    page.locator("#methods-ppl .js-plotly-plot").wait_for(timeout=30000)
    assert page.locator("#methods-ppl .scatterlayer .trace").count() == 2
    page.close()
