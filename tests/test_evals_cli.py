"""The evaluation commands' arguments (in process: no model is loaded) and `eval-diff`."""

from __future__ import annotations

import json

from core.cli import evals as evals_cli
from core.cli.main import build_parser, main
from core.evals.niah import NiahConfig


def _args(*argv: str):
    return build_parser().parse_args(["niah", *argv])


def test_grid_from_ranges_and_lists():
    args = _args("--min-length", "1000", "--max-length", "8000", "--num-lengths", "4")
    args.length_spacing = "log"
    assert evals_cli._lengths(args, []) == [1000, 2000, 4000, 8000]
    assert evals_cli._depths(args) == [0, 25, 50, 75, 100]  # the niah default
    args = _args("--lengths", "1k,2k", "--num-depths", "5", "--depth-spacing", "sigmoid")
    assert evals_cli._lengths(args, []) == [1000, 2000]
    assert evals_cli._depths(args) == [0.0, 14.91, 50.0, 85.09, 100.0]


def test_endpoint_and_judge_flags_build_the_same_configs_as_the_ui():
    args = _args("--base-url", "http://127.0.0.1:8000/v1", "--model", "llama-80k")
    args.scorer, args.judge_base_url, args.judge_model = "judge", "http://h/v1", "gpt-4o"
    target, scorer = evals_cli._target(args), evals_cli._scorer(args)
    assert target.model is None and target.endpoint.model == "llama-80k"
    assert scorer.public() == {
        "kind": "judge",
        "judge": {"base_url": "http://h/v1", "model": "gpt-4o"},
    }


def test_missing_grid_and_bad_values_fail_in_one_line(capsys):
    assert main(["niah", "--model", "embedded"]) == 1
    assert "give --lengths, or --min-length and --max-length" in capsys.readouterr().err
    assert main(["niah", "--lengths", "500", "--depths", "150", "--max-new-tokens", "0"]) == 1
    err = capsys.readouterr().err
    assert "depths must be percentages" in err and "max_new_tokens" in err


