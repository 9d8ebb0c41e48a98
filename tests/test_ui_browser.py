"""The app in a real browser: headless Debian Chromium driven by Playwright.

Opens the app, sends a chat message to the embedded model and watches the reply stream in.
Skipped (with the reason) where /usr/bin/chromium is not installed.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import make_pdf, start_app
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core import workspace

pytestmark = pytest.mark.integration
SHOTS = __import__("pathlib").Path(__import__("tempfile").gettempdir()) / "longctx-shots"
SHOTS.mkdir(exist_ok=True)


SEEN_REPLIES = """() => {
  window.seenReplies = [];
  const record = () => {
    const bots = document.querySelectorAll('#chat-a .bot');
    const text = bots.length ? bots[bots.length - 1].innerText.trim() : '';
    const seen = window.seenReplies;
    if (text && text !== 'Loading content' && seen[seen.length - 1] !== text) seen.push(text);
  };
  new MutationObserver(record).observe(document.querySelector('#chat-a'),
                                       {subtree: true, childList: true, characterData: true});
}"""


def test_chat_reply_streams_in(app_url, browser):
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="Chat").click()
    box = page.locator("#chat-input textarea")
    box.fill("Write three sentences")
    box.press("Shift+Enter")  # a new line, as the box's hint says
    box.press_sequentially("about the ocean.")
    assert box.input_value() == "Write three sentences\nabout the ocean."
    # Every text the reply shows, recorded in the page as it renders: polling from here would
    # miss states on a loaded machine.
    page.evaluate(SEEN_REPLIES)
    box.press("Enter")  # sends

    page.wait_for_function(
        "() => (document.querySelector('.chat-stats')?.innerText || '').includes('tokens/s')",
        timeout=120000,
    )
    bot = page.locator("#chat-a .bot").last
    final = bot.inner_text().strip()
    seen = page.evaluate("() => window.seenReplies")
    page.screenshot(path=str(SHOTS / "chat.png"), full_page=True)
    assert len(final.split()) >= 10, final
    # Streaming: the reply was seen growing through several partial states, each a prefix.
    partial = [t for t in seen if t != final]
    assert len(partial) >= 3, seen
    # Compare words, not characters: half-streamed markdown (a lone "**") renders differently.
    words = re.findall(r"\w+", final)
    for text in partial:
        head = re.findall(r"\w+", text)[:-1]  # the last word may still be growing
        assert words[: len(head)] == head, (text, final)
    stats = page.locator(".chat-stats").first.inner_text()
    assert "prompt" in stats and "tokens/s" in stats
    # The user's message stays in the conversation above the reply.
    assert "about the ocean" in page.locator("#chat-a .user").last.inner_text()
    # The context budget now counts the whole conversation, the reply included: more than the
    # prompt that produced it.
    prompt_tokens = int(re.match(r"([\d,]+) prompt", stats).group(1).replace(",", ""))
    page.wait_for_function(
        "([n]) => { const m = (document.querySelector('#chat-budget')?.innerText || '')"
        ".match(/([\\d,]+) \\/ 8,192 tokens/);"
        " return m && parseInt(m[1].replace(/,/g, '')) > n; }",
        arg=[prompt_tokens],
        timeout=30000,
    )

    # The conversation is kept in the browser: a reload brings it back.
    page.reload()
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-a .user", has_text="about the ocean").wait_for(timeout=30000)
    assert page.locator("#chat-a .bot").last.inner_text().strip() == final

    # ...and, corrected by hand, it can be kept as a training sample in the paper's format.
    page.locator("#chat-a .bot").last.hover()
    page.locator("#chat-a button[aria-label='Edit']").last.click()
    page.locator("#chat-a textarea.edit-textarea").fill("The ocean is vast. It is deep. It is old.")
    page.locator("#chat-a button[aria-label='Submit']").click()
    page.locator("#chat-a .bot", has_text="It is old.").wait_for(timeout=30000)
    page.get_by_text("Keep this conversation as a training sample").click()
    page.locator("#chat-keep-file input, #chat-keep-file textarea").first.fill("kept-chat.jsonl")
    page.locator("#chat-keep").click()
    page.locator("#chat-kept").get_by_text("Added as line 1 of").wait_for(timeout=30000)
    kept = workspace.subdir("datasets") / "kept-chat.jsonl"
    [sample] = [json.loads(line) for line in kept.read_text().splitlines()]
    turns = sample["conversations"]
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[0]["content"] == "Write three sentences\nabout the ocean."
    assert turns[1]["content"] == "The ocean is vast. It is deep. It is old."  # as edited
    assert sample["model"].startswith("embedded")
    # One click opens that dataset in the Data tab, to check or edit it.
    page.locator("#chat-to-data").click()
    page.locator(".data-status", has_text="kept-chat.jsonl · 1 samples").wait_for(timeout=60000)
    assert page.get_by_role("tab", name="Data", selected=True).count() == 1
    # The edit is kept in the browser too: a reload shows the corrected reply.
    page.reload()
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-a .bot", has_text="It is old.").wait_for(timeout=30000)
    page.close()


def test_budget_counts_the_document_against_the_window(app_url, browser):
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="Chat").click()
    # Shown as soon as the tab opens, before anything is typed.
    budget = page.locator("#chat-budget")
    budget.get_by_text("/ 8,192 tokens").wait_for(timeout=30000)
    assert "over the window" not in budget.inner_text()
    page.get_by_text("Long document").click()
    page.get_by_label("Document text").fill("lorem ipsum " * 5000)
    page.locator("#chat-input textarea").fill("Summarize.")
    budget.get_by_text("over the window").wait_for(timeout=30000)
    assert "/ 8,192 tokens" in budget.inner_text()
    # Trimming keeps the start and the end and cuts the middle, to fit with room to answer.
    page.locator("#chat-doc-trim").click()
    page.wait_for_function(
        "() => (document.querySelector('#chat-doc-text textarea')?.value || '')"
        ".includes('tokens cut from the middle')",
        timeout=30000,
    )
    note = page.locator(".toast-body", has_text="tokens from the middle of the document").first
    note.wait_for(timeout=30000)
    assert "512 stay free for the answer" in note.inner_text()
    page.wait_for_function(
        "() => { const t = document.querySelector('#chat-budget')?.innerText || '';"
        " return t.includes('/ 8,192 tokens') && !t.includes('over the window')"
        " && !t.includes('fewer than'); }",
        timeout=30000,
    )
    text = page.locator("#chat-doc-text textarea").input_value()
    assert text.startswith("lorem ipsum") and text.rstrip().endswith("ipsum")
    page.close()


def test_an_uploaded_pdf_becomes_the_document(app_url, browser, tmp_path):
    lines = [
        f"Line {i} of the annual report says the harbour earned {i} thousand crowns."
        for i in range(40)
    ]
    pdf = make_pdf(tmp_path / "report.pdf", [lines[:20], lines[20:]])
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="Chat").click()
    budget = page.locator("#chat-budget")
    budget.get_by_text("/ 8,192 tokens").wait_for(timeout=30000)
    before = int(re.search(r"([\d,]+) / 8,192", budget.inner_text()).group(1).replace(",", ""))
    page.get_by_text("Long document").click()
    page.locator("#chat-doc-file input[type=file]").set_input_files(str(pdf))
    page.wait_for_function(
        "() => (document.querySelector('#chat-doc-text textarea')?.value || '').includes('Line 39')",
        timeout=30000,
    )
    text = page.locator("#chat-doc-text textarea").input_value()
    assert text.startswith("Line 0 of the annual report") and "\n\n" in text  # page break kept
    page.wait_for_function(
        "([n]) => { const m = (document.querySelector('#chat-budget')?.innerText || '')"
        ".match(/([\\d,]+) \\/ 8,192 tokens/);"
        " return m && parseInt(m[1].replace(/,/g, '')) > n + 500; }",
        arg=[before],
        timeout=30000,
    )
    # A scanned PDF has nothing to read: the reason shows, the document already there stays.
    scan = make_pdf(tmp_path / "scan.pdf", [[]])
    page.locator("#chat-doc-file").get_by_role("button", name="Clear").click()
    page.locator("#chat-doc-file input[type=file]").set_input_files(str(scan))
    toast = page.locator(".toast-body", has_text="no text layer").first
    toast.wait_for(timeout=30000)
    assert "scan.pdf" in toast.inner_text() and "OCR" in toast.inner_text()
    assert "Line 39" in page.locator("#chat-doc-text textarea").input_value()
    page.close()


def test_a_long_prompt_shows_its_reading_progress_and_stops(app_url, browser):
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="Chat").click()
    page.get_by_role("button", name="Long document").click()
    log = " ".join(
        f"Day {i}: {i % 7} ships came in and {i % 5} left the harbour." for i in range(450)
    )
    page.locator("#chat-doc-text textarea").fill(log)  # about 7,000 tokens: several pieces
    page.locator("#chat-input textarea").fill("How many ships came in on day 12?")
    page.locator("#chat-send").click()
    stats = page.locator(".chat-stats").first
    stats.get_by_text("Reading the prompt:").wait_for(timeout=60000)
    assert re.search(r"[\d,]+ / [\d,]+ tokens \(\d+%\) · about \d+ s left", stats.inner_text())
    page.locator("#chat-stop").click()  # works while the prompt is still being read
    stats.get_by_text("stopped").wait_for(timeout=60000)
    assert "0 new tokens" in stats.inner_text()
    page.close()


def test_side_by_side_sends_one_prompt_to_two_models(app_url, browser):
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Side by side").click()
    # Model B: the same weights with a wider window; each side's budget says which is which.
    window = page.locator("#chat-target-b-window input")
    window.fill("16384")
    window.press("Tab")
    budget = page.locator("#chat-budget")
    budget.get_by_text("/ 16,384 tokens").wait_for(timeout=30000)
    rows = budget.locator(".ctx-budget").all_inner_texts()
    assert rows[0].startswith("A · embedded") and "/ 8,192 tokens" in rows[0], rows
    assert rows[1].startswith("B · embedded") and "/ 16,384 tokens" in rows[1], rows

    # One sampling setting for both sides: a short answer, so loaded cores finish it in time.
    page.get_by_text("Sampling").click()
    limit = page.locator("#chat-max-tokens input[type=number]")
    limit.fill("32")
    limit.press("Enter")
    page.locator("#chat-input textarea").fill("Name one color.")
    page.locator("#chat-send").click()
    for side in ("a", "b"):
        page.locator(f"#chat-{side} .user", has_text="Name one color.").wait_for(timeout=30000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chat-stats')].filter("
        "e => e.innerText.includes('tokens/s')).length === 2",
        timeout=120000,
    )
    for side in ("a", "b"):
        assert page.locator(f"#chat-{side} .bot").last.inner_text().strip()
    stats = page.locator(".chat-stats", has_text="tokens/s").all_inner_texts()
    new_tokens = [
        int(re.search(r"\+ ([\d,]+) new tokens", s).group(1).replace(",", "")) for s in stats
    ]
    assert all(1 <= n <= 32 for n in new_tokens), stats
    page.close()


def _run_files(run_id: str) -> str:
    """For a failure message: what the run's folder says (status, last log lines)."""
    folder = workspace.subdir("runs") / run_id
    status = folder / "status.json"
    log = folder / "log.txt"
    return (
        f"status.json: {status.read_text() if status.exists() else 'missing'}\n"
        f"log.txt ends: {chr(10).join(log.read_text().splitlines()[-15:]) if log.exists() else 'missing'}"
    )


