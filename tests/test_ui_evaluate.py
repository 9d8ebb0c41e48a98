"""The Evaluate tab in a real browser (headless Debian Chromium driven by Playwright).

Runs a 2 x 2 needle-in-a-haystack grid on the embedded model from the tab, watches the heatmap
fill in while cells arrive, checks the cells on disk, then reloads the page: the job re-attaches,
the evaluation is listed with its heatmap, Resume finds every cell already done, and the
heatmap exports as HTML. Perplexity of the base and of a RoPE override, compared as curves. Skipped (with the reason) where /usr/bin/chromium is not installed.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]
SHOTS = Path(tempfile.gettempdir()) / "longctx-shots"
SHOTS.mkdir(exist_ok=True)
EVAL_ID = "ui-niah"
# The live heatmap's cells: how many have a score, and the hover texts.
LIVE_CELLS = """(sel) => {
  const plot = document.querySelector(sel + ' .js-plotly-plot');
  if (!plot || !plot.data || !plot.data.length) return null;
  const z = plot.data[0].z || [];
  return {filled: z.flat().filter(v => v !== null && v !== undefined).length,
          hover: JSON.stringify(plot.data[0].customdata || [])};
}"""


def _server_side() -> str:
    """For a failure message: the app's evaluation jobs and where each of its threads is (the
    app runs in this process)."""
    import sys
    import threading
    import traceback

    from core.evals import jobs as evaluate_jobs

    lines = [
        f"job {key!r}: {job.state}, {job.done}/{job.total} cells, finished={job.finished}, "
        f"error={job.error!r}, thread alive={bool(job.thread and job.thread.is_alive())}"
        for key, job in evaluate_jobs._jobs._jobs.items()
    ]
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        inner = reversed(traceback.extract_stack(frame)[-5:])
        where = " <- ".join(f"{f.name} ({Path(f.filename).name}:{f.lineno})" for f in inner)
        lines.append(f"thread {names.get(ident, ident)}: {where}")
    return "\n".join(lines)


def _fill(page, selector: str, text: str) -> None:
    box = page.locator(f"{selector} textarea, {selector} input").first
    box.fill(text)
    box.press("Tab")


def test_niah_heatmap_fills_in_live_and_comes_back_after_reload(app_url, browser, workspace_home):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_role("tab", name="Evaluate").click()
    _fill(page, "#eval-lengths", "300,600")
    _fill(page, "#eval-depths", "0,100")
    _fill(page, "#eval-out", EVAL_ID)
    command = page.locator("#eval-command textarea")
    page.wait_for_function(
        "() => { const v = document.querySelector('#eval-command textarea').value;"
        f" return v.includes('--lengths 300,600') && v.includes('--depths 0,100')"
        f" && v.includes('{EVAL_ID}'); }}",
        timeout=20000,
    )
    assert command.input_value().startswith("longctx niah --model embedded")
    assert "4 cells" in page.locator("#eval-plan").inner_text()
    page.locator("#eval-run").click()

    status = page.locator("#eval-status")
    filled_seen: list[int] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        done = "completed" in status.inner_text()
        live = page.evaluate(LIVE_CELLS, "#eval-live")
        if live is not None and (not filled_seen or live["filled"] != filled_seen[-1]):
            filled_seen.append(live["filled"])
        if done or "failed" in status.inner_text():
            break
        time.sleep(0.1)
    assert "completed" in status.inner_text(), f"{status.inner_text()}\n{_server_side()}"
    page.wait_for_function(f"() => ({LIVE_CELLS})('#eval-live')?.filled === 4", timeout=10000)
    live = page.evaluate(LIVE_CELLS, "#eval-live")
    # The heatmap was redrawn at least twice with part of the grid before the run finished.
    assert len([n for n in filled_seen if 0 < n < 4]) >= 2, filled_seen
    assert filled_seen == sorted(filled_seen), filled_seen
    assert "Dolores" in live["hover"]  # the answers are on hover

    cells = [
        json.loads(line)
        for line in (workspace_home / "evals" / EVAL_ID / "cells.jsonl").read_text().splitlines()
    ]
    assert len(cells) == 4
    assert {(c["length"], c["depth"]) for c in cells} == {
        (300, 0),
        (300, 100),
        (600, 0),
        (600, 100),
    }
    assert all(isinstance(c["answer"], str) and c["score"] is not None for c in cells)
    assert sum(c["score"] for c in cells) / 4 >= 0.75, [(c["key"], c["answer"]) for c in cells]
    page.screenshot(path=str(SHOTS / "evaluate.png"), full_page=True)

    # A reload: the job re-attaches, the evaluation is listed and shows its heatmap.
    page.reload()
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#eval-status b", has_text=EVAL_ID).wait_for(timeout=20000)
    page.wait_for_function(
        f"() => (document.querySelector('#eval-pick input') || {{}}).value?.includes('{EVAL_ID}')",
        timeout=20000,
    )
    page.wait_for_function(f"() => ({LIVE_CELLS})('#eval-view')?.filled === 4", timeout=20000)
    assert "4/4 cells" in page.locator("#eval-summary").inner_text()

    # Resume on a finished folder computes nothing and says so.
    page.locator("#eval-resume").click()
    status.get_by_text("4 cells already done").wait_for(timeout=20000)
    status.locator(".run-badge", has_text="completed").wait_for(timeout=20000)
    assert len((workspace_home / "evals" / EVAL_ID / "cells.jsonl").read_text().splitlines()) == 4

    page.locator("#eval-html").click()
    page.locator("#eval-file a[download='heatmap.html']").wait_for(timeout=20000)
    page.screenshot(path=str(SHOTS / "evaluate-reloaded.png"), full_page=True)

    # The same folder with a grown grid resumes after the 4 cells; Stop ends it early.
    _fill(page, "#eval-lengths", "300,600")
    _fill(page, "#eval-depths", "0,50,100")
    _fill(page, "#eval-out", EVAL_ID)
    page.locator("#eval-plan", has_text="4 already done").wait_for(timeout=20000)
    page.locator("#eval-run").click()
    status.get_by_text("4 cells already done").wait_for(timeout=20000)
    page.locator("#eval-stop").click()
    status.locator(".run-badge", has_text="stopped").wait_for(timeout=60000)
    assert "Run the same folder again to resume" in status.inner_text()
    assert len((workspace_home / "evals" / EVAL_ID / "cells.jsonl").read_text().splitlines()) < 6
    page.close()


def _pick(page, selector: str, text: str) -> None:
    box = page.locator(f"{selector} input")
    box.click()
    page.get_by_role("option", name=re.compile(re.escape(text))).first.click()


def _run_to_completion(page, eval_id: str) -> None:
    page.locator("#eval-run").click()
    status = page.locator("#eval-status")
    try:
        page.wait_for_function(
            "([id]) => { const s = document.querySelector('#eval-status');"
            " return s && s.querySelector('b')?.innerText === id"
            " && s.querySelector('.run-badge')?.innerText === 'completed'; }",
            arg=[eval_id],
            timeout=150000,
        )
    except PlaywrightTimeout:
        pytest.fail(f"{status.inner_text()}\n{_server_side()}")


def _wait_live_points(page, n: int) -> None:
    """Until the live figure's first trace has `n` points."""
    page.wait_for_function(
        "([n]) => { const p = document.querySelector('#eval-live .js-plotly-plot');"
        " return p && p.data && p.data[0].x.length === n; }",
        arg=[n],
        timeout=20000,
    )


