"""Experiments: an experiment file is planned into longctx commands, checked before it runs,
runs end to end, resumes after a stop and after a kill without redoing finished steps, and its
report holds every section."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core import threads
from core.cli.experiment import check_commands
from core.cli.main import build_parser
from core.errors import ConfigError
from core.experiments import runner, spec

ROOT = Path(__file__).resolve().parent.parent


def tiny_experiment(model: Path, **changes) -> dict:
    raw = {
        "name": "tiny",
        "model": str(model),
        "data": [
            {"name": "keys", "make": "keys", "n": 6, "length": 300},
            {"name": "mix", "mix": ["keys:5"]},
        ],
        "train": [
            {
                "name": "tuned",
                "preset": "cpu-keys",
                "data": ["mix"],
                "rope_theta": 40000,
                "max_length": 512,
                "max_steps": 12,
                "save_steps": 2,
            }
        ],
        "evaluate": {
            "models": ["base", "rope", "tuned"],
            "tasks": {
                "niah": {"lengths": [200, 400], "depths": [0, 100], "max_new_tokens": 8},
                "perplexity": {"lengths": [256], "windows": 1},
            },
        },
    }
    raw.update(changes)
    return raw


# -- planning ------------------------------------------------------------------------------------


def test_a_plan_names_every_step_with_its_command(tmp_path):
    experiment = spec.plan(tiny_experiment(tmp_path / "model"))
    ids = [s.id for s in experiment.steps]
    assert ids == [
        "data-keys",
        "data-mix",
        "train-tuned",
        "niah-base",
        "niah-rope",
        "niah-tuned",
        "perplexity-base",
        "perplexity-rope",
        "perplexity-tuned",
    ]
    folder = tmp_path / "exp"
    mix = experiment.step("data-mix").command(folder)
    # A mix part names an earlier step (with a count), which becomes that step's file.
    assert mix == [
        "data",
        "mix",
        f"{folder}/data-mix/data.jsonl",
        f"{folder}/data-keys/data.jsonl:5",
    ]
    config = experiment.step("train-tuned").train_config(folder)
    assert config.data[0].path == f"{folder}/data-mix/data.jsonl"
    assert config.learning_rate == 0.001 and config.rope_theta == 40000  # preset, then changes
    # The three models: as it is, with only the training's RoPE change, with the adapter.
    assert "--rope-theta" not in experiment.step("niah-base").argv
    rope = experiment.step("niah-rope").command(folder)
    assert rope[rope.index("--rope-theta") + 1] == "40000"
    tuned = experiment.step("niah-tuned").command(folder)
    assert tuned[tuned.index("--adapter") + 1] == f"{folder}/train-tuned/adapter"
    assert tuned[tuned.index("--lengths") + 1] == "200,400"
    check_commands(experiment, build_parser())  # every command line parses


def test_every_problem_of_a_file_is_listed_before_anything_runs(tmp_path):
    raw = tiny_experiment(tmp_path)
    raw["data"].append({"name": "odd", "make": "keys", "mix": ["keys"]})
    raw["train"][0]["learning_rat"] = 1e-4
    raw["evaluate"]["models"].append("nobody")
    raw["evaluate"]["tasks"]["nope"] = {}
    raw["extra"] = 1
    with pytest.raises(ConfigError) as caught:
        spec.plan(raw)
    text = str(caught.value)
    assert "unknown part 'extra'" in text
    assert "data step 'odd': give exactly one of" in text
    assert "'learning_rat' (did you mean 'learning_rate'?)" in text
    assert "model 'nobody' is none of base, rope or a training step" in text
    assert "unknown task 'nope'" in text


def test_a_misspelled_option_fails_the_check_not_the_step(tmp_path):
    raw = tiny_experiment(tmp_path)
    raw["evaluate"]["tasks"]["niah"]["max_tokens"] = 8
    experiment = spec.plan(raw)
    with pytest.raises(ConfigError, match="step niah-base: .*unrecognized arguments: --max-tokens"):
        check_commands(experiment, build_parser())


def test_a_changed_step_reruns_what_reads_it_and_nothing_else(tmp_path):
    before = spec.plan(tiny_experiment(tmp_path))
    more = tiny_experiment(tmp_path)
    more["evaluate"]["tasks"]["niah"]["depths"] = [0, 50, 100]
    after = spec.plan(more)
    same = {s.id for s in after.steps if after.digest(s) == before.digest(before.step(s.id))}
    assert same == {
        "data-keys",
        "data-mix",
        "train-tuned",
        "perplexity-base",
        "perplexity-rope",
        "perplexity-tuned",
    }
    fewer = tiny_experiment(tmp_path)
    fewer["data"][0]["n"] = 5  # the data changes: the training on it and its evaluations too
    after = spec.plan(fewer)
    same = {s.id for s in after.steps if after.digest(s) == before.digest(before.step(s.id))}
    assert same == {"niah-base", "niah-rope", "perplexity-base", "perplexity-rope"}


def test_the_presets_plan_and_parse():
    parser = build_parser()
    for name in spec.list_presets():
        experiment = spec.load(name)
        check_commands(experiment, parser)
        assert experiment.of_kind("train") and experiment.of_kind("eval"), name
    mini = spec.load("miniature-cpu")
    assert {s.model for s in mini.of_kind("eval")} == {"base", "rope", "tuned"}


# -- running -------------------------------------------------------------------------------------


def _start(file: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "LONGCTX_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", "experiment", "run", str(file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _state(folder: Path) -> dict:
    return runner.read_state(folder)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            pytest.fail(f"the experiment ended early:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            pytest.fail("the experiment did not get there in time")
        time.sleep(0.1)


@pytest.mark.integration
def test_an_experiment_stopped_then_killed_resumes_and_reports(tmp_path, tiny_llama_dir):
    home = tmp_path / "home"
    file = tmp_path / "tiny.yaml"
    file.write_text(yaml.safe_dump(tiny_experiment(tiny_llama_dir)))
    folder = home / "experiments" / "tiny"
    train = folder / "train-tuned"

    # 1. Stop (the app's Stop, Ctrl-C) while it trains: the training checkpoints and stops.
    first = _start(file, home)

    def trained_a_checkpoint():
        return any((train / "checkpoints").glob("checkpoint-*/trainer_state.json"))

    _wait_for(trained_a_checkpoint, first)
    os.kill(first.pid, signal.SIGTERM)
    assert first.wait(120) == 1
    state = _state(folder)
    assert state["state"] == "stopped" and state["steps"]["train-tuned"]["state"] == "stopped"
    data_started = {s: state["steps"][s]["started"] for s in ("data-keys", "data-mix")}
    stopped_at = json.loads((train / "status.json").read_text())["step"]
    assert 2 <= stopped_at < 12

    # 2. Run it again: the data steps are skipped, the training resumes from its checkpoint;
    # then kill everything at once (power loss) during the second evaluation.
    second = _start(file, home)
    _wait_for(lambda: (folder / "niah-rope" / "config.json").exists(), second)
    state = _state(folder)
    os.killpg(second.pid, signal.SIGKILL)
    os.killpg(state["steps"]["niah-rope"]["pid"], signal.SIGKILL)
    second.wait(30)
    # SIGKILL lands when the step is next scheduled (on a loaded machine, not at once).
    deadline = time.monotonic() + 30
    while threads.process_alive(state["steps"]["niah-rope"]["pid"]):
        assert time.monotonic() < deadline, "the killed step is still alive"
        time.sleep(0.1)
    state = _state(folder)
    assert state["state"] == "interrupted" and state["steps"]["niah-rope"]["state"] == "interrupted"
    assert {s: state["steps"][s]["started"] for s in data_started} == data_started
    log = (train / "log.txt").read_text()
    assert "--resume" in log
    metrics = [json.loads(line) for line in (train / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # one row per step across the resume
    niah_base = state["steps"]["niah-base"]["started"]

    # 3. Once more to the end: only what was left runs.
    third = _start(file, home)
    out, _ = third.communicate(timeout=600)
    assert third.returncode == 0, out
    assert re.search(r"\[data-keys\] done before, skipped", out)
    assert re.search(r"\[train-tuned\] done before, skipped", out)
    assert re.search(r"\[niah-base\] done before, skipped", out)
    assert "[niah-rope] longctx niah" in out  # resumed: it was interrupted
    state = _state(folder)
    assert state["state"] == "completed"
    assert state["steps"]["niah-base"]["started"] == niah_base
    for step_id, record in state["steps"].items():
        assert record["state"] == "done", step_id
        assert record["seconds"] > 0 and record["peak_rss"] > 50 * 2**20, step_id

    # The report holds every section, the three models side by side.
    page = (folder / runner.REPORT_FILE).read_text()
    sections = re.findall(r"<h2>([^<]+)</h2>", page)
    assert sections == [
        "Recipe and data",
        "Training loss",
        "Needle in a haystack",
        "Perplexity",
        "Scorecard",
        "Steps",
        "Experiment file",
    ]
    for label in ("base: mean", "RoPE change only: mean", "tuned: mean"):
        assert label in page
    assert "NIAH @ 400" in page and "Perplexity @ 256" in page
    # Opens offline: plotly.js is in the page, no script comes from elsewhere.
    assert "Plotly" in page and re.search(r"<script[^>]*\bsrc=", page) is None

    # The tuned adapter's model card (export, push) carries the experiment's results.
    from core.train import export

    card = export.write_model_card(train / "adapter", train / "adapter", merged=False).read_text()
    experiment_part = card.split("## Experiment", 1)[1]
    assert "| NIAH @ 400 |" in experiment_part and "RoPE change only" in experiment_part
    assert "| train-tuned | done |" in experiment_part


@pytest.mark.integration
def test_a_failed_step_stops_the_experiment_with_its_reason(tmp_path, tiny_llama_dir):
    raw = tiny_experiment(tiny_llama_dir)
    raw["data"] = [{"name": "keys", "import": str(tmp_path / "missing.jsonl")}]
    raw["train"][0]["data"] = ["keys"]
    file = tmp_path / "broken.yaml"
    file.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "experiment", "run", str(file)],
        cwd=ROOT,
        env={**os.environ, "LONGCTX_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "data-keys" in result.stderr and "missing.jsonl" in result.stderr
    state = _state(tmp_path / "home" / "experiments" / "tiny")
    assert state["state"] == "failed" and state["steps"]["data-keys"]["state"] == "failed"
    assert "train-tuned" not in state["steps"]  # nothing after the failure ran


def test_a_setting_left_at_its_default_does_not_change_a_training_digest(tmp_path):
    experiment = spec.plan(tiny_experiment(tmp_path))
    step = experiment.step("train-tuned")
    explicit = dict(step.config, weight_decay=0.0)  # the default, now written out
    assert spec.Step(step.id, step.kind, step.argv, config=explicit).digest == step.digest
    changed = dict(step.config, weight_decay=0.1)
    assert spec.Step(step.id, step.kind, step.argv, config=changed).digest != step.digest
    trimmed = {k: v for k, v in step.config.items() if k != "threads"}  # as if added later
    assert spec.Step(step.id, step.kind, step.argv, config=trimmed).digest == step.digest
