"""An experiment file, read and planned: data -> training -> evaluations, as longctx commands.

An experiment is a YAML file (see assets/experiments/) with four parts:

```yaml
name: miniature-cpu
model: embedded                  # the base model of every step
data:                            # steps in order; each writes data.jsonl in its own folder
  - {name: keys, make: keys, n: 24, length: 12000}
  - {name: mix, mix: [keys, text]}        # parts are earlier steps (or files), NAME:COUNT too
train:                           # TrainConfig fields, from an optional preset; data: step names
  - {name: tuned, preset: cpu-keys, data: [mix], rope_theta: 1e6, max_length: 16384}
evaluate:
  models: [base, rope, tuned]    # the base; the base with only the RoPE change; a trained run
  tasks:                         # any evaluation command, options as its flags
    niah: {lengths: [2000, 8000, 16000], depths: [0, 50, 100]}
```

Relative paths in the file are the workspace's (`datasets/qa.jsonl`), as in a training config.
Planning turns it into `Step`s, each one `longctx` command line writing into its own folder of
the experiment, so a step does exactly what its command (and its tab) does. Command lines hold
`{dir}` for the experiment's folder until they run, so a step's digest does not change when the
folder moves; a changed step (another digest) is run again.

This module knows nothing about gradio, argparse or processes (core/experiments/runner.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core import configs
from core.errors import ConfigError
from core.train.config import PRESETS_DIR, TrainConfig, load_preset

EXPERIMENTS_DIR = PRESETS_DIR.parent / "experiments"
DIR = "{dir}"
"""Stands for the experiment's folder in a planned command line."""
DATA_COMMANDS = ("make", "synth", "import", "mix", "split")
BASE, ROPE = "base", "rope"
"""Model labels of the evaluation part: the base model, and the base with only the RoPE change
of the (first) training step."""
EVAL_COMMANDS = (
    "niah",
    "passkey",
    "topics",
    "samples",
    "perplexity",
    "ruler",
    "harness",
    "mmlu",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


@dataclass
class Step:
    """One command of an experiment, and the folder it writes."""

    id: str
    """Its folder under the experiment (`data-keys`, `train-tuned`, `niah-base`)."""
    kind: str
    """`data`, `train` or `eval`."""
    argv: list[str]
    """The `longctx` command line, without `longctx`; `{dir}` is the experiment's folder."""
    model: str = ""
    """Evaluation steps: the model label (`base`, `rope` or a training step's name)."""
    task: str = ""
    """Evaluation steps: the command (`niah`, `ruler`, ...)."""
    config: dict[str, Any] | None = None
    """Training steps: the TrainConfig written to the step's config.yaml before it runs."""

    @property
    def digest(self) -> str:
        """Changes whenever what the step does changes (its command line or its config). A
        config setting at its default value does not count, so a setting added to TrainConfig
        later leaves finished trainings finished."""
        config = self.config
        if config is not None:
            defaults = TrainConfig().to_dict()
            config = {k: v for k, v in config.items() if k not in defaults or defaults[k] != v}
        text = json.dumps([self.argv, config], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def command(self, folder: str | Path) -> list[str]:
        """The command line with the experiment's folder filled in."""
        return [arg.replace(DIR, str(folder)) for arg in self.argv]

    def train_config(self, folder: str | Path) -> TrainConfig:
        """Training steps: the config, its data paths pointing into `folder`."""
        text = json.dumps(self.config).replace(DIR, str(folder))
        return TrainConfig.from_dict(json.loads(text))


@dataclass
class Experiment:
    """A parsed experiment file and its planned steps."""

    name: str
    model: str
    steps: list[Step]
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    """The file as read, saved beside the results."""

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def digest(self, step: Step) -> str:
        """The step's own digest joined with those of the steps whose folders it reads, so a
        changed data step makes the training on it (and that training's evaluations) run
        again, while a new evaluation leaves the training done."""
        text = json.dumps([step.argv, step.config], default=str)
        parts = [step.digest]
        parts += [self.digest(s) for s in self.steps if s is not step and f"{DIR}/{s.id}/" in text]
        return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]

    def of_kind(self, kind: str) -> list[Step]:
        return [s for s in self.steps if s.kind == kind]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False, allow_unicode=True, width=100)


def list_presets() -> list[str]:
    return configs.preset_names(EXPERIMENTS_DIR)


def preset_path(name: str) -> Path:
    return configs.preset_file(EXPERIMENTS_DIR, name, "experiment preset")