def test_perplexity_curves_of_the_base_and_a_rope_override(app_url, browser, workspace_home):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#eval-task label", has_text="Perplexity").click()
    page.locator("#eval-windows").wait_for(timeout=10000)
    assert not page.locator("#eval-depths").is_visible()  # no needle, no scorer
    assert not page.locator("#eval-scorer").is_visible()
    assert page.get_by_text("Text to read").is_visible()
    _fill(page, "#eval-lengths", "200,400")
    _fill(page, "#eval-windows", "1")
    _fill(page, "#eval-out", "ui-ppl")
    page.wait_for_function(
        "() => (document.querySelector('#eval-command textarea')?.value || '')"
        ".includes('--windows 1 --out')",
        timeout=20000,
    )
    command = page.locator("#eval-command textarea").input_value()
    assert command.startswith("longctx perplexity --model embedded --lengths 200,400"), command
    assert "2 cells" in page.locator("#eval-plan").inner_text()
    _run_to_completion(page, "ui-ppl")
    _wait_live_points(page, 2)

    # The same text read with a RoPE base the model was not trained on.
    _fill(page, "#eval-rope-theta", "50")
    _fill(page, "#eval-out", "ui-ppl-rope")
    page.wait_for_function(
        "() => (document.querySelector('#eval-command textarea')?.value || '').includes('--rope-theta 50')",
        timeout=20000,
    )
    _run_to_completion(page, "ui-ppl-rope")
    _pick(page, "#eval-pick", "ui-ppl-rope")
    summary = page.locator("#eval-summary")
    summary.get_by_text("400 tokens: perplexity").wait_for(timeout=20000)

    page.get_by_text("Compare two evaluations").click()
    _pick(page, "#eval-base", "ui-ppl ·")
    _pick(page, "#eval-tuned", "ui-ppl-rope")
    page.locator("#eval-compare").click()
    page.wait_for_function(
        "() => { const p = document.querySelector('#eval-diff .js-plotly-plot');"
        " return p && p.data && p.data.length === 4; }",
        timeout=20000,
    )  # two runs x (perplexity by length, loss by position)
    curves = page.evaluate(
        "() => document.querySelector('#eval-diff .js-plotly-plot').data"
        ".filter(t => t.showlegend !== false).map(t => [t.name, t.y])"
    )
    (base_name, base_ppl), (rope_name, rope_ppl) = curves
    assert "rope" in rope_name and "rope" not in base_name, curves
    assert all(r > b for r, b in zip(rope_ppl, base_ppl, strict=True)), curves
    page.screenshot(path=str(SHOTS / "evaluate-perplexity.png"), full_page=True)
    page.close()


