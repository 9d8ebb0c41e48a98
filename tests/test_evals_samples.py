"""Held-out samples: a file split into training and held-out parts (core, CLI), each held-out
answer asked after the file's conversation so far and scored (embedded model, resumable), the
figure and the base-vs-tuned comparison."""

from __future__ import annotations

import json

import pytest
from test_data_support import chat, write_jsonl

from core.cli.main import main
from core.data import mix
from core.errors import ConfigError, LongCtxError
from core.evals import figures
from core.evals.backends import LocalBackend, Target
from core.evals.runner import Evaluation, compare_figure
from core.evals.samples import SamplesConfig
from core.evals.scoring import rouge_l_recall
from core.models.loader import ModelSpec

FACTS = [
    (
        "The secret code word of the expedition is marmalade.",
        "What is the secret code word?",
        "marmalade",
        "Which colour was the tent?",
        "The tent was orange.",
    ),
    ("The lighthouse keeper's cat is called Biscuit.", "What is the cat called?", "Biscuit"),
    (
        "The train to Oslo leaves from platform nine.",
        "Which platform does the train leave from?",
        "platform nine",
    ),
]


def _held_out_file(path):
    """Line 1: a two-question sample; line 2 text; line 3 malformed; lines 4-5 one question each."""
    filler = "The weather was calm and the sea was grey. " * 6
    first, second, third = (
        chat(f"{filler}{fact[0]} {filler}", *fact[1:], task="single" if len(fact) == 3 else "multi")
        for fact in FACTS
    )
    return write_jsonl(path, [first, {"text": "no question here"}, "{oops", second, third])


def test_questions_follow_the_files_conversation(tmp_path):
    path = _held_out_file(tmp_path / "held.jsonl")
    task = SamplesConfig(str(path), limit=2)
    assert task.cell_keys() == ["L1-T1", "L1-T2", "L4-T1"]  # text and malformed rows skipped
    q1, q2, q3 = task.questions()
    # The first question is asked after its document; its record keeps the question alone.
    assert [m["role"] for m in q1.messages] == ["user"] and q1.question == FACTS[0][1]
    assert (
        q1.messages[0]["content"].endswith(FACTS[0][1]) and "marmalade" in q1.messages[0]["content"]
    )
    # The second is asked after the file's first answer, not the model's.
    assert [m["content"] for m in q2.messages[1:]] == ["marmalade", FACTS[0][3]]
    assert (q2.expected, q2.task, q3.expected, q3.task) == (
        "The tent was orange.",
        "multi",
        "Biscuit",
        "single",
    )
    assert SamplesConfig(str(path), turns="last").cell_keys() == ["L1-T2", "L4-T1", "L5-T1"]


def test_bad_settings_and_files_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        SamplesConfig("", limit=0, turns="first", max_new_tokens=0)
    assert len(err.value.problems) == 4
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"text": "a"}, {"text": "b"}])
    with pytest.raises(LongCtxError, match="holds no chat sample with an answer"):
        SamplesConfig(str(texts)).cell_keys()
    with pytest.raises(LongCtxError, match="no such file"):
        SamplesConfig(str(tmp_path / "missing.jsonl")).cell_keys()


def test_hold_out_splits_chat_samples_off_keeping_every_row_once(tmp_path):
    rows = [chat(f"document {i}", f"question {i}?", f"answer {i}", id=i) for i in range(20)]
    rows += [{"text": f"text {i}", "id": 100 + i} for i in range(5)] + ["{oops"]
    source = write_jsonl(tmp_path / "set.jsonl", rows)
    train, held = tmp_path / "out" / "set.train.jsonl", tmp_path / "out" / "set.eval.jsonl"
    spec = mix.HoldOut(str(source), str(train), str(held), count=4, seed=3)
    report = mix.hold_out(spec)
    train_lines, held_lines = train.read_text().splitlines(), held.read_text().splitlines()
    assert (report.train_rows, report.eval_rows) == (21, 4) == (len(train_lines), len(held_lines))
    source_lines = source.read_text().splitlines()
    # Rows keep their bytes and their order; each valid row lands in exactly one file.
    assert sorted(train_lines + held_lines, key=source_lines.index) == source_lines[:25]
    assert all("conversations" in json.loads(line) for line in held_lines)
    assert [str(p) for p in report.part.malformed] == [
        "line 26: bad JSON: Expecting property name enclosed in double quotes at column 2"
    ]
    # The same seed draws the same samples; another seed others.
    mix.hold_out(spec)
    assert held.read_text().splitlines() == held_lines
    mix.hold_out(mix.HoldOut(str(source), str(train), str(held), count=4, seed=4))
    assert held.read_text().splitlines() != held_lines
    assert mix.hold_out(mix.HoldOut(str(source), str(train), str(held), ratio=0.1)).eval_rows == 2


def test_hold_out_refuses_what_would_lose_data(tmp_path):
    source = write_jsonl(tmp_path / "set.jsonl", [chat("doc", "q?", "a") for _ in range(3)])
    out = str(tmp_path / "x.jsonl")
    with pytest.raises(ConfigError, match="would leave none of them to train on"):
        mix.hold_out(mix.HoldOut(str(source), out, str(tmp_path / "y.jsonl"), count=3))
    with pytest.raises(ConfigError, match="is also an input"):
        mix.hold_out(mix.HoldOut(str(source), str(source), out, count=1))
    with pytest.raises(ConfigError, match="the same file"):
        mix.hold_out(mix.HoldOut(str(source), out, out, count=1))
    with pytest.raises(ConfigError) as err:
        mix.HoldOut(str(source), "", out)
    assert len(err.value.problems) == 2  # no amount, no training file
    with pytest.raises(ConfigError, match="a whole number of samples, at least 1, got 2.5"):
        mix.HoldOut(str(source), out, str(tmp_path / "y.jsonl"), count=2.5)
    assert source.read_text().count("\n") == 3