def _open_tab(page, url: str, name: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name=name).click()


def test_train_tab_launches_a_run_that_survives_reload_and_restart(
    app_url, browser, tiny_llama_dir
):
    workspace.allow_root(tiny_llama_dir)  # as `python app.py --allow DIR` does
    page = browser.new_page()
    _open_tab(page, app_url, "Train")
    model = page.locator("#train-model input")
    model.fill(str(tiny_llama_dir))
    model.press("Enter")
    page.get_by_text("Optimisation").click()
    steps = page.locator("#train-max_steps input")
    steps.fill("4")
    steps.press("Tab")
    # Two held-out samples, their loss measured before training and every 2 steps.
    held = workspace.subdir("datasets") / "ui-held.jsonl"
    held.write_text(
        "".join(
            json.dumps(
                {
                    "conversations": [
                        {
                            "role": "user",
                            "content": f"Note: door {n} is blue.\n\nWhat colour is door {n}?",
                        },
                        {"role": "assistant", "content": "Blue."},
                    ]
                }
            )
            + "\n"
            for n in range(2)
        )
    )
    held_box = page.locator("#train-eval_data textarea")
    held_box.fill("ui-held.jsonl")
    held_box.press("Tab")
    every = page.locator("#train-eval_steps input")
    every.fill("2")
    every.press("Tab")
    yaml_box = page.locator(".cm-content").first
    page.wait_for_function(
        "() => [...document.querySelectorAll('.cm-content')].some(e => e.innerText.includes("
        "'max_steps: 4') && e.innerText.includes('eval_steps: 2'))",
        timeout=20000,
    )
    assert str(tiny_llama_dir) in yaml_box.inner_text()
    assert f"eval_data: {held}" in yaml_box.inner_text()
    # Before launch: how much of each source fits max length.
    page.locator("#train-check").click()
    checked = page.locator("#train-data-check")
    checked.get_by_text("held-out").wait_for(timeout=60000)
    assert f"{held} (held-out): 2 samples, all within" in checked.inner_text()
    assert "(training): 64 samples" in checked.inner_text()
    assert "core.cli train" in page.locator("#train-command textarea").input_value()
    page.locator("#train-launch").click()
    started = page.get_by_text("Started run")
    started.wait_for(timeout=30000)
    run_id = started.locator("strong").inner_text()
    # The panel follows the new run until it completes (it showed older runs before).
    try:
        page.wait_for_function(
            "([id]) => { const t = document.querySelector('#run-status')?.innerText || '';"
            " return t.includes(id) && t.includes('completed'); }",
            arg=[run_id],
            timeout=180000,
        )
    except PlaywrightTimeout:
        pytest.fail(f"{page.locator('#run-status').inner_text()}\n{_run_files(run_id)}")
    assert "step 4/4" in page.locator("#run-status").inner_text()
    assert "held-out loss" in page.locator("#run-status").inner_text()
    page.locator("#run-chart .js-plotly-plot").wait_for(timeout=20000)
    assert page.locator("#run-chart .scatterlayer .trace").count() >= 5  # loss, smooth, lr, ...
    held_steps = page.evaluate(
        "() => document.querySelector('#run-chart .js-plotly-plot').data"
        ".find(t => t.name === 'held-out loss').x"
    )
    assert held_steps == [0, 2, 4]
    # The log opens at its end: the run's last line is in view.
    page.get_by_text("Log", exact=True).click()
    log = page.locator("#run-log textarea")
    assert log.input_value().splitlines()[-1].startswith(f"run {run_id} completed at step 4")
    page.wait_for_function(
        "() => { const t = document.querySelector('#run-log textarea');"
        " return t.scrollTop + t.clientHeight >= t.scrollHeight - 2; }",
        timeout=10000,
    )
    # The new run can be overlaid with others (the list was drawn before it existed).
    page.get_by_text("Compare runs").click()
    page.locator("#run-compare-pick").get_by_label(run_id).check()
    page.locator("#run-compare .js-plotly-plot").wait_for(timeout=20000)
    assert page.locator("#run-compare .scatterlayer .trace").count() >= 1
    # Export with nothing ticked names the adapter and shows the card a push would send.
    page.get_by_text("Export", exact=True).first.click()
    page.get_by_role("button", name="Export", exact=True).click()
    page.get_by_text("Model card (README.md").click()
    card = page.locator("#export-card")
    card.get_by_text("Recipe").wait_for(timeout=30000)
    assert "r=32, alpha=16" in card.inner_text() and "library_name" not in card.inner_text()

    # On to the next steps: the run's adapter goes under test in Evaluate...
    page.locator("#run-to-evaluate").click()
    command = page.locator("#eval-command textarea")
    page.wait_for_function(
        "([id]) => (document.querySelector('#eval-command textarea')?.value || '')"
        ".includes(id + '/adapter')",
        arg=[run_id],
        timeout=20000,
    )
    assert run_id in page.locator("#eval-model input").input_value()
    assert "--model" in command.input_value()
    # The run measured a held-out loss: its held-out questions are the task, ready to ask.
    assert page.locator("#eval-task").get_by_role("radio", name="Held-out samples").is_checked()
    assert command.input_value().startswith(f"longctx samples {held} ")
    # ...and Chat sets it beside its base, side by side, in a new conversation: one had with
    # another model before does not stay.
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-input textarea").fill("Say hello.")
    page.locator("#chat-input textarea").press("Enter")
    # A small model sampling at 0.7 may run on to its 512-token limit, minutes on loaded
    # cores: Stop ends the reply once it has begun.
    page.locator("#chat-a .bot").first.wait_for(timeout=60000)
    page.locator("#chat-stop").click()
    page.locator(".chat-stats", has_text="tokens/s").first.wait_for(timeout=60000)
    page.get_by_role("tab", name="Train").click()
    page.locator("#run-to-chat").click()
    budget = page.locator("#chat-budget")
    budget.get_by_text("B · ").wait_for(timeout=30000)
    assert page.locator("#chat-a .user").count() == 0 and page.locator("#chat-a .bot").count() == 0
    # Named from its root; refreshes started before the hand-off may land first.
    page.wait_for_function(
        "([label]) => document.querySelector('#chat-budget').innerText.includes(label)",
        arg=[f"B · workspace/runs/{run_id}/adapter"],
        timeout=30000,
    )
    assert page.locator("#chat-target-a-model input").input_value() == str(tiny_llama_dir)
    assert run_id in page.locator("#chat-target-b-model input").input_value()
    assert page.get_by_label("Side by side").is_checked()
    page.get_by_role("tab", name="Train").click()

    # A reload shows the same run, read back from its folder.
    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.locator("#run-status b", has_text=run_id).wait_for(timeout=60000)
    page.close()


