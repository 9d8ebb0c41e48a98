"""The Train tab's runs panel, without a browser: what its timer sends to the page."""

from __future__ import annotations

import json

import gradio as gr

from core.train import runs
from core.train.config import DataSource, TrainConfig
from ui import train_runs


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
