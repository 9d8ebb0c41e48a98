"""The training configuration: one typed object that is the YAML file, the CLI input and the UI form.

`TrainConfig` round-trips to YAML (`to_yaml` / `from_yaml`); `validate()` gathers every problem
and raises one `ConfigError`, so the UI and `longctx train` refuse the same things with the same
words. Presets live in `assets/presets/*.yaml` and are plain TrainConfig YAML with a comment
block on top. This module knows nothing about how training runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from core import configs
from core.errors import ConfigError
from core.models.rope import RopeSetting

PRESETS_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "presets"
OVERFLOW = ("drop", "head", "truncate_middle")
ENGINES = ("auto", "transformers", "unsloth")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SHARDINGS = ("ddp", "fsdp2")
LOSS_WEIGHTINGS = ("token", "sample")


@dataclass
class DataSource:
    """One training file (any format the Data tab reads) or a procedural task."""

    path: str = ""
    """JSONL / JSON / Parquet / save_to_disk folder; `file.jsonl[500]` takes 500 random samples."""
    procedural: str = ""
    """Instead of a file: `passkey`, `keys` or `topics` (exact answers, any tokenizer)."""
    n: int = 0
    """Procedural: number of samples."""
    length: int = 0
    """Procedural: tokens per sample."""
    overflow: str = ""
    """This source's samples longer than max_length: `drop`, `head` or `truncate_middle` (see the
    run's overflow); empty: the run's overflow."""

    def __post_init__(self) -> None:
        self.path = str(self.path or "").strip()
        self.procedural = str(self.procedural or "").strip()
        self.overflow = str(self.overflow or "").strip()
        try:
            self.n, self.length = int(self.n or 0), int(self.length or 0)
        except (TypeError, ValueError):
            raise ConfigError(
                f"data source {self.describe()!r}: n and length are numbers"
            ) from None

    def describe(self) -> str:
        if self.procedural:
            return f"{self.procedural} x{self.n} @ {self.length} tokens"
        return self.path


@dataclass
class TrainConfig:
    """Everything a run needs. Field docstrings are the help text in the UI and the YAML."""

    name: str = "run"
    """A short label for the run; the run id adds the date."""
    # -- model --------------------------------------------------------------------------------
    model: str = "embedded"
    """Base model: `embedded`, a folder or a Hub id."""
    quantization: str = "auto"
    """`4bit` (NF4 + double quantization, CUDA), `none`, or `auto` (4-bit on CUDA for > 3B)."""
    engine: str = "auto"
    """`auto` and `transformers`: transformers + peft (bitsandbytes for 4-bit). `unsloth`: its
    kernels and offloaded checkpointing, on a CUDA GPU with unsloth installed (not yet measured
    on a GPU, so `auto` does not pick it)."""
    # -- long context ---------------------------------------------------------------------------
    rope_theta: float | None = None
    """New RoPE base (paper: 500K -> 2e8). Empty keeps the model's own."""
    rope: str = ""
    """A RoPE scaling instead of (or beside) a new base: `yarn:factor=4`, `linear:factor=2`,
    `llama3:factor=4`, `dynamic:factor=2`, `longrope:factors_file=F.json`. Empty: none."""
    max_length: int = 2048
    """Longest training sequence in tokens (paper: 81920)."""
    overflow: str = "drop"
    """Samples longer than max_length, for sources that do not set their own: `drop`,
    `truncate_middle` (cut from the middle of the context), or `head` (the paper's: a text sample
    keeps its first max_length - 1 tokens and ends with EOS, which every text sample gets; a
    conversation, answers last, is dropped)."""
    # -- data ---------------------------------------------------------------------------------
    data: list[DataSource] = field(default_factory=list)
    """Training sources, concatenated and shuffled."""
    eval_data: str = ""
    """Held-out samples (e.g. from `longctx data split`) whose loss is measured before training
    and every eval_steps; empty: none."""
    eval_steps: int = 0
    """Measure the held-out loss every N optimizer steps (0: with every checkpoint)."""
    # -- LoRA ---------------------------------------------------------------------------------
    lora_r: int = 32
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names LoRA wraps."""
    train_embeddings: bool = True
    """Train embed_tokens fully (peft modules_to_save), as the paper does."""
    # -- optimisation ---------------------------------------------------------------------------
    learning_rate: float = 5e-5
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    global_batch_size: int = 8
    """Samples per optimizer step over all devices (accumulation fills the gap)."""
    loss_weighting: str = "token"
    """`sample`: each sample's loss is the mean over its own labelled tokens, and a step's loss
    the mean of those over the global batch, on one GPU or many (the paper: 8 GPUs x 1 sample),
    so a long text sample, loss on every token, does not drown QA samples with a few hundred
    labelled tokens. `token`: every labelled token of the global batch weighs the same. The
    default is `token` so that configs written before this setting train as they did."""
    per_device_batch_size: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run the epochs)."""
    seed: int = 42
    # -- hardware -------------------------------------------------------------------------------
    precision: str = "auto"
    """`bf16` where the GPU supports it, else fp32 (`auto`); or force one."""
    gradient_checkpointing: bool = True
    offload_checkpoints: bool = False
    """Keep checkpointed activations in CPU memory (GPU only): less GPU memory, a bit slower."""
    mlp_tile: int = 0
    """Run each layer's MLP over the sequence in tiles of this many tokens (0: whole sequence):
    at long lengths the MLP's intermediates are a layer's largest; tiling keeps one tile's
    alive, for the cost of recomputing the MLP once more (core/train/tiling.py)."""
    bf16_residual: bool = False
    """4-bit on a GPU: carry the residual stream in bf16 (peft's k-bit preparation makes it
    fp32), halving every checkpointed layer input; norms still compute in fp32. Not measured
    on a GPU yet."""
    layer_tile: int = 0
    """Run each whole decoder layer over the sequence in tiles of this many tokens (0: off):
    keys and values are computed once, then each tile's queries attend to the keys before them
    and go through the MLP under their own checkpoint, so a layer's working set is one tile's
    plus the keys and values. About 1.3x slower attention on CPU. Llama, Mistral and Qwen2
    layouts (others train untiled, with a warning); see core/train/tiling.py."""
    group_by_length: bool = True
    num_gpus: int = 1
    """GPUs to train on (on a CPU: processes). More than one launches `accelerate launch` with
    a config generated into the run folder (accelerate.yaml)."""
    sharding: str = "ddp"
    """Several GPUs: `ddp` (each holds the whole model) or `fsdp2` (weights, gradients and
    optimizer state sharded over them: memory per GPU falls with their number)."""
    sequence_parallel: int = 1
    """GPUs that share each sequence (context parallelism over FSDP2; needs sharding fsdp2 and
    num_gpus a multiple of it): activations per GPU fall with it. Not measured yet."""
    threads: int = 0
    """CPU training: torch threads (0: the thread budget decides: all cores, less a share kept
    for a server, an evaluation or the app's chat while one runs; see core/threads.py)."""
    # -- bookkeeping ----------------------------------------------------------------------------
    logging_steps: int = 1
    save_steps: int = 50
    """Checkpoint every N optimizer steps (and on stop)."""
    save_total_limit: int = 2

    def __post_init__(self) -> None:
        self.data = [d if isinstance(d, DataSource) else DataSource(**d) for d in self.data or []]
        self.eval_data = str(self.eval_data or "").strip()
        if self.rope_theta in ("", 0):
            self.rope_theta = None
        if isinstance(self.rope, dict):  # YAML may spell the setting as a mapping
            self.rope = RopeSetting.from_dict(self.rope).spelled()
        self.rope = str(self.rope or "").strip()
        self._coerce()

    def _coerce(self) -> None:
        """Numbers from a form arrive as floats or strings; cast them to the declared types.

        A value that cannot be cast is left alone for validate() to report.
        """
        casts = {"int": int, "float": float, "float | None": float}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.type not in casts and f.type != "bool":
                continue
            try:
                if f.type == "bool":
                    if isinstance(value, str):
                        value = value.strip().lower() in ("1", "true", "yes", "on")
                    setattr(self, f.name, bool(value))
                elif f.type == "int" and isinstance(value, float) and not value.is_integer():
                    continue
                else:
                    setattr(self, f.name, casts[f.type](value))
            except (TypeError, ValueError):
                continue
        if isinstance(self.lora_targets, str):
            self.lora_targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]

    @property
    def data_parallel(self) -> int:
        """Processes that read different samples (GPUs sharing a sequence read the same)."""
        return max(1, self.num_gpus // max(1, self.sequence_parallel))

    @property
    def gradient_accumulation_steps(self) -> int:
        return max(1, self.global_batch_size // (self.per_device_batch_size * self.data_parallel))

    def validate(self) -> TrainConfig:
        """Raise one ConfigError listing every problem; return self when there is none."""
        p: list[str] = []
        for f in fields(self):
            expected = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(
                str(f.type)
            )
            value = getattr(self, f.name)
            if expected and not isinstance(value, expected):
                p.append(f"{f.name} must be a {f.type}, got {value!r}")
        if p:
            raise ConfigError(p)
        if not self.model.strip():
            p.append("model is empty; use 'embedded', a folder or a Hub id")
        if self.max_length < 64:
            p.append(f"max_length must be at least 64, got {self.max_length}")
        for name in ("mlp_tile", "layer_tile"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be 0 (off) or a number of tokens, got {getattr(self, name)}")
        if self.overflow not in OVERFLOW:
            p.append(f"overflow must be one of {OVERFLOW}, got {self.overflow!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            p.append(
                f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}"
            )
        if self.engine not in ENGINES:
            p.append(f"engine must be one of {ENGINES}, got {self.engine!r}")
        elif self.engine == "unsloth" and self.precision == "fp32":
            p.append("engine unsloth trains in bf16 or fp16; set precision to auto, bf16 or fp16")
        if self.quantization not in ("auto", "4bit", "none"):
            p.append(f"quantization must be auto, 4bit or none, got {self.quantization!r}")
        if self.precision not in PRECISIONS:
            p.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.lr_scheduler not in SCHEDULERS:
            p.append(f"lr_scheduler must be one of {SCHEDULERS}, got {self.lr_scheduler!r}")
        if self.rope_theta is not None and self.rope_theta <= 0:
            p.append(f"rope_theta must be positive, got {self.rope_theta}")
        if self.rope:
            try:
                setting = RopeSetting.parse(self.rope)
            except ConfigError as exc:
                p += exc.problems
            else:
                p += setting.problems()
                if setting.theta and self.rope_theta and setting.theta != self.rope_theta:
                    p.append(
                        f"rope_theta {self.rope_theta:g} and the theta in rope "
                        f"({setting.theta:g}) disagree; give one"
                    )
        if self.lora_r < 1 or self.lora_alpha < 1:
            p.append("lora_r and lora_alpha must be at least 1")
        if not 0 <= self.lora_dropout < 1:
            p.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        elif self.lora_dropout and self.layer_tile:
            p.append(
                "layer_tile recomputes a layer's tiles in another order than its forward, so "
                "lora_dropout would draw other masks in the backward: set lora_dropout: 0 "
                "(or use mlp_tile)"
            )
        if not self.lora_targets:
            p.append("lora_targets is empty; the paper uses q_proj, k_proj, v_proj, o_proj")
        if not 0 < self.learning_rate < 1:
            p.append(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.threads < 0:
            p.append(f"threads must be 0 (the thread budget decides) or more, got {self.threads}")
        if self.sharding not in SHARDINGS:
            p.append(f"sharding must be one of {SHARDINGS}, got {self.sharding!r}")
        if self.sequence_parallel < 1:
            p.append(f"sequence_parallel must be at least 1, got {self.sequence_parallel}")
        elif self.sequence_parallel > 1:
            if self.sharding != "fsdp2":
                p.append("sequence_parallel runs over FSDP2: set sharding: fsdp2")
            if self.layer_tile:
                p.append(
                    "layer_tile needs each GPU to hold whole sequences (its causal masks assume "
                    "it); with sequence_parallel use mlp_tile"
                )
            if self.num_gpus % self.sequence_parallel:
                p.append(
                    f"num_gpus {self.num_gpus} is not a multiple of sequence_parallel "
                    f"{self.sequence_parallel}"
                )
        if self.per_device_batch_size < 1 or self.global_batch_size < 1 or self.num_gpus < 1:
            p.append("batch sizes and num_gpus must be at least 1")
        elif self.global_batch_size % (self.per_device_batch_size * self.data_parallel):
            p.append(
                f"global_batch_size {self.global_batch_size} is not a multiple of "
                f"per_device_batch_size x data-parallel processes (num_gpus / sequence_parallel)"
                f" = {self.per_device_batch_size * self.data_parallel}"
            )
        if self.epochs <= 0 and self.max_steps <= 0:
            p.append("set epochs > 0 or max_steps > 0")
        if self.save_steps < 1 or self.logging_steps < 1:
            p.append("save_steps and logging_steps must be at least 1")
        if self.eval_steps < 0:
            p.append(f"eval_steps must be 0 (with every checkpoint) or more, got {self.eval_steps}")
        if not self.data:
            p.append("no training data: add a file or a procedural task")
        for i, source in enumerate(self.data, 1):
            if bool(source.path) == bool(source.procedural):
                p.append(f"data source {i}: give either a path or a procedural task, not both")
            elif source.procedural and (source.n < 1 or source.length < 32):
                p.append(f"data source {i}: procedural tasks need n >= 1 and length >= 32")
            if source.overflow and source.overflow not in OVERFLOW:
                p.append(
                    f"data source {i}: overflow must be empty (the run's) or one of {OVERFLOW}, "
                    f"got {source.overflow!r}"
                )
        if p:
            raise ConfigError(p)
        return self

    # -- YAML -----------------------------------------------------------------------------------

    def rope_setting(self) -> RopeSetting | None:
        """The RoPE change to train with: `rope` (with `rope_theta` as its base when it names
        none), or a new base alone, or None."""
        if self.rope:
            setting = RopeSetting.parse(self.rope)
            if setting.theta is None and self.rope_theta:
                setting.theta = float(self.rope_theta)
            return setting
        return RopeSetting(method="base", theta=self.rope_theta) if self.rope_theta else None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data"] = [
            {k: v for k, v in dataclasses.asdict(d).items() if v not in ("", 0)} for d in self.data
        ]
        return out

    def to_yaml(self, header: str = "") -> str:
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)
        return header + body

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError([f"unknown setting {k!r}" + _suggest(k, known) for k in unknown])
        try:
            return cls(**raw)
        except TypeError as exc:  # e.g. a data entry with a misspelled key
            raise ConfigError(str(exc)) from exc

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> TrainConfig:
        """Read a config from YAML text or a file (safe loader: no Python objects)."""
        text = text_or_path
        if isinstance(text_or_path, Path) or (
            isinstance(text_or_path, str)
            and "\n" not in text_or_path
            and text_or_path.endswith((".yaml", ".yml"))
        ):
            path = Path(text_or_path)
            if not path.exists():
                raise ConfigError(f"config file {str(path)!r} does not exist")
            text = path.read_text()
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"the YAML does not parse: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError("the YAML must be a mapping of setting: value")
        return cls.from_dict(raw)


def _suggest(name: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- presets ------------------------------------------------------------------------------------


def list_presets() -> list[str]:
    return configs.preset_names(PRESETS_DIR)


def load_preset(name: str) -> TrainConfig:
    return TrainConfig.from_yaml(configs.preset_file(PRESETS_DIR, name))


def preset_header(name: str) -> str:
    """The comment block at the top of a preset file (what it is for, what it needs)."""
    lines = []
    for line in (PRESETS_DIR / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return "\n".join(lines)


def lora_settings(config: TrainConfig) -> dict[str, Any]:
    """The LoRA part of the recipe, as both peft and unsloth name it."""
    return {
        "r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": list(config.lora_targets),
        "modules_to_save": ["embed_tokens"] if config.train_embeddings else None,
    }
