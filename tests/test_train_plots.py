"""The run figures drawn from metrics.jsonl records: training and held-out loss."""

from __future__ import annotations

from core.train import figures

METRICS = [
    {"step": 0, "eval_loss": 3.0},
    {"step": 1, "loss": 3.2, "lr": 1e-3, "tokens_per_s": 50.0, "mem_bytes": 2**30},
    {"step": 2, "loss": 2.8, "lr": 5e-4, "tokens_per_s": 55.0, "mem_bytes": 2**30},
    {"step": 2, "eval_loss": 2.5},
]


def test_run_figure_draws_the_held_out_loss_beside_the_training_loss():
    fig = figures.run_figure(METRICS)
    traces = {t.name: t for t in fig.data}
    assert list(traces["loss"].x) == [1, 2]  # held-out rows are not training steps
    assert list(traces["held-out loss"].x) == [0, 2]
    assert list(traces["held-out loss"].y) == [3.0, 2.5]
    assert list(traces["tokens/s"].y) == [50.0, 55.0]
    assert "held-out loss" not in {t.name for t in figures.run_figure(METRICS[1:3]).data}
    assert fig.layout.xaxis.dtick == 1  # a short run's axis shows whole steps only


def test_overlay_gives_each_run_one_colour_for_both_curves():
    fig = figures.overlay_figure({"a": METRICS, "b": METRICS[1:3]})
    names = [t.name for t in fig.data]
    assert names == ["a", "a (held-out)", "b"]
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