def _folder(path, label, scores):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"kind": "niah", "label": label}))
    cells = [
        {"key": f"L{n}-D0", "length": n, "depth": 0.0, "score": s, "answer": "a"}
        for n, s in scores.items()
    ]
    (path / "cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cells))


def test_eval_diff_writes_the_difference_heatmap(tmp_path, capsys):
    _folder(tmp_path / "base", "base model", {1000: 1.0, 16000: 0.0})
    _folder(tmp_path / "tuned", "tuned model", {1000: 1.0, 16000: 1.0})
    out = tmp_path / "diff.html"
    assert main(["eval-diff", str(tmp_path / "base"), str(tmp_path / "tuned"), "-o", str(out)]) == 0
    assert out.exists() and "tuned model minus base model" in out.read_text()
    assert main(["eval-diff", str(tmp_path), str(tmp_path / "tuned"), "-o", str(out)]) == 1
    assert "is not an evaluation folder" in capsys.readouterr().err


def test_command_for_replays_the_same_configs():
    from core.evals.backends import Endpoint, Target
    from core.evals.niah import NiahConfig
    from core.evals.retrieval import PasskeyConfig, TopicsConfig
    from core.evals.scoring import Scorer
    from core.models.loader import ModelSpec

    cases = [
        (
            NiahConfig(lengths=[500, 2000], depths=[0, 12.5], needle="A needle.", answer="x y"),
            Target(ModelSpec(name="embedded", rope_theta=2e8, dtype="float32")),
            Scorer("keywords"),
        ),
        (
            TopicsConfig(n_topics=[2, 4], trials=2),
            Target(
                endpoint=Endpoint("http://127.0.0.1:8000/v1", "m", "secret"), tokenizer="embedded"
            ),
            Scorer("judge", Endpoint("http://j/v1", "judge-m", "key2")),
        ),
        (PasskeyConfig(lengths=[1000], depths=[50], seed=3), Target(ModelSpec()), Scorer("exact")),
        (
            PasskeyConfig(lengths=[1000], depths=[50], answer_prefix=""),
            Target(ModelSpec()),
            Scorer("exact"),
        ),
        (
            TopicsConfig(n_topics=[2], answer_prefix="The first topic was"),
            Target(ModelSpec()),
            Scorer("exact"),
        ),
    ]
    for task, target, scorer in cases:
        argv = evals_cli.command_for(task, target, scorer, out="evals/x")
        assert "secret" not in argv and "key2" not in argv
        args = build_parser().parse_args(argv[1:])
        assert args.out == "evals/x"
        assert evals_cli._target(args).public() == target.public()
        assert evals_cli._scorer(args).public() == scorer.public()
        assert evals_cli.task_from_args(args) == task


def _replays(task, target, scorer):
    argv = evals_cli.command_for(task, target, scorer, out="evals/x")
    args = build_parser().parse_args(argv[1:])
    assert evals_cli.task_from_args(args) == task
    assert evals_cli._scorer(args).public() == scorer.public()
    return argv


def test_paper_presets_build_and_replay_from_the_command_line():
    from core.evals.backends import Endpoint, Target
    from core.evals.niah import DEFAULT_NEEDLE, PRESETS, WHOLE_NEEDLE
    from core.evals.scoring import Scorer
    from core.models.loader import ModelSpec

    args = _args("--preset", "paper")
    assert evals_cli.task_from_args(args) == PRESETS["paper"].config()
    assert evals_cli._scorer(args).kind == "rouge_l_f1"
    # A short window lowers the longest length; any field stays editable.
    args = _args("--preset", "paper", "--max-length", "8192", "--needle", "Otters nap.")
    task = evals_cli.task_from_args(args)
    assert task.lengths[0] == 512 and task.lengths[-1] == 8192 and len(task.lengths) == 10
    assert task.needle == "Otters nap." and task.expected() == "Otters nap."
    assert task.needle_spacing == "blank_lines" and task.answer == WHOLE_NEEDLE

    target = Target(ModelSpec())
    paper = PRESETS["paper"].config(lengths=[256, 512])
    argv = _replays(paper, target, Scorer("rouge_l_f1"))
    assert argv[argv.index("--preset") + 1] == "paper" and "--template" not in argv
    argv = _replays(paper, target, Scorer("judge", Endpoint("http://j/v1", "judge-m", "k")))
    assert argv[argv.index("--preset") + 1] == "paper-judge" and "--scorer" not in argv
    argv = _replays(
        PRESETS["paper"].config(lengths=[512], needle="X y."), target, Scorer("keywords")
    )
    assert "--preset" in argv and argv[argv.index("--needle") + 1] == "X y."
    # Our own defaults stay preset-free.
    ours = NiahConfig(lengths=[512], depths=[0, 100])
    assert "--preset" not in _replays(ours, target, Scorer("rouge_l"))
    assert NiahConfig().expected() != DEFAULT_NEEDLE


def test_a_judge_preset_without_a_judge_says_what_is_missing(capsys):
    assert main(["niah", "--preset", "paper-judge", "--max-length", "512"]) == 1
    assert "judge scorer needs an endpoint" in capsys.readouterr().err


def test_topics_from_a_longchat_file_replay_and_default_to_substring(tmp_path):
    from core.evals.backends import Target
    from core.evals.retrieval import TopicsConfig
    from core.evals.scoring import Scorer
    from core.models.loader import ModelSpec

    path = tmp_path / "topics.jsonl"
    rows = [{"prompt": "We spoke of A, then B. Which first?", "topics": ["A", "B"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = build_parser().parse_args(["topics", "--file", str(path)])
    task = evals_cli.task_from_args(args)
    assert task.file == str(path.resolve()) and task.n_topics == []
    assert evals_cli._scorer(args).kind == "substring"
    _replays(task, Target(ModelSpec()), Scorer("substring"))
    _replays(TopicsConfig(file=str(path), n_topics=[2]), Target(ModelSpec()), Scorer("exact"))
