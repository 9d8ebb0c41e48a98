"""The command lines the Generate tab shows run exactly what the form describes."""

from __future__ import annotations

from dataclasses import replace

from core.cli import synth as synth_cli
from core.cli.main import build_parser
from core.synth.client import EndpointConfig
from core.synth.config import SynthConfig


def test_synth_command_round_trips_through_the_real_parser(tmp_path):
    config = SynthConfig(
        task="multi-detail",
        source=str(tmp_path),
        n_docs=3,
        min_tokens=500,
        seed=7,
        multi_mode="heterogeneous",
        drop_unsupported=True,
        use_cache=False,
        out=str(tmp_path / "out.jsonl"),
        endpoint=EndpointConfig(
            base_url="http://127.0.0.1:9/v1",
            model="gpt-x",
            api_key="sk-never-shown",
            temperature=0.3,
            price_in=2.5,
        ),
    )
    argv = synth_cli.command_for(config)
    assert argv[:3] == ["longctx", "synth", "multi-detail"]
    assert "sk-never-shown" not in " ".join(argv)
    parsed = synth_cli.config_from_args(build_parser().parse_args(argv[1:]))
    assert parsed == replace(config, endpoint=replace(config.endpoint, api_key=""))


def test_defaults_are_left_out_and_edited_prompts_are_marked():
    config = SynthConfig(prompts={"single_detail": "my prompt {passage}"})
    argv = synth_cli.command_for(config)
    assert argv == [
        "longctx",
        "synth",
        "single-detail",
        "--base-url",
        EndpointConfig.base_url,
        "--model",
        EndpointConfig.model,
        "--prompt",
        "single_detail=FILE",
    ]


def test_the_paper_set_fills_in_its_settings_and_its_commands_replay(tmp_path):
    parse = build_parser().parse_args
    args = ["synth", "multi-detail", "--prompt-set", "paper", "--source", str(tmp_path)]
    paper = synth_cli.config_from_args(parse(args))
    assert (
        paper.endpoint.temperature,
        paper.qa_per_chunk,
        paper.multi_mode,
        paper.endpoint.answer_tokens,
    ) == (0.0, 10, "homogeneous", 4096)
    assert synth_cli.config_from_args(parse(args + ["--qa-per-chunk", "3"])).qa_per_chunk == 3
    studio = synth_cli.config_from_args(parse(args[:2] + ["--source", str(tmp_path)]))
    assert (studio.prompt_set, studio.endpoint.temperature, studio.qa_per_chunk) == (
        "studio",
        0.7,
        3,
    )
    # A value equal to the studio default but not the paper's is spelled out, and replays.
    config = replace(paper, qa_per_chunk=3)
    argv = synth_cli.command_for(config)
    assert "--temperature" not in argv and argv[argv.index("--qa-per-chunk") + 1] == "3"
    assert synth_cli.config_from_args(parse(argv[1:])) == config


def test_make_command_parses_to_the_same_settings():
    argv = synth_cli.make_command_for(
        "topics",
        n=12,
        length=2000,
        tokenizer_name="embedded",
        seed=3,
        depths=[0, 50.5],
        n_topics=4,
        out="t.jsonl",
    )
    args = build_parser().parse_args(argv[1:])
    assert (
        args.task,
        args.n,
        args.length,
        args.model,
        args.seed,
        args.depths,
        args.topics,
        args.out,
    ) == ("topics", 12, 2000, "embedded", 3, [0.0, 50.5], 4, "t.jsonl")
