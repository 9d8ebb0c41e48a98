"""`longctx niah`, `topics`, `passkey`, `samples`, `perplexity` and `eval-diff`.

Each evaluation command builds the same config dataclasses the Evaluate tab builds, runs an
`Evaluation` into a folder (`--out`, or a new `evals/<id>/` in the workspace), prints one line
per finished cell, and leaves config.json, cells.jsonl and heatmap.html (a figure: for
perplexity, curves) there. Running the same
command with the same `--out` again resumes: finished cells are skipped.

This module knows nothing about gradio.
"""

from __future__ import annotations

import argparse
import math
import sys

from core import threads, workspace
from core.errors import ConfigError
from core.evals import figures, results
from core.evals.backends import Endpoint, Target
from core.evals.niah import (
    DEFAULT_ANSWER,
    DEFAULT_NEEDLE,
    DEFAULT_PREFIX,
    DEFAULT_QUESTION,
    NEEDLE_SPACINGS,
    PRESETS,
    NiahConfig,
    NiahPreset,
    depth_grid,
    length_grid,
    parse_numbers,
    preset_for,
)
from core.evals.perplexity import PerplexityConfig, perplexity_by_length
from core.evals.retrieval import (
    PASSKEY_PREFIX,
    PASSKEY_QUESTION,
    PASSKEY_TEMPLATE,
    TOPIC_QUESTION,
    PasskeyConfig,
    TopicsConfig,
)
from core.evals.ruler import GROUPS as RULER_GROUPS
from core.evals.ruler import THRESHOLD, RulerConfig
from core.evals.runner import (
    DEFAULT_SCORERS,
    Evaluation,
    TaskConfig,
    compare_figure,
    default_scorer,
)
from core.evals.samples import TURNS, SamplesConfig
from core.evals.scoring import PERPLEXITY, SCORERS, Scorer
from core.models.loader import ModelSpec, add_spec_args, spec_from_args
from core.models.rope import RopeSetting


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "niah",
        help="needle-in-a-haystack grid (length x depth) with a heatmap",
        description="Hide a needle sentence in a haystack at each depth and length, ask for it, "
        "score the answers. Example: longctx niah --model embedded --lengths 500,1000,2000 "
        "--depths 0,50,100 --out evals/smollm. The paper's: longctx niah --preset paper "
        "--model M [--max-length 32768] [--haystack ESSAYS/]",
    )
    _target_args(p)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="start from a named setup; the flags below change any of it. "
        + " ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()),
    )
    _grid_args(p, default_depths="0,25,50,75,100")
    p.add_argument("--needle", help=f"the sentence to hide (default {DEFAULT_NEEDLE!r})")
    p.add_argument("--question", help=f"the question asked after it (default {DEFAULT_QUESTION!r})")
    p.add_argument(
        "--answer",
        help="the expected answer; '{needle}' stands for the whole needle (default "
        f"{DEFAULT_ANSWER!r}; the paper presets: '{{needle}}')",
    )
    p.add_argument(
        "--haystack",
        default="builtin",
        help="'builtin' (the installed Python's documentation) or a folder of documents (.txt, .md, .pdf, .epub, .html) or one of them",
    )
    p.add_argument("--template", help="user message with {context} and {question}")
    p.add_argument(
        "--needle-spacing",
        choices=NEEDLE_SPACINGS,
        help="the needle after a space at a sentence end (default), or as a paragraph of its "
        "own between blank lines (the paper presets)",
    )
    _prefix_arg(p, DEFAULT_PREFIX, given=False)
    _common_args(p, "niah")
    p.set_defaults(func=_run_eval)

    p = sub.add_parser(
        "topics",
        help="topic retrieval: a conversation over N topics, asked for the first",
        description="Accuracy of recalling the first of N topics, against N and prompt tokens. "
        "Example (the paper's test): longctx topics --file 5_topics.jsonl --max-new-tokens 50",
    )
    _target_args(p)
    p.add_argument(
        "--file",
        help="a LongChat topic-retrieval test file (JSON lines with 'prompt', or 'context' and "
        "'question', and 'topics'; 'num_topics' optional), as the paper ran it: each row is "
        "sent as one user turn and scored by whether the first topic appears in the answer "
        "(case ignored). Without it, conversations are built from the built-in corpus",
    )
    p.add_argument(
        "--n-topics",
        help="topic counts, e.g. 2,4,8,16 (default 2,4,8; with --file: the rows of these "
        "counts, default every row)",
    )
    p.add_argument("--trials", type=int, default=3, help="conversations per topic count")
    p.add_argument("--turn-tokens", type=int, default=300, help="tokens of each topic's turn")
    p.add_argument("--seed", type=int, default=0, help="draws the topic orders")
    p.add_argument("--question", default=TOPIC_QUESTION, help="asked after the conversation")
    _prefix_arg(p, "")
    _common_args(p, "topics")
    p.set_defaults(func=_run_eval)

    p = sub.add_parser(
        "passkey",
        help="passkey retrieval: a random number hidden in filler text (length x depth)",
        description="Hide a 5-digit pass key in repeated filler at each depth and length.",
    )
    _target_args(p)
    _grid_args(p, default_depths="0,50,100")
    p.add_argument("--trials", type=int, default=1, help="pass keys per cell")
    p.add_argument("--seed", type=int, default=0, help="draws the pass keys")
    p.add_argument("--question", default=PASSKEY_QUESTION, help="asked after the filler")
    p.add_argument(
        "--template", default=PASSKEY_TEMPLATE, help="user message with {context} and {question}"
    )
    _prefix_arg(p, PASSKEY_PREFIX)
    _common_args(p, "passkey")
    p.set_defaults(func=_run_eval)

    p = sub.add_parser(
        "samples",
        help="ask the questions of held-out samples; score the answers against the file's",
        description="Each answer of the first --limit chat samples of DATASET, asked after the "
        "file's conversation so far and scored against the file's answer. Hold samples out of "
        "a training set first: longctx data split FILE --hold-out 50. Example: longctx samples "
        "workspace/datasets/mix.eval.jsonl --model embedded --limit 20",
    )
    p.add_argument("dataset", help="the held-out samples (JSONL, JSON, Parquet, or hub:org/name)")
    _target_args(p)
    p.add_argument("--limit", type=int, default=50, help="ask the first N chat samples")
    p.add_argument(
        "--turns",
        default="all",
        choices=TURNS,
        help="every answer of a sample (all) or only its last one",
    )
    _prefix_arg(p, "")
    _common_args(p, "samples")
    p.set_defaults(func=_run_eval)

    p = sub.add_parser(
        "perplexity",
        help="perplexity against context length, and loss by position (local models)",
        description="Measure how well the model predicts running text with more and more "
        "context before it: the first check after changing a RoPE base. Example: longctx "
        "perplexity --model embedded --rope-theta 1e6 --lengths 2k,8k,16k --windows 2",
    )
    _target_args(p)
    p.add_argument("--lengths", default="1000,2000,4000,8000", help="window lengths in tokens")
    p.add_argument("--windows", type=int, default=3, help="windows of text per length")
    p.add_argument(
        "--source",
        default="builtin",
        help="'builtin' (the installed Python's documentation, ~55K tokens), a folder of long "
        "documents (.txt, .md, .pdf, .epub, .html) or one of them (a book)",
    )
    p.add_argument("--out", help="result folder (default: a new evals/<id>/ in the workspace)")
    p.add_argument("--png", action="store_true", help="also export heatmap.png (needs kaleido)")
    p.set_defaults(func=_run_eval)

    p = sub.add_parser(
        "ruler",
        help="RULER's synthetic tasks (needles, variable tracking, common/frequent words, QA), "
        "generated offline at each length",
        description="Score by task and length on RULER's tasks, built for the model's own "
        "tokenizer with no download. Example: longctx ruler --model embedded --tasks "
        "niah_single,vt,cwe --lengths 2k,4k --n 20 --out evals/ruler-smollm",
    )
    _target_args(p)
    p.add_argument(
        "--tasks",
        default="synthetic",
        help=f"tasks or groups, comma-separated: {', '.join(RULER_GROUPS['all'])}; groups "
        f"{', '.join(RULER_GROUPS)} (default synthetic: all but QA)",
    )
    p.add_argument("--lengths", default="1k,2k,4k", help="prompt lengths in tokens, e.g. 4k,8k")
    p.add_argument("--samples", "--n", type=int, default=20, help="samples per task and length")
    p.add_argument("--seed", type=int, default=0, help="draws keys, values, depths and words")
    p.add_argument(
        "--haystack",
        default="builtin",
        help="text for the needle tasks: 'builtin' (the installed Python's documentation), "
        "'noise' (a filler sentence repeated) or a folder of documents or one of them",
    )
    p.add_argument("--squad", default="", help="SQuAD-format JSON file (task qa_squad)")
    p.add_argument("--hotpot", default="", help="HotpotQA-format JSON file (task qa_hotpot)")
    p.add_argument(
        "--no-answer-prefix",
        dest="answer_prefix",
        action="store_false",
        help="do not start the reply with RULER's answer prefix (local models)",
    )
    p.add_argument(
        "--no-examples",
        dest="examples",
        action="store_false",
        help="no solved instance before each cwe and vt sample (RULER gives one)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help=f"mark where the mean falls under this score in percent (default {THRESHOLD}: "
        "Llama-2-7B at 4K, RULER's bar)",
    )
    _common_args(p, "ruler")
    p.set_defaults(func=_run_eval)

    p = sub.add_parser(
        "eval-diff",
        help="tuned minus base: a difference heatmap (NIAH, passkey) or both curves (perplexity)",
    )
    p.add_argument("base", help="the base model's evaluation folder")
    p.add_argument("tuned", help="the tuned model's evaluation folder")
    p.add_argument("-o", "--output", required=True, help="figure file: .html or .png")
    p.set_defaults(func=_run_diff)


def command_for(
    task: TaskConfig,
    target: Target,
    scorer: Scorer | None = None,
    out: str | None = None,
) -> list[str]:
    """The `longctx ...` command line that runs this evaluation (what the UI shows it will do).

    Only settings that differ from the defaults are spelled out; API keys never are.
    """
    argv = ["longctx", task.kind]
    if isinstance(task, SamplesConfig):
        argv.append(task.dataset)  # positional
    if target.endpoint is not None:
        argv += ["--model", target.endpoint.model, "--base-url", target.endpoint.base_url]
        argv += ["--tokenizer", target.tokenizer] if target.tokenizer else []
    else:
        assert target.model is not None
        default = ModelSpec()
        for name in (
            "name",
            "adapter",
            "rope_theta",
            "rope",
            "max_position_embeddings",
            "quantization",
            "dtype",
            "device",
        ):
            value = getattr(target.model, name)
            if value != getattr(default, name) or name == "name":
                flag = "--model" if name == "name" else "--" + name.replace("_", "-")
                shown = value.spelled() if isinstance(value, RopeSetting) else value
                argv += [flag, f"{shown:g}" if isinstance(shown, float) else str(shown)]
    default_kind = default_scorer(task)
    preset = None
    if isinstance(task, NiahConfig):
        preset = preset_for(task, scorer.kind if scorer else default_kind, default_kind)
    if preset is not None:
        argv += ["--preset", preset.name]
        default_kind = preset.scorer
        defaults: TaskConfig = preset.config(lengths=task.lengths, depths=task.depths)
    elif isinstance(task, SamplesConfig):
        defaults = SamplesConfig(task.dataset)
    else:
        defaults = type(task)()
    for name, value in vars(task).items():
        if name.startswith("_"):  # a cache, not a setting
            continue
        if value == getattr(defaults, name) and name not in ("lengths", "depths", "n_topics"):
            continue
        if isinstance(value, bool):  # RULER's switches: --no-answer-prefix, --no-examples
            argv.append("--no-" + name.replace("_", "-"))
            continue
        if isinstance(value, list):
            value = ",".join(_list_item(v) for v in value)
        argv += ["--" + name.replace("_", "-"), str(value)]
    if scorer is not None and scorer.kind != default_kind:
        argv += ["--scorer", scorer.kind]
    if scorer is not None and scorer.judge is not None:
        argv += ["--judge-base-url", scorer.judge.base_url, "--judge-model", scorer.judge.model]
    return argv + (["--out", str(out)] if out else [])


def _list_item(value: object) -> str:
    if isinstance(value, str):  # RULER's task names
        return value
    return str(int(value)) if float(value).is_integer() else str(value)  # type: ignore[arg-type]


def _target_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (local, or behind an OpenAI-compatible endpoint)")
    g.add_argument(
        "--model",
        default="embedded",
        help="'embedded', a folder or a Hub id; with --base-url, the name the server serves",
    )
    add_spec_args(g)
    g.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--api-key", help="endpoint key (default $OPENAI_API_KEY); never saved")
    g.add_argument(
        "--tokenizer", help="endpoint only: tokenizer measuring lengths (default --model)"
    )


def _grid_args(p: argparse.ArgumentParser, default_depths: str) -> None:
    g = p.add_argument_group("grid")
    g.add_argument("--lengths", help="prompt lengths in tokens, e.g. 500,1000,2k")
    g.add_argument("--min-length", type=int, help="or: shortest length ...")
    g.add_argument("--max-length", type=int, help="... longest length ...")
    g.add_argument(
        "--num-lengths",
        type=int,
        help="... and how many (default 5; a preset's own). With a preset, --max-length alone "
        "lowers its longest length; below its shortest, the grid shrinks with it (shortest = "
        "longest / 16, at least 256)",
    )
    g.add_argument(
        "--length-spacing", choices=("linear", "log"), help="spacing of a range (default linear)"
    )
    g.add_argument("--depths", help=f"needle depths in percent (default {default_depths})")
    g.add_argument("--num-depths", type=int, help="or: this many depths from 0 to 100 ...")
    g.add_argument("--depth-spacing", default="linear", choices=("linear", "sigmoid"))
    p.set_defaults(default_depths=default_depths)


def _prefix_arg(p: argparse.ArgumentParser, default: str, given: bool = True) -> None:
    """`--answer-prefix`; with `given` False it stays None unless given (a preset fills it)."""
    p.add_argument(
        "--answer-prefix",
        default=default if given else None,
        help="the start of the answer, which the model continues: after the chat template's "
        "generation prompt (local), or as a last assistant message sent with "
        f"continue_final_message (endpoints); '' for none (default {default!r})",
    )


def _common_args(p: argparse.ArgumentParser, kind: str) -> None:
    g = p.add_argument_group("scoring and output")
    default = {"niah": ", a preset's own", "topics": ", substring with --file"}.get(kind, "")
    g.add_argument(
        "--scorer",
        choices=SCORERS,
        help=f"how answers are scored (default {DEFAULT_SCORERS[kind]}{default})",
    )
    g.add_argument("--judge-base-url", help="judge endpoint (scorer 'judge')")
    g.add_argument("--judge-model", help="judge model name")
    g.add_argument("--judge-api-key", help="judge key (default $OPENAI_API_KEY); never saved")
    g.add_argument("--max-new-tokens", type=int, help="longest answer in tokens")
    g.add_argument("--out", help="result folder (default: a new evals/<id>/ in the workspace)")
    g.add_argument("--png", action="store_true", help="also export heatmap.png (needs kaleido)")


def _lengths(
    args: argparse.Namespace, problems: list[str], preset: NiahPreset | None = None
) -> list[float]:
    if args.lengths:
        return parse_numbers(args.lengths)
    if preset is not None:
        grid = preset.lengths(
            args.min_length, args.max_length, args.num_lengths, args.length_spacing
        )
        return [float(x) for x in grid]
    if args.min_length and args.max_length:
        return [
            float(x)
            for x in length_grid(
                args.min_length,
                args.max_length,
                args.num_lengths or 5,
                args.length_spacing or "linear",
            )
        ]
    problems.append("give --lengths, or --min-length and --max-length (or a --preset)")
    return []


def _depths(args: argparse.Namespace, preset: NiahPreset | None = None) -> list[float]:
    if args.depths:
        return parse_numbers(args.depths)
    if args.num_depths:
        return depth_grid(0, 100, args.num_depths, args.depth_spacing)
    if preset is not None:
        return preset.depths()
    return parse_numbers(args.default_depths)


def _target(args: argparse.Namespace) -> Target:
    if args.base_url:
        return Target(
            endpoint=Endpoint(args.base_url, args.model, args.api_key), tokenizer=args.tokenizer
        )
    return Target(model=spec_from_args(args))


def _scorer(args: argparse.Namespace) -> Scorer:
    if args.command == PERPLEXITY:
        return Scorer(PERPLEXITY)
    kind = args.scorer or _default_scorer(args)
    judge = None
    if kind == "judge" and (args.judge_base_url or args.judge_model):
        judge = Endpoint(args.judge_base_url or "", args.judge_model or "", args.judge_api_key)
    return Scorer(kind, judge)


def _default_scorer(args: argparse.Namespace) -> str:
    """The scorer when --scorer is not given: the preset's, else the task's
    (`core.evals.runner.default_scorer`, read from the arguments)."""
    if getattr(args, "preset", None):
        return PRESETS[args.preset].scorer
    if args.command == "topics" and args.file:
        return "substring"
    return DEFAULT_SCORERS[args.command]


def _extra(args: argparse.Namespace) -> dict:
    return {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens is not None else {}


_NIAH_FLAGS = ("needle", "question", "answer", "template", "answer_prefix", "needle_spacing")


def _niah_task(args: argparse.Namespace) -> NiahConfig:
    preset = PRESETS[args.preset] if args.preset else None
    problems: list[str] = []
    lengths = _lengths(args, problems, preset)
    if problems:
        raise ConfigError(problems)
    # Given flags override the preset (or our defaults); the others are None.
    given = {name: getattr(args, name) for name in _NIAH_FLAGS if getattr(args, name) is not None}
    grid = {
        "lengths": lengths,
        "depths": _depths(args, preset),
        "haystack": workspace.allow_given(args.haystack),
    }
    if preset is not None:
        return preset.config(**grid, **given, **_extra(args))
    return NiahConfig(**grid, **given, **_extra(args))


def _topics_task(args: argparse.Namespace) -> TopicsConfig:
    file = workspace.allow_given(args.file, builtin="") if args.file else ""
    n_topics = args.n_topics if args.n_topics is not None else ("" if file else "2,4,8")
    return TopicsConfig(
        file=file,
        n_topics=parse_numbers(n_topics),
        trials=args.trials,
        turn_tokens=args.turn_tokens,
        seed=args.seed,
        question=args.question,
        answer_prefix=args.answer_prefix,
        **_extra(args),
    )


def _passkey_task(args: argparse.Namespace) -> PasskeyConfig:
    problems: list[str] = []
    lengths = _lengths(args, problems)
    if problems:
        raise ConfigError(problems)
    return PasskeyConfig(
        lengths=lengths,
        depths=_depths(args),
        trials=args.trials,
        seed=args.seed,
        question=args.question,
        template=args.template,
        answer_prefix=args.answer_prefix,
        **_extra(args),
    )


def _perplexity_task(args: argparse.Namespace) -> PerplexityConfig:
    source = workspace.allow_given(args.source)
    return PerplexityConfig(lengths=args.lengths, windows=args.windows, source=source)


def _samples_task(args: argparse.Namespace) -> SamplesConfig:
    dataset = args.dataset
    if not dataset.startswith("hub:"):
        dataset = workspace.allow_given(dataset)
    return SamplesConfig(
        dataset,
        limit=args.limit,
        turns=args.turns,
        answer_prefix=args.answer_prefix,
        **_extra(args),
    )


def _ruler_task(args: argparse.Namespace) -> RulerConfig:
    given = {}
    for name in ("squad", "hotpot"):
        given[name] = workspace.allow_given(getattr(args, name)) if getattr(args, name) else ""
    haystack = args.haystack
    if haystack not in ("builtin", "noise"):
        haystack = workspace.allow_given(haystack)
    return RulerConfig(
        tasks=args.tasks,
        lengths=parse_numbers(args.lengths),
        samples=args.samples,
        seed=args.seed,
        haystack=haystack,
        answer_prefix=args.answer_prefix,
        examples=args.examples,
        threshold=args.threshold,
        **given,
        **_extra(args),
    )


def task_from_args(args: argparse.Namespace) -> TaskConfig:
    """The task config an evaluation command's arguments describe."""
    make = {
        "niah": _niah_task,
        "topics": _topics_task,
        "passkey": _passkey_task,
        "samples": _samples_task,
        "perplexity": _perplexity_task,
        "ruler": _ruler_task,
    }
    return make[args.command](args)


def _run_eval(args: argparse.Namespace) -> int:
    return _run(task_from_args(args), args)


def _run(task, args: argparse.Namespace) -> int:
    evaluation = Evaluation(task, _target(args), _scorer(args), args.out)
    if getattr(args, "preset", None):
        print(f"preset {args.preset}: {PRESETS[args.preset].description}", flush=True)
    if evaluation.target.endpoint is None and threads.owns_process(args):
        threads.governor("eval")  # a local model computes here: on the thread budget
    pending = evaluation.pending()
    print(
        f"{task.kind}: {evaluation.target.label}: {len(pending)} cells to run, "
        f"{len(task.cell_keys()) - len(pending)} already done, in {evaluation.path}",
        flush=True,
    )
    show = _show_perplexity if task.kind == PERPLEXITY else _show_answers
    cells, summary = show(evaluation)
    print(f"{summary}{evaluation.path / results.HEATMAP_FILE}", flush=True)
    if args.png:
        path = figures.export(evaluation.figure(cells), evaluation.path / "heatmap.png")
        print(f"wrote {path}", flush=True)
    return 0


def _show_answers(evaluation: Evaluation) -> tuple[list[dict], str]:
    """Run, printing each answered cell; returns every cell and the mean score to print."""
    for cell in evaluation.run():
        score = "n/a " if cell["score"] is None else f"{cell['score']:.2f}"
        print(
            f"{cell['key']:<16} {cell['prompt_tokens']:>7} tokens  score {score}  "
            f"{cell['seconds']:6.1f}s  {cell['answer'][:70]!r}",
            flush=True,
        )
    cells = evaluation.cells()
    if isinstance(evaluation.task, RulerConfig):
        _show_ruler(cells, evaluation.task.threshold)
    if evaluation.task.kind == "samples":
        for name, group in figures.cells_by_task(cells).items():
            print(
                f"{name:<24} mean score {figures.mean_score(group):.3f} over {len(group)} answers"
            )
    mean = figures.mean_score(cells)
    return (
        cells,
        f"mean score {'n/a' if math.isnan(mean) else f'{mean:.3f}'} over {len(cells)} cells; ",
    )


def _show_ruler(cells: list[dict], threshold: float) -> None:
    """RULER's table: score in percent by task (rows) and length (columns), then the mean."""
    from core.evals.ruler import falls_under, mean_by_length, score_table

    table = score_table(cells)
    lengths = sorted({n for row in table.values() for n in row})
    print(f"{'task':<18}" + "".join(f"{n:>9,}" for n in lengths), flush=True)
    for task, row in table.items():
        print(
            f"{task:<18}" + "".join(f"{row[n]:>9.1f}" if n in row else f"{'':>9}" for n in lengths)
        )
    means = mean_by_length(table)
    print(f"{'mean':<18}" + "".join(f"{means[n]:>9.1f}" for n in lengths))
    under = falls_under(means, threshold)
    print(
        f"the mean falls under {threshold:g} at {under:,} tokens"
        if under
        else f"the mean stays at or above {threshold:g} up to {max(lengths, default=0):,} tokens"
    )


def _show_perplexity(evaluation: Evaluation) -> tuple[list[dict], str]:
    """Run, printing each measured window, then the perplexity per length; returns every
    cell (and nothing to print before the figure's path)."""
    for cell in evaluation.run():
        print(
            f"{cell['key']:<16} {cell['prompt_tokens']:>7} tokens  perplexity {cell['ppl']:9.3f}  "
            f"{cell['seconds']:6.1f}s",
            flush=True,
        )
    cells = evaluation.cells()
    for length, (ppl, windows) in perplexity_by_length(cells).items():
        print(f"{length:>8,} tokens: perplexity {ppl:.3f} over {windows} windows", flush=True)
    return cells, ""


def _run_diff(args: argparse.Namespace) -> int:
    path = figures.export(compare_figure(args.base, args.tuned), args.output)
    print(f"wrote {path}", file=sys.stdout, flush=True)
    return 0