def load(source: str | Path) -> Experiment:
    """Read an experiment from a file, a preset name (`miniature-cpu`) or YAML text.

    Raises:
        ConfigError: every problem found, before anything runs.
    """
    text = str(source)
    if isinstance(source, Path) or ("\n" not in text and text.endswith((".yaml", ".yml"))):
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"experiment file {text!r} does not exist")
        text = path.read_text()
    elif "\n" not in text and ":" not in text:
        text = preset_path(text).read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"the experiment's YAML does not parse: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("an experiment is a mapping with name, model, data, train, evaluate")
    return plan(raw)


def plan(raw: dict[str, Any]) -> Experiment:
    """The steps of an experiment mapping, in the order they run."""
    raw = copy.deepcopy(raw)
    problems: list[str] = []
    unknown = sorted(set(raw) - {"name", "model", "description", "data", "train", "evaluate"})
    problems += [
        f"unknown part {k!r} (name, model, description, data, train, evaluate)" for k in unknown
    ]
    name = str(raw.get("name") or "").strip()
    if not _NAME.match(name):
        problems.append(
            f"name {name!r}: letters, digits, '-', '_' or '.', at most 48 (it names the folder)"
        )
    model = str(raw.get("model") or "embedded")
    planner = _Planner(model, problems)
    for entry in _entries(raw.get("data"), "data", problems):
        planner.data(entry)
    for entry in _entries(raw.get("train"), "train", problems):
        planner.train(entry)
    planner.evaluate(raw.get("evaluate") or {})
    if not planner.steps and not problems:
        problems.append("the experiment has no steps: give it data, train or evaluate")
    if problems:
        raise ConfigError(problems)
    return Experiment(name, model, planner.steps, str(raw.get("description") or ""), raw)