def test_an_engine_this_machine_lacks_is_flagged_and_refused(app_url, browser):
    from core.train import runs

    before = {r.id for r in runs.list_runs()}
    page = browser.new_page()
    _open_tab(page, app_url, "Train")
    page.get_by_text("Hardware").click()
    page.locator("#train-precision").get_by_role("radio", name="auto").check()  # not fp32
    page.locator("#train-engine").get_by_role("radio", name="unsloth").check()
    verdict = page.locator("#fit-verdict")
    verdict.get_by_text("Cannot launch here").wait_for(timeout=20000)
    assert "engine unsloth" in verdict.inner_text()
    assert "estimated for the transformers engine" in verdict.inner_text()
    page.locator("#train-launch").click()
    toast = page.locator(".toast-body", has_text="engine unsloth").first
    toast.wait_for(timeout=20000)
    assert "use engine: transformers" in toast.inner_text()
    assert {r.id for r in runs.list_runs()} == before  # refused before any run folder
    page.close()


def test_runs_come_back_after_an_app_restart(browser, embedded):
    from core.train import runs

    finished = [r for r in runs.list_runs() if r.state == "completed"]
    if not finished or runs.list_runs()[0].id != finished[0].id:
        pytest.skip("the newest run of this session's workspace has not completed")
    demo, url = start_app()  # a second app process state: nothing shared but the run folders
    try:
        page = browser.new_page()
        _open_tab(page, url, "Train")
        page.locator("#run-status b", has_text=finished[0].id).wait_for(timeout=20000)
        assert "completed" in page.locator("#run-status").inner_text()
        page.locator("#run-chart .js-plotly-plot").wait_for(timeout=20000)
        page.close()
    finally:
        demo.close()