def test_samples_held_out_in_data_are_asked_in_evaluate(app_url, browser, workspace_home):
    from test_data_support import chat, write_jsonl

    facts = [
        (
            f"Crate {n} holds {n * 7} lanterns.",
            f"How many lanterns are in crate {n}?",
            f"{n * 7} lanterns",
        )
        for n in range(1, 7)
    ]
    datasets = workspace_home / "datasets"
    write_jsonl(
        datasets / "ui-qa.jsonl",
        [chat(f"Inventory notes. {f} End.", q, a, task="count") for f, q, a in facts],
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_role("tab", name="Mix & push").click()
    page.get_by_text("Hold out samples for evaluation").click()
    box = page.locator("#data-split-file input")
    box.fill("ui-qa.jsonl")
    box.press("Enter")
    _fill(page, "#data-split-count", "2")
    page.locator("#data-split").click()
    report = page.locator("#data-split-report")
    report.get_by_text("Held out").wait_for(timeout=30000)
    assert (
        "Held out 2 chat samples in workspace/datasets/ui-qa.eval.jsonl; 4 samples left to "
        "train on in workspace/datasets/ui-qa.train.jsonl" in report.inner_text()
    )
    assert len((datasets / "ui-qa.eval.jsonl").read_text().splitlines()) == 2

    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#eval-task label", has_text="Held-out samples").click()
    page.locator("#eval-dataset").wait_for(timeout=10000)
    assert not page.locator("#eval-lengths").is_visible()  # the file sets the lengths
    _fill(page, "#eval-dataset", "ui-qa.eval.jsonl")
    _fill(page, "#eval-out", "ui-samples")
    page.wait_for_function(
        "() => (document.querySelector('#eval-command textarea')?.value || '').includes('ui-samples')",
        timeout=20000,
    )
    command = page.locator("#eval-command textarea").input_value()
    assert command.startswith(f"longctx samples {datasets / 'ui-qa.eval.jsonl'} --model embedded")
    assert "2 cells" in page.locator("#eval-plan").inner_text()
    _run_to_completion(page, "ui-samples")
    _wait_live_points(page, 2)  # each answer a dot
    cells = [
        json.loads(line)
        for line in (workspace_home / "evals" / "ui-samples" / "cells.jsonl")
        .read_text()
        .splitlines()
    ]
    held = [json.loads(line) for line in (datasets / "ui-qa.eval.jsonl").read_text().splitlines()]
    assert [c["expected"] for c in cells] == [r["conversations"][1]["content"] for r in held]
    # Each answer can be read beside the expected one, in the evaluation list below.
    _pick(page, "#eval-pick", "ui-samples")
    page.get_by_text("Answers, cell by cell").click()
    table = page.locator("#eval-answers")
    table.get_by_text(cells[0]["expected"]).first.wait_for(timeout=20000)
    assert cells[0]["question"] in table.inner_text()
    page.screenshot(path=str(SHOTS / "evaluate-samples.png"), full_page=True)
    page.close()


def test_an_evaluation_is_not_compared_with_itself():
    from core.errors import LongCtxError
    from ui.evaluate.results import compare

    with pytest.raises(LongCtxError, match="pick two different evaluations"):
        compare("niah-x", "niah-x")