def _entries(value: Any, part: str, problems: list[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        problems.append(f"{part}: a list of steps, each a mapping with a name")
        return []
    return value


def flags(options: dict[str, Any]) -> list[str]:
    """Options as command-line flags: `max_new_tokens: 32` -> `--max-new-tokens 32`, a list
    joined with commas, `true` a bare flag, `false` or null left out."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            out += [flag, ",".join(_number(v) for v in value)]
        else:
            out += [flag, _number(value)]
    return out


def _number(value: Any) -> str:
    """1e6 written by YAML as a float prints as 1000000.0; keep ints as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


class _Planner:
    def __init__(self, model: str, problems: list[str]) -> None:
        self.model = model
        self.problems = problems
        self.steps: list[Step] = []
        self.outputs: dict[str, str] = {}
        """Data reference -> file it names (`keys` -> {dir}/data-keys/data.jsonl)."""
        self.trained: dict[str, TrainConfig] = {}

    def _name(self, entry: dict[str, Any], part: str) -> str | None:
        name = str(entry.get("name") or "")
        if not _NAME.match(name):
            self.problems.append(f"{part} step {entry!r}: needs a name (letters, digits, -_.)")
            return None
        if any(s.id == f"{part}-{name}" for s in self.steps):
            self.problems.append(f"{part} step {name!r} is named twice")
            return None
        return name

    def ref(self, value: Any) -> str:
        """A data reference: an earlier data step's file (`NAME[N]`: N random rows of it),
        else a path as it is."""
        text = str(value)
        sampled = re.fullmatch(r"(.+)(\[\d+\])", text)
        if sampled and sampled.group(1) in self.outputs:
            return self.outputs[sampled.group(1)] + sampled.group(2)
        return self.outputs.get(text, text)

    def _part(self, value: Any) -> str:
        """A mix part: STEP or FILE, optionally with :COUNT, :RATIO or :PERCENT."""
        text = str(value)
        head, sep, tail = text.rpartition(":")
        if sep and re.fullmatch(r"[0-9.]+%?", tail):
            return f"{self.ref(head)}:{tail}"
        return self.ref(text)

    # -- data ------------------------------------------------------------------------------

    def data(self, entry: dict[str, Any]) -> None:
        name = self._name(entry, "data")
        if name is None:
            return
        commands = [c for c in DATA_COMMANDS if c in entry]
        if len(commands) != 1:
            self.problems.append(
                f"data step {name!r}: give exactly one of {', '.join(DATA_COMMANDS)}"
            )
            return
        command = commands[0]
        options = {k: v for k, v in entry.items() if k not in ("name", command)}
        folder = f"{DIR}/data-{name}"
        out = f"{folder}/data.jsonl"
        what = entry[command]
        if command == "make":
            options.setdefault("model", self.model)
            argv = ["make", str(what), "--out", out, *flags(options)]
        elif command == "synth":
            argv = ["synth", str(what), "--out", out, *flags(options)]
        elif command == "import":
            argv = ["data", "import", self.ref(what), "--out", out, *flags(options)]
        elif command == "mix":
            parts = what if isinstance(what, list) else [what]
            argv = ["data", "mix", out, *(self._part(p) for p in parts), *flags(options)]
        else:  # split: hold chat samples out of an earlier step's file
            train, held = f"{folder}/train.jsonl", f"{folder}/eval.jsonl"
            argv = ["data", "split", self.ref(what), "--train", train, "--eval", held]
            argv += flags(options)
            self.outputs[f"{name}/eval"] = held
            out = train
        self.outputs[name] = out
        self.steps.append(Step(f"data-{name}", "data", argv))

    # -- training --------------------------------------------------------------------------

    def train(self, entry: dict[str, Any]) -> None:
        name = self._name(entry, "train")
        if name is None:
            return
        settings = {k: v for k, v in entry.items() if k not in ("name", "preset")}
        try:
            base = load_preset(entry["preset"]).to_dict() if entry.get("preset") else {}
            base["model"] = self.model
            base.update(settings)
            base["name"] = name
            base["data"] = [
                {"path": self.ref(d)} if isinstance(d, str) else d for d in base.get("data", [])
            ]
            if base.get("eval_data"):
                base["eval_data"] = self.ref(base["eval_data"])
            config = TrainConfig.from_dict(base).validate()
        except ConfigError as exc:
            self.problems += [f"train step {name!r}: {p}" for p in exc.problems]
            return
        folder = f"{DIR}/train-{name}"
        argv = ["train", f"{folder}/config.yaml", "--run-dir", folder]
        self.trained[name] = config
        self.steps.append(Step(f"train-{name}", "train", argv, config=config.to_dict()))

    # -- evaluations -----------------------------------------------------------------------

    def evaluate(self, part: dict[str, Any]) -> None:
        if not isinstance(part, dict):
            self.problems.append("evaluate: a mapping with models and tasks")
            return
        unknown = sorted(set(part) - {"models", "tasks", "rope"})
        self.problems += [f"evaluate: unknown key {k!r} (models, tasks, rope)" for k in unknown]
        models = part.get("models") or [BASE, *self.trained]
        tasks = part.get("tasks") or {}
        if isinstance(tasks, list):  # also a list of one-key mappings
            tasks = {k: v for t in tasks if isinstance(t, dict) for k, v in t.items()}
        targets = {str(m): self._target(str(m), part.get("rope")) for m in models}
        # Task by task, every model in turn: the first task's comparison is whole early on.
        for task, task_options in tasks.items():
            if task not in EVAL_COMMANDS:
                self.problems.append(
                    f"evaluate: unknown task {task!r} ({', '.join(EVAL_COMMANDS)})"
                )
                continue
            for label, target in targets.items():
                if target is None:
                    continue
                options = dict(task_options or {})
                if task == "samples" and "file" in options:
                    options["file"] = self.ref(options["file"])
                step_id = f"{task}-{label}"
                argv = [task, *_positional(task, options), *target]
                argv += ["--out", f"{DIR}/{step_id}", *flags(options)]
                self.steps.append(Step(step_id, "eval", argv, model=str(label), task=task))

    def _target(self, label: str, rope: Any) -> list[str] | None:
        if label == BASE:
            return ["--model", self.model]
        if label == ROPE:
            if rope:
                return ["--model", self.model, "--rope", str(rope)]
            for config in self.trained.values():
                if config.rope:
                    return ["--model", self.model, "--rope", config.rope]
                if config.rope_theta:
                    return ["--model", self.model, "--rope-theta", _number(config.rope_theta)]
            self.problems.append(
                "evaluate: model 'rope' needs evaluate.rope or a training step that changes "
                "the RoPE (rope or rope_theta)"
            )
            return None
        if label in self.trained:
            config = self.trained[label]
            return ["--model", config.model, "--adapter", f"{DIR}/train-{label}/adapter"]
        self.problems.append(
            f"evaluate: model {label!r} is none of base, rope or a training step "
            f"({', '.join(self.trained) or 'none'})"
        )
        return None


def _positional(task: str, options: dict[str, Any]) -> list[str]:
    """The commands that take a positional argument: `samples FILE`."""
    if task == "samples":
        return [str(options.pop("file", ""))]
    return []
