"""The evaluation commands' arguments (in process: no model is loaded) and `eval-diff`."""

from __future__ import annotations

import json

from core.cli import evals as evals_cli
from core.cli.main import build_parser, main


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