def test_experiments_tab_checks_runs_and_shows_an_experiment_after_reload(
    app_url, browser, tiny_llama_dir
):
    experiment = {
        "name": "ui-tiny",
        "model": str(tiny_llama_dir),
        "data": [{"name": "keys", "make": "keys", "n": 2, "length": 200}],
        "train": [
            {
                "name": "tuned",
                "preset": "cpu-keys",
                "data": ["keys"],
                "rope_theta": 40000,
                "max_length": 256,
                "max_steps": 2,
            }
        ],
        "evaluate": {
            "models": ["base", "tuned"],
            "tasks": {"niah": {"lengths": [150, 300], "depths": [0, 100], "max_new_tokens": 4}},
        },
    }
    page = browser.new_page()
    _open_tab(page, app_url, "Experiments")
    editor = page.locator("#exp-yaml .cm-content")
    editor.get_by_text("name: miniature-cpu").wait_for(timeout=20000)  # the preset to start from
    # YAML is a superset of JSON: one line, typed past the editor's indenting and bracket closing.
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(json.dumps(experiment))
    page.locator("#exp-check").click()
    plan = page.locator("#exp-plan")
    plan.get_by_text("ui-tiny", exact=True).wait_for(timeout=30000)
    assert "4 steps" in plan.inner_text()
    assert "niah-tuned" in plan.inner_text() and "--adapter" in plan.inner_text()

    page.locator("#exp-run").click()
    status = page.locator("#exp-status")
    try:
        status.get_by_text("completed").wait_for(timeout=300000)
    except PlaywrightTimeout:
        folder = workspace.home() / "experiments" / "ui-tiny"
        pytest.fail(f"{status.inner_text()}\n{(folder / 'log.txt').read_text()[-3000:]}")
    assert "4/4 steps done" in status.inner_text()
    steps = page.locator("#exp-steps")
    page.wait_for_function(
        "() => (document.querySelector('#exp-steps')?.innerText || '').includes('niah-tuned')",
        timeout=20000,
    )
    table = steps.inner_text()
    assert "done" in table and "pending" not in table and "failed" not in table
    page.locator("#exp-grids .js-plotly-plot").wait_for(timeout=20000)
    assert "NIAH @ 300" in page.locator("#exp-scorecard").inner_text()
    assert page.locator("#exp-report a[href*='report.html']").count() >= 1  # a download link

    # A reload shows the experiment again, read back from its folder.
    page.reload()
    page.get_by_role("tab", name="Experiments").click()
    pick = page.locator("#exp-pick input")
    pick.click()
    page.get_by_role("option", name="ui-tiny").click()
    page.locator("#exp-status").get_by_text("completed").wait_for(timeout=30000)
    page.wait_for_function(  # the table keeps hidden copies of its cells: read its text
        "() => (document.querySelector('#exp-steps')?.innerText || '').includes('train-tuned')",
        timeout=20000,
    )
    page.close()
