"""Heatmaps from cells (filling in live), the difference of two runs, topic accuracy, export."""

from __future__ import annotations

import math

import pytest

from core.errors import LongCtxError
from core.evals import figures
from core.evals.figures import (
    _column_position,
    diff_heatmap,
    export,
    heatmap,
    mean_score,
    topic_accuracy,
)


def _cell(length, depth, score, answer="ok"):
    return {"length": length, "depth": depth, "score": score, "answer": answer}


CELLS = [_cell(1000, 0, 1.0, "Dolores Park"), _cell(2000, 0, 0.5), _cell(1000, 100, 0.0, "<none>")]


def test_heatmap_places_scores_and_leaves_unfinished_cells_blank():
    fig = heatmap(CELLS, lengths=[1000, 2000, 4000], depths=[0, 50, 100])
    trace = fig.data[0]
    assert list(trace.y) == ["0%", "50%", "100%"]
    assert [list(row) for row in trace.z] == [
        [1.0, 0.5, None],
        [None, None, None],
        [0.0, None, None],
    ]
    assert list(fig.layout.xaxis.ticktext) == ["1K", "2K", "4K"]
    assert "Dolores Park" in trace.customdata[0][0] and "&lt;none&gt;" in trace.customdata[2][0]
    assert "not run yet" in trace.customdata[1][1]
    assert trace.colorscale[0][1] == "#d73027" and trace.colorscale[-1][1] == "#1a9850"
    assert (trace.zmin, trace.zmax) == (0, 1)


def test_trials_are_averaged():
    fig = heatmap([_cell(1000, 50, 1.0), _cell(1000, 50, 0.0)])
    assert fig.data[0].z[0][0] == 0.5


def test_window_line_sits_between_columns():
    assert _column_position([1000, 2000, 4000], 3000) == 1.5
    assert _column_position([1000, 2000, 4000], 1000) == 0.0
    assert _column_position([1000, 2000], 8000) is None
    fig = heatmap(CELLS, lengths=[1000, 2000, 4000], window=3000)
    assert fig.layout.shapes[0].x0 == 1.5 and "window 3K" in fig.layout.annotations[0].text
    assert not heatmap(CELLS, window=8192).layout.shapes


def test_difference_is_tuned_minus_base_where_both_ran():
    tuned = [_cell(1000, 0, 1.0), _cell(2000, 0, 1.0), _cell(4000, 0, 1.0)]
    fig = diff_heatmap(CELLS, tuned, labels=("base", "80K"))
    assert [list(row) for row in fig.data[0].z] == [[0.0, 0.5, None], [None, None, None]]
    # The headline: both means over the two cells both ran (not base's third, unpaired one).
    assert fig.layout.title.text == (
        "80K minus base<br><sup>mean score 1.00 vs. 0.75 (+0.25) over 2 cells</sup>"
    )


def test_topic_accuracy_has_one_line_per_run():
    cells = [
        {"n_topics": 2, "length": 500, "score": 1.0},
        {"n_topics": 2, "length": 520, "score": 0.0},
        {"n_topics": 4, "length": 1000, "score": 1.0},
    ]
    fig = topic_accuracy({"base": cells, "tuned": cells[:1]})
    assert [t.name for t in fig.data] == ["base", "tuned"]
    assert list(fig.data[0].x) == [510, 1000] and list(fig.data[0].y) == [0.5, 1.0]
    assert list(topic_accuracy({"b": cells}, x="topics").data[0].x) == [2, 4]


def test_mean_score():
    assert mean_score(CELLS) == 0.5 and math.isnan(mean_score([]))


def test_html_export_is_self_contained(tmp_path):
    path = export(heatmap(CELLS), tmp_path / "h.html")
    text = path.read_text()
    assert "<html>" in text and "plotly" in text and len(text) > 1_000_000  # plotly.js inside
    with pytest.raises(LongCtxError, match="as .html or .png"):
        export(heatmap(CELLS), tmp_path / "h.svg")


@pytest.mark.integration
def test_png_export_through_local_chromium(tmp_path):
    path = export(heatmap(CELLS), tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _ppl_cells(lengths, nll):
    return [
        {
            "key": f"L{n}-W0",
            "length": n,
            "window": 0,
            "tokens": n - 1,
            "nll": nll + n / 1e4,
            "position_nll": [nll] * 8,
        }
        for n in lengths
    ]


def test_perplexity_curves_per_run_with_the_window_marked_only_when_passed():
    fig = figures.perplexity(
        {
            "base": (_ppl_cells([1000, 4000, 16000], 2.0), 8192),
            "tuned": (_ppl_cells([1000, 4000], 1.5), 8192),
        }
    )
    by_length = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in by_length] == ["base", "tuned"]
    assert list(by_length[0].x) == [1000, 4000, 16000]
    assert by_length[0].y[0] == pytest.approx(math.exp(2.1))
    assert len(fig.data) == 4  # and a loss-by-position line each
    assert [s.x0 for s in fig.layout.shapes] == [8192, 8192]  # 16K went past the 8K window
    short = figures.perplexity({"base": (_ppl_cells([1000, 4000], 2.0), 8192)})
    assert not short.layout.shapes  # nothing measured past it: no line squashing the curve
