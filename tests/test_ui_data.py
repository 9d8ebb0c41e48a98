"""The Data tab in a real browser (headless Debian Chromium), and its small path helpers.

The browser test opens a JSONL in the paper's format with broken rows mixed in, checks every
broken row is listed by line number, edits one answer through the UI, saves, reloads the page,
re-opens the file and sees the edit; on disk only that line changed and the backup holds the
old file. It also checks the table's token count against `apply_chat_template`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect
from test_ui_browser import SHOTS

pytestmark = pytest.mark.integration
NEW_ANSWER = "The lighthouse keeper's number is 4711."


def _chat(rng: random.Random, k: int) -> dict:
    from core.synth.procedural import filler_sentence

    context = " ".join(filler_sentence(rng) for _ in range(40))
    return {
        "id": f"ok-{k}",
        "task": "qa",
        "conversations": [
            {"role": "user", "content": f"{context}\n\nWhat does the river do? ({k})"},
            {"role": "assistant", "content": f"It drifts past the stone bridge ({k})."},
            {"role": "user", "content": "And the orchard?"},
            {"role": "assistant", "content": "It waits beside the hill path."},
        ],
    }


def _broken_file(folder: Path) -> Path:
    rng = random.Random(3)
    good = [json.dumps(_chat(rng, k)) for k in range(5)]
    lines = [
        good[0],
        good[1],
        '{"conversations": [{"role": "user", "content": "cut off"',  # 3: bad JSON
        good[2],
        json.dumps(
            {
                "conversations": [
                    {"role": "user", "content": "a"},  # 5: not alternating
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            }
        ),
        json.dumps(
            {
                "conversations": [
                    {"role": "user", "content": "q"},  # 6: empty answer
                    {"role": "assistant", "content": "  "},
                ]
            }
        ),
        good[3],
        json.dumps({"id": "meta-only", "source": "nowhere"}),  # 8: neither
        good[4],
    ]
    path = folder / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait_text(page, selector: str, text: str, timeout: float = 60) -> None:
    page.wait_for_function(
        "([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
        arg=[selector, text],
        timeout=timeout * 1000,
    )


def _open(page, path: Path, rows: int) -> None:
    """Type a path in the Dataset box, press Open, wait until it is measured."""
    _wait_text(page, "#data-status", "samples (")  # the sample opened on load first
    box = page.locator("#data-path input")
    box.fill(str(path))
    box.press("Enter")
    page.locator("#data-open").click()
    _wait_text(page, "#data-status", f"{path.name} · {rows} samples (")
    # Named from its root (the workspace), not by the server's absolute path.
    status = page.locator("#data-status .data-status").inner_text()
    assert status.startswith("workspace/") and str(path.parent) not in status, status


def _cell(page, row: int, col: int) -> str:
    return page.locator(f'#data-table [data-testid="cell-{row}-{col}"]').inner_text().strip()


def test_broken_rows_listed_edit_saved_and_back_after_reload(app_url, browser):
    from core.data import io
    from core.models.tokenizers import cached_tokenizer as tokenizer

    home = Path(os.environ["LONGCTX_HOME"])
    path = _broken_file(home / "datasets")
    before = path.read_bytes()
    expected = [str(p) for p in io.validate(io.open_source(str(path))).problems]
    assert {p.split(":")[0] for p in expected} == {"line 3", "line 5", "line 6", "line 8"}

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    _open(page, path, 9)
    listed = page.locator("#data-problems textarea").input_value()
    for problem in expected:
        assert problem in listed, (problem, listed)
    assert "problem(s) in 4 row(s)" in page.locator("#data-problems-head").inner_text()

    # The table's total tokens are what the chat template makes of the conversation.
    tok = tokenizer("embedded")
    conv = json.loads(before.splitlines()[1])["conversations"]
    assert _cell(page, 1, 1) == "2"  # line 2
    assert int(_cell(page, 1, 8)) == len(tok.apply_chat_template(conv, tokenize=True)["input_ids"])

    # Open sample 1 from the table, pick its first answer, change it, save.
    page.locator('#data-table [data-testid="cell-1-2"]').click()
    _wait_text(page, "#data-sample-head", "Sample 1")
    page.locator("#data-turn input").click()
    page.get_by_role("option", name="2 · assistant").click()
    content = page.locator("#data-content textarea")
    page.wait_for_function(
        "() => document.querySelector('#data-content textarea').value.startsWith('It drifts')"
    )
    content.fill(NEW_ANSWER)
    page.locator("#data-apply").click()
    _wait_text(page, "#data-history", "1 unsaved change")
    _wait_text(page, "#data-turns", NEW_ANSWER)
    page.locator("#data-save").click()
    _wait_text(page, "#data-saved", "Saved 9 rows")
    saved = page.locator("#data-saved").inner_text()
    assert str(path) + ".bak" in saved
    page.screenshot(path=str(SHOTS / "data.png"), full_page=True)

    # On disk: only line 2 changed, to the new answer; the backup is the old file.
    old, new = before.splitlines(), path.read_bytes().splitlines()
    assert len(new) == len(old)
    assert [k for k, (a, b) in enumerate(zip(old, new, strict=True)) if a != b] == [1]
    assert json.loads(new[1])["conversations"][1]["content"] == NEW_ANSWER
    assert json.loads(new[1])["id"] == "ok-1"
    assert (path.parent / (path.name + ".bak")).read_bytes() == before

    # A reload starts a new session: re-open the file, the edit is there.
    page.reload()
    _open(page, path, 9)
    # Let the open finish drawing sample 0, then pick sample 1 in the table, as before the save.
    _wait_text(page, "#data-sample-head", "Sample 0")
    page.locator('#data-table [data-testid="cell-1-2"]').click()
    _wait_text(page, "#data-sample-head", "Sample 1")
    _wait_text(page, "#data-turns", NEW_ANSWER)
    assert "No unsaved changes" in page.locator("#data-history").inner_text()
    page.close()


# ---------------------------------------------------------------------------------------------
# Pure helpers.


def test_matching_samples_are_deleted_at_once_undone_and_saved(app_url, browser):
    home = Path(os.environ["LONGCTX_HOME"])
    path = _broken_file(home / "datasets")
    path = path.rename(path.with_name("bulk.jsonl"))
    good = [
        line
        for k, line in enumerate(path.read_bytes().splitlines(keepends=True))
        if k + 1 not in (3, 5, 6, 8)
    ]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    _open(page, path, 9)
    page.locator("#data-filter-problems input").click()
    page.get_by_role("option", name="with problems").click()
    _wait_text(page, "#data-table-info", "of 4 matching samples")
    # ◀ ▶ step through the matching samples only (rows 2, 4, 5 and 7), from sample 0.
    _wait_text(page, "#data-sample-head", "Sample 0")
    for button, sample in (("#data-next", 2), ("#data-next", 4), ("#data-prev", 2)):
        page.locator(button).click()
        _wait_text(page, "#data-sample-head", f"Sample {sample}")
    page.locator("#data-delete-matching").click()
    _wait_text(page, "#data-bulk-note", "Deleted 4 samples, 5 left")
    _wait_text(page, "#data-problems-head", "No problems")
    _wait_text(page, "#data-table-info", "No sample matches")
    _wait_text(page, "#data-history", "delete 4 samples")
    # One Undo brings all four back.
    page.locator("#data-undo").click()
    _wait_text(page, "#data-problems-head", "problem(s) in 4 row(s)")
    page.locator("#data-delete-matching").click()
    _wait_text(page, "#data-problems-head", "No problems")
    page.locator("#data-save").click()
    _wait_text(page, "#data-saved", "Saved 5 rows")
    assert path.read_bytes().splitlines(keepends=True) == good  # the rest byte for byte
    # Deleting every sample is refused: nothing would be left to train on.
    page.locator("#data-filter-problems input").click()
    page.get_by_role("option", name="all rows").click()
    page.locator("#data-delete-matching").click()
    page.locator(".toast-body", has_text="would delete all 5 samples").first.wait_for(timeout=30000)
    assert len(path.read_bytes().splitlines()) == 5
    page.close()


def test_resolve_spec_keeps_sampling_and_refuses_outside_paths(tmp_path):
    from core.errors import LongCtxError
    from ui.data.common import SAMPLE, resolve_spec

    assert resolve_spec(f"{SAMPLE}[5]") == f"{SAMPLE}[5]"
    assert resolve_spec("hub:org/name") == "hub:org/name"
    home = Path(os.environ["LONGCTX_HOME"]).resolve()
    assert resolve_spec("datasets/x.jsonl") == str(home / "datasets" / "x.jsonl")
    # A bare name finds a file the app saved in datasets/; one that is nowhere stays as typed.
    (home / "datasets" / "saved.jsonl").write_text('{"text": "a"}\n')
    assert resolve_spec("saved.jsonl[1]") == f"{home / 'datasets' / 'saved.jsonl'}[1]"
    assert resolve_spec("nowhere.jsonl") == str(home / "nowhere.jsonl")
    with pytest.raises(LongCtxError, match="outside"):
        resolve_spec(str(tmp_path / "x.jsonl"))
    with pytest.raises(LongCtxError):
        resolve_spec("  ")


def _edit_cell(page, selector: str, text: str) -> None:
    """Double-click a table cell, fill its editor, Enter, and wait until the cell shows the text.
    Typed on the keyboard right after the double-click, the keys were lost now and then (the
    editor was focused but not yet listening) and the empty edit was saved as 0."""
    cell = page.locator(selector)
    cell.dblclick()
    editor = cell.locator("textarea")
    editor.fill(text)
    editor.press("Enter")
    expect(cell).to_have_text(re.compile(rf"^\s*{re.escape(text)}(\s|$)"))  # then a menu button


def test_mix_builds_a_training_set_from_parts(app_url, browser):
    from ui.data.common import SAMPLE

    datasets = Path(os.environ["LONGCTX_HOME"]) / "datasets"
    texts = datasets / "mix-texts.jsonl"
    texts.write_text('{"text": "alpha"}\n{"text": "beta"}\nnot json\n{"text": "gamma"}\n')
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_role("tab", name="Mix & push").click()
    pick = page.locator("#data-mix-pick input")
    for n, file in enumerate((SAMPLE, texts), start=1):
        pick.fill(str(file))
        pick.press("Enter")
        page.get_by_role("button", name="Add as a part").click()
        page.locator(f'#data-mix-parts [data-testid="cell-{n - 1}-0"]').wait_for(timeout=10000)
    # Five rows of the sample; the other file whole (no amount).
    _edit_cell(page, '#data-mix-parts [data-testid="cell-0-1"]', "5")
    page.locator("#data-mix-output textarea").fill("ui-mix.jsonl")
    page.locator("#data-mix-build").click()
    report = page.locator("#data-mix-report")
    report.get_by_text("Wrote").wait_for(timeout=60000)
    text = report.inner_text()
    assert "Wrote 8 samples to workspace/datasets/ui-mix.jsonl" in text, text
    assert "assets/sample/longctx-sample.jsonl: took 5 of 20 valid rows (20 in all)" in text
    assert "workspace/datasets/mix-texts.jsonl: took 3 of 3 valid rows (4 in all)" in text
    assert "Left out 1 malformed row(s)" in text
    # Named as the page names files, not by the server's path.
    assert "workspace/datasets/mix-texts.jsonl: line 3: bad JSON" in text, text
    assert os.environ["LONGCTX_HOME"] not in text
    rows = [json.loads(line) for line in (datasets / "ui-mix.jsonl").read_text().splitlines()]
    sample_ids = {json.loads(line)["id"] for line in SAMPLE.read_text().splitlines()}
    assert sorted(r["text"] for r in rows if "id" not in r) == ["alpha", "beta", "gamma"]
    assert len([r for r in rows if r.get("id") in sample_ids]) == 5
    page.close()


def test_import_converts_another_format_lists_skipped_rows_and_opens_the_result(app_url, browser):
    datasets = Path(os.environ["LONGCTX_HOME"]) / "datasets"
    alpaca = datasets / "ui-alpaca.jsonl"
    rows = [
        {
            "instruction": "Summarise the text.",
            "input": "A long story.",
            "output": "A story.",
            "id": "a1",
        },
        {"instruction": "Say nothing.", "input": "", "output": ""},  # empty answer: skipped
        {"instruction": "Name the town.", "output": "Harbour Town", "id": "a3"},
    ]
    alpaca.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    _wait_text(page, "#data-status", "samples (")  # the sample opened on load first
    page.get_by_role("tab", name="Mix & push").click()
    page.get_by_text("Import another format").click()
    box = page.locator("#data-import-file input")
    box.fill(str(alpaca))
    box.press("Enter")
    page.locator("#data-import").click()
    report = page.locator("#data-import-report")
    report.get_by_text("Imported").wait_for(timeout=60000)
    text = report.inner_text()
    # Beside the input, never over it.
    out = "workspace/datasets/ui-alpaca.imported.jsonl"
    assert f"Imported 2 of 3 rows (2 alpaca) to {out}" in text, text
    assert "Skipped 1 row(s)" in text and "line 2: turn 2 (assistant) has empty content" in text
    # The result is open in the Data tab.
    _wait_text(page, "#data-status", "ui-alpaca.imported.jsonl · 2 samples (")
    written = (datasets / "ui-alpaca.imported.jsonl").read_text().splitlines()
    written = [json.loads(line) for line in written]
    assert [r["id"] for r in written] == ["a1", "a3"]
    first = written[0]["conversations"][0]
    assert first == {"role": "user", "content": "Summarise the text.\n\nA long story."}
    page.close()


def test_writes_go_to_the_workspace_only(tmp_path):
    from core.data import io
    from core.errors import LongCtxError
    from ui.data.common import SAMPLE, save_target, writable_path

    datasets = Path(os.environ["LONGCTX_HOME"]).resolve() / "datasets"
    assert writable_path("mix") == datasets / "mix.jsonl"
    assert writable_path("a.json") == datasets / "a.json"
    with pytest.raises(LongCtxError, match="outside"):
        writable_path(str(tmp_path / "out.jsonl"))
    # assets/ is read-only: saving the sample makes a copy in the workspace.
    target, why = save_target(io.open_source(str(SAMPLE)), "")
    assert target == datasets / SAMPLE.name and "workspace" in why
    assert save_target(io.open_source(f"{SAMPLE}[3]"), "")[0] == datasets / (
        f"{SAMPLE.stem}-sample3.jsonl"
    )
    inside = datasets / "inside.jsonl"
    shutil.copyfile(SAMPLE, inside)
    assert save_target(io.open_source(str(inside)), "") == (None, "")
    assert save_target(io.open_source(str(inside)), "other")[0] == datasets / "other.jsonl"


def test_dataset_files_lists_datasets_not_presets():
    from ui.data.common import SAMPLE, dataset_files

    paths = [p for _, p in dataset_files()]
    assert str(SAMPLE) in paths
    assert not any(p.endswith((".yaml", ".css", ".md")) for p in paths)


def test_widget_values_become_core_configs():
    from core.errors import ConfigError, LongCtxError
    from ui.data.common import SAMPLE
    from ui.data.mix import to_spec
    from ui.data.table import to_query

    q = to_query("keys", "all", 100, None, "yes", "total_tokens", True, 3)
    assert (q.task, q.kind, q.min_tokens, q.max_tokens, q.has_problems) == (
        "keys",
        None,
        100,
        None,
        True,
    )
    assert (q.sort_by, q.descending, q.page) == ("total_tokens", True, 2)
    with pytest.raises(ConfigError, match="above"):
        to_query("all", "all", 10, 5, "all", "index", False, 1)
    spec = to_spec(
        [[str(SAMPLE), 3, None], ["", None, None], [f"{SAMPLE}[4]", None, 0.5]], "m", 10, 7, True
    )
    assert [(p.count, p.ratio) for p in spec.parts] == [(3, None), (None, 0.5)]
    assert spec.output.endswith("datasets/m.jsonl") and (spec.total, spec.seed) == (10, 7)
    # Letters typed into the table name the file and the fix (not a bare ValueError).
    with pytest.raises(LongCtxError, match="the count 'abc' is not a number; give a whole number"):
        to_spec([[str(SAMPLE), "abc", None]], "m", 0, 1, True)
