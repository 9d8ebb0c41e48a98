"""The scorecard on small evaluation folders written here: a base and a tuned RULER run at 32K,
an MMLU run of the base; rows per suite and length, columns base and tuned, published references
with their sources, the figure, the Markdown and the command."""

from __future__ import annotations

from core.cli.main import main
from core.evals import results, scorecard
from core.evals.scorecard import build, folders_for, k_label

BASE = {"model": {"name": "embedded"}, "endpoint": None, "tokenizer": None}
TUNED = {
    "model": {"name": "embedded", "adapter": "/w/runs/20260101-120000-keys/adapter"},
    "endpoint": None,
    "tokenizer": None,
}


def _folder(path, kind, target, task, cells, created):
    results.write_config(
        path, {"kind": kind, "target": target, "task": task, "label": "x", "created": created}
    )
    log = results.CellLog(path)
    for i, cell in enumerate(cells):
        log.append({"key": f"c{i}", **cell})
    return str(path)


def _evals(root):
    ruler_cells = lambda good: [  # noqa: E731
        {"task": "vt", "length": 32768, "score": good},
        {"task": "cwe", "length": 32768, "score": 0.5},
        {"task": "vt", "length": 8192, "score": 1.0},
    ]
    return [
        _folder(root / "r-base", "ruler", BASE, {}, ruler_cells(0.0), "2026-01-01T00:00:00"),
        _folder(root / "r-tuned", "ruler", TUNED, {}, ruler_cells(1.0), "2026-01-02T00:00:00"),
        _folder(
            root / "m-base",
            "harness",
            BASE,
            {"tasks": ["longctx_mmlu_file"]},
            [
                {"task": "longctx_mmlu_file", "subject": "anatomy", "score": 1.0},
                {"task": "longctx_mmlu_file", "subject": "philosophy", "score": 0.0},
            ],
            "2026-01-03T00:00:00",
        ),
    ]


def test_rows_columns_and_references(tmp_path):
    card = build(_evals(tmp_path))
    assert card.columns == ["base", "embedded-keys"]
    assert card.rows["RULER mean @ 32K"] == {"base": 25.0, "embedded-keys": 75.0}
    assert card.rows["RULER mean @ 8K"] == {"base": 100.0, "embedded-keys": 100.0}
    assert card.rows["MMLU 0-shot"] == {"base": 50.0}
    header, *lines = card.table()
    assert header == ["suite", "base", "embedded-keys", "published", "source"]
    ruler32 = next(line for line in lines if line[0] == "RULER mean @ 32K")
    assert ruler32[3] == "Llama-3.1-8B 87.4" and "RULER's README" in ruler32[4]
    mmlu = next(line for line in lines if line[0] == "MMLU 0-shot")
    assert mmlu[2] is None and "65.91" in mmlu[3] and "64.44" in mmlu[3] and "the paper" in mmlu[4]
    assert "| RULER mean @ 32K | 25.0 | 75.0 |" in card.markdown()
    fig = card.figure()
    assert [t.name for t in fig.data] == ["base", "embedded-keys", "published"]
    assert k_label(32768) == k_label(32000) == "32K"


def test_the_command_finds_a_base_models_evaluations(tmp_path, capsys):
    folders = _evals(tmp_path / "evals")
    assert sorted(folders_for("embedded", tmp_path / "evals")) == sorted(folders)
    out = tmp_path / "card.html"
    md = tmp_path / "card.md"
    code = main(
        [
            "scorecard",
            "--base",
            "embedded",
            "--root",
            str(tmp_path / "evals"),
            "-o",
            str(out),
            "--markdown",
            str(md),
        ]
    )
    assert code == 0 and out.exists() and "MMLU 0-shot" in md.read_text()
    printed = capsys.readouterr().out
    assert "RULER mean @ 32K" in printed and "Llama-3.1-8B 87.4" in printed
    assert scorecard.REFERENCES[0].source.startswith("the paper")


def test_the_model_card_carries_the_scorecard(tmp_path):
    from core.train.export import scorecard_lines

    evals = [{"path": p} for p in _evals(tmp_path)]
    lines = scorecard_lines(evals)
    assert lines[1] == "### Scorecard" and "| MMLU 0-shot | 50.0 |" in lines[3]
    assert scorecard_lines([]) == []


def test_saved_answers_are_rescored_without_generating(tmp_path, capsys):
    cells = [
        {
            "task": "niah_multivalue",
            "length": 1000,
            "answer": "It is 123.",
            "expected": [["123"], ["456"]],
            "score": 0.5,
        },
        {
            "task": "qa_squad",
            "length": 1000,
            "answer": "Paris",
            "expected": [["paris", "Lutetia"]],
            "score": 1.0,
        },
    ]
    source = _folder(tmp_path / "src", "ruler", BASE, {}, cells, "2026-01-01T00:00:00")
    assert main(["rescore", source, "--scorer", "match_part", "--out", str(tmp_path / "p")]) == 0
    assert [c["score"] for c in results.read_cells(tmp_path / "p")] == [1.0, 1.0]
    assert results.read_config(tmp_path / "p")["scorer"]["kind"] == "match_part"
    assert [c["score"] for c in results.read_cells(source)] == [0.5, 1.0]  # left as it was
    assert "mean score 1.000" in capsys.readouterr().out
    assert main(["rescore", source, "--scorer", "match_all", "--out", str(tmp_path / "p")]) == 1