def test_split_command_writes_both_files_into_the_workspace(tmp_path, workspace_home, capsys):
    rows = [chat(f"document {i}", f"question {i}?", f"answer {i}") for i in range(10)]
    source = write_jsonl(tmp_path / "qa-set.jsonl", rows)
    assert main(["data", "split", str(source), "--hold-out", "20%"]) == 0
    out = capsys.readouterr().out
    held = workspace_home / "datasets" / "qa-set.eval.jsonl"
    assert f"held out 2 chat samples: {held}" in out
    assert len((workspace_home / "datasets" / "qa-set.train.jsonl").read_text().splitlines()) == 8
    assert main(["data", "split", str(source), "--hold-out", "many"]) == 1
    assert "--hold-out takes 50, 0.05 or 5%, got 'many'" in capsys.readouterr().err


def test_length_bins_and_figure():
    cells = [
        {"length": n, "score": s, "task": t}
        for n, s, t in [(100, 1.0, "a"), (200, 0.0, "a"), (300, 1.0, "b"), (400, 1.0, "b")]
    ]
    assert figures.length_bins(cells, bins=2, at_least=2) == [(150, 0.5, 2), (350, 1.0, 2)]
    assert figures.length_bins(cells) == [(250, 0.75, 4)]  # too few for two groups of 3
    unscored = {"length": 9, "score": None}
    assert figures.length_bins([*cells, unscored], bins=9, at_least=1)[0] == (100, 1.0, 1)
    fig = figures.sample_scores({"base": (cells, 250), "tuned": (cells, None)})
    names = [t.name for t in fig.data]
    assert names == [
        "base: answers",
        "base (mean 0.75)",
        "base",
        "tuned: answers",
        "tuned (mean 0.75)",
        "tuned",
    ]
    bars = fig.data[2]
    assert list(bars.x) == ["a", "b"] and list(bars.y) == [0.5, 1.0]
    assert bars.texttemplate == "%{y:.2f}"  # the value written: a mean of 0 draws no bar
    assert [s.x0 for s in fig.layout.shapes] == [250]  # the base model's window, inside the data
    assert not figures.sample_scores({"base": (cells, 8192)}).layout.shapes


@pytest.fixture(scope="module")
def asked(embedded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    path = _held_out_file(folder / "held.jsonl")
    task = SamplesConfig(str(path), limit=1, max_new_tokens=16)
    evaluation = Evaluation(
        task, Target(ModelSpec()), out=folder / "eval", backend=LocalBackend(embedded)
    )
    return path, evaluation, evaluation.run_all()


@pytest.mark.integration
def test_embedded_model_answers_held_out_questions(asked):
    path, evaluation, cells = asked
    assert [c["key"] for c in cells] == ["L1-T1", "L1-T2"]
    first, second = cells
    assert "marmalade" in first["answer"].lower() and first["score"] == 1.0
    for cell in cells:
        assert cell["score"] == round(rouge_l_recall(cell["answer"], cell["expected"]), 4)
        assert cell["task"] == "multi" and cell["question"] in (FACTS[0][1], FACTS[0][3])
    # The second question re-reads nothing of the document: its prefix came from the cache.
    assert second["reused_tokens"] >= first["prompt_tokens"] - 8
    config = json.loads((evaluation.path / "config.json").read_text())
    assert config["kind"] == "samples" and config["task"]["dataset"] == str(path)
    assert (evaluation.path / "heatmap.html").stat().st_size > 0


@pytest.mark.integration
def test_asking_more_samples_resumes_and_compares(asked, embedded, tmp_path):
    path, evaluation, old = asked
    more = Evaluation(
        SamplesConfig(str(path), limit=3, max_new_tokens=16),
        Target(ModelSpec()),
        out=evaluation.path,
        backend=LocalBackend(embedded),
    )
    assert more.pending() == ["L4-T1", "L5-T1"]
    cells = more.run_all()
    assert cells[:2] == old and len(cells) == 4
    # A RoPE base far too small to read the documents: the comparison shows both.
    broken = Evaluation(
        SamplesConfig(str(path), limit=3, max_new_tokens=16),
        Target(ModelSpec(rope_theta=50.0)),
        out=tmp_path / "broken",
    )
    assert figures.mean_score(broken.run_all()) < figures.mean_score(cells)
    fig = compare_figure(broken.path, more.path)
    lines = [t.name for t in fig.data if getattr(t, "mode", None) == "lines+markers"]
    assert lines[0].startswith("embedded (rope_theta=50)") and lines[1].startswith("embedded (mean")
    other = write_jsonl(tmp_path / "other.jsonl", [chat("doc", "q?", "a")])
    unrelated = Evaluation(SamplesConfig(str(other)), Target(ModelSpec()), out=tmp_path / "o")
    with pytest.raises(LongCtxError, match="asked the questions of different files"):
        compare_figure(unrelated.path, more.path)


@pytest.mark.integration
def test_samples_command_prints_each_answer_and_the_mean_per_task(asked, tmp_path, capsys):
    path, _, _ = asked
    argv = ["samples", str(path), "--turns", "last", "--limit", "2", "--max-new-tokens", "16"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "samples: embedded: 2 cells to run, 0 already done" in out
    assert "L1-T2" in out and "L4-T1" in out and "L1-T1 " not in out
    assert "multi                    mean score" in out and "single                   mean" in out
