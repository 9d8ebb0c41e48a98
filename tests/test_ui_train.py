"""The Train tab: its runs panel without a browser (what its timer sends to the page), and the
RoPE base advisor in Chromium."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from core.train import runs
from core.train.config import DataSource, TrainConfig
from ui.train import runs as train_runs


def test_the_timer_redraws_a_run_only_when_its_files_change():
    config = TrainConfig(name="timer", data=[DataSource(procedural="keys", n=4, length=100)])
    run_dir = runs.new_run_dir(config)
    runs.update_status(run_dir, state="running", step=1, max_steps=4)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 1, "loss": 2.0, "lr": 1e-3}) + "\n")

    first = train_runs.poll(run_dir.name, None)
    assert "step 1/4" in first[1] and first[2] is not None  # status and chart drawn
    # Nothing changed: every output is skipped, so a zoomed or hovered chart stays as it is.
    assert train_runs.poll(run_dir.name, first[-1]) == [gr.skip()] * 4 + [first[-1]]

    with metrics.open("a") as f:
        f.write(json.dumps({"step": 2, "loss": 1.5, "lr": 5e-4}) + "\n")
    runs.update_status(run_dir, step=2)
    second = train_runs.poll(run_dir.name, first[-1])
    assert "step 2/4" in second[1] and second[-1] != first[-1]


def test_a_tick_never_puts_back_the_pick_a_launch_replaced():
    older = runs.new_run_dir(TrainConfig(name="first"))
    runs.update_status(older, state="completed", step=4, max_steps=4)
    newer = runs.new_run_dir(TrainConfig(name="second"))  # what Launch then shows
    runs.update_status(newer, state="running", step=0, max_steps=4)
    # A tick triggered before the Launch answered still carries the older pick: it may redraw
    # that run once, but it leaves the list's value alone, so the newer run stays picked.
    stale = train_runs.poll(older.name, None)
    assert "value" not in stale[0] and older.name in stale[1]
    assert newer.name in [c[1] for c in stale[0]["choices"]]
    # With nothing picked, the tick shows the newest run.
    assert train_runs.poll(None, None)[0]["value"] == newer.name
    # Before the trainer counts its steps, the config's fixed count stands in for "?".
    (newer / "config.yaml").write_text(TrainConfig(name="second", max_steps=60).to_yaml())
    runs.update_status(newer, max_steps=None)
    assert "step 0/60" in train_runs.status_html(newer.name)


@pytest.mark.integration
def test_rope_advisor_puts_a_suggested_base_into_the_form(app_url, browser):
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_role("tab", name="Train").click()
    # The first preset trains at 512 tokens, inside the model's window: opening says so, in
    # place, and a target length of its own lets the advisor be used all the same.
    page.locator("#rope-advisor").get_by_text("Choose a RoPE base").click()
    table = page.locator("#rope-table")
    table.get_by_text("does not extend the model's window").wait_for(timeout=30000)
    assert "Cannot advise: target 512 tokens" in table.inner_text()
    assert "8,192" in table.inner_text()
    target = page.locator("#rope-target input")
    target.fill("81920")
    target.press("Tab")
    table.get_by_text("Suggested bases for 81,920 tokens").wait_for(timeout=30000)
    text = table.inner_text()
    assert "RoPE base 100K, head_dim 64, window 8,192 tokens" in text
    for row in ("ntk: 1.08M", "critical: 3.85M", "bound: 32.3M", "paper: 200M"):
        assert row in text, (row, text)
    # The candidate is the preset's base, 1M: too small for 80K on this model.
    assert "Your base 1M at 81,920 tokens" in text and "goes negative" in text
    plot = page.locator("#rope-plot .js-plotly-plot")
    plot.wait_for(timeout=30000)
    assert "Attention bias B(m)" in plot.inner_text()
    assert page.locator("#rope-plot .scatterlayer .trace").count() == 6

    page.locator("#rope-pick input").click()
    page.get_by_role("option", name="bound: 32.3M (exactly 32,312,000)").click()
    page.locator("#rope-use").click()
    page.wait_for_function(
        "() => document.querySelector('#train-rope_theta input').value === '32312000'",
        timeout=30000,
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('.cm-content')]"
        ".some(e => e.innerText.includes('rope_theta: 32312000.0'))",
        timeout=30000,
    )
    table.get_by_text("Your base 32.3M").wait_for(timeout=30000)
    assert "stays >= 0 up to 81,920 tokens" in table.inner_text()
    assert page.locator("#train-max_length input").input_value() == "512"  # not the target

    # Every other method's setting for the same target, its wavelengths drawn beside the others.
    page.locator("#rope-methods-plot .js-plotly-plot").wait_for(timeout=30000)
    assert "What each method does" in page.locator("#rope-methods-plot").inner_text()
    yarn = "yarn:factor=10,original_window=8192"
    assert yarn in page.locator("#rope-methods").inner_text()
    page.locator("#rope-method input").click()
    page.get_by_role("option", name=yarn).click()
    page.locator("#rope-use-method").click()
    page.wait_for_function(
        f"() => document.querySelector('#train-rope textarea, #train-rope input').value === '{yarn}'",
        timeout=30000,
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('.cm-content')]"
        f".some(e => e.innerText.includes('rope: {yarn}'))",
        timeout=30000,
    )

    # Settings it cannot advise on empty the suggestions: none made for others can be used.
    target.fill("4000")
    target.press("Tab")
    table.get_by_text("Cannot advise").wait_for(timeout=30000)
    page.locator("#rope-use").click()
    page.locator(".toast-body", has_text="pick a suggestion first").first.wait_for(timeout=20000)
    assert page.locator("#train-rope_theta input").input_value() == "32312000"
    page.close()


def test_a_run_status_says_how_many_threads_it_got():
    config = TrainConfig(name="threads", data=[DataSource(procedural="keys", n=4, length=100)])
    run_dir = runs.new_run_dir(config)
    runs.update_status(
        run_dir,
        state="running",
        step=1,
        max_steps=4,
        threads=1,
        threads_reason="1 of 2 cores (1 kept for serve)",
    )
    assert "CPU threads: 1" in train_runs.status_html(run_dir.name)
