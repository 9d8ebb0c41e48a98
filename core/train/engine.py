"""The training recipe, top to bottom: load -> prepare data -> build trainer -> train -> save.

transformers' Trainer and peft do the work; what is written here is what they lack for long
sequences:
- the loss is computed from logits at labelled positions only (`logits_to_keep` with an index
  tensor): an 80K x 128K-vocabulary logit table would be ~20 GB in bf16, the labelled answers
  are a few hundred rows;
- the loss weighs every labelled token of the global batch the same (`token`) or every sample
  the same (`sample`, the paper's), over accumulation steps and processes alike;
- the seed is set before LoRA is attached, so a seed fixes the adapter's first weights;
- a stop signal becomes a clean checkpoint (see callbacks.RunMonitor);
- the RoPE override is applied before the weights load and written next to the adapter.

Knows nothing about the UI; it reads a TrainConfig and writes into a run folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import threads
from core.errors import LongCtxError
from core.models import loader, names, rope
from core.train import distributed
from core.train.config import TrainConfig, lora_settings

log = logging.getLogger(__name__)
IGNORE = -100


# -- 1. load ---------------------------------------------------------------------------------------


def resolve_engine(config: TrainConfig) -> str:
    """`unsloth` when asked for and usable, else `transformers`; an unusable unsloth is an error.

    `auto` means transformers until the unsloth path has been measured on a GPU (issue 5).
    """
    if config.engine != "unsloth":
        return "transformers"
    from core.train import unsloth_engine

    unsloth_engine.require()
    return "unsloth"


def load_for_training(config: TrainConfig) -> loader.LoadedModel:
    """The base model with the RoPE override, quantized when asked, with LoRA attached."""
    from transformers import set_seed

    # Before peft draws LoRA's A matrices (and anything else random at load): same seed, same
    # starting adapter, so two runs of one config log the same losses.
    set_seed(config.seed)
    setting = config.rope_setting()
    base = loader.load_config(loader.ModelSpec(name=config.model, rope=setting)).config
    # The window recorded in the config covers the longest training sample; dynamic NTK scales
    # against the configured window, so there it stays as the model has it.
    window = int(getattr(base, "max_position_embeddings", 0) or 0)
    if setting is None or setting.method != "dynamic":
        window = max(window, config.max_length)
    if resolve_engine(config) == "unsloth":
        from core.train import unsloth_engine

        loaded = unsloth_engine.load_for_training(config, _dtype(config), window, _device())
    else:
        loaded = _load_with_peft(config, window)
    # Record a portable base name (a Hub id, not this machine's cache path) in adapter_config.
    loaded.model.peft_config["default"].base_model_name_or_path = (
        names.EMBEDDED_HUB_ID if config.model == names.EMBEDDED else config.model
    )
    return loaded


def _load_with_peft(config: TrainConfig, window: int) -> loader.LoadedModel:
    """The transformers engine: transformers (+ bitsandbytes) loads, peft wraps."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    spec = loader.ModelSpec(
        name=config.model,
        rope=config.rope_setting(),
        max_position_embeddings=window,
        quantization=config.quantization,
        dtype=_dtype(config),
        device=_device(),
    )
    loaded = loader.load_model(spec, for_training=True)
    model = loaded.model
    model.config.use_cache = False
    if loaded.quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    lora = LoraConfig(
        # Tied input/output embeddings (SmolLM2) must stay tied when embed_tokens is trained.
        ensure_weight_tying=tied and config.train_embeddings,
        task_type="CAUSAL_LM",
        **lora_settings(config),
    )
    model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        # Renamed in transformers 5.2x; 5.17 (unsloth's cap) has only the old name.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if not config.train_embeddings:
            # With frozen embeddings nothing before the first checkpoint requires grad.
            model.enable_input_require_grads()
    if config.bf16_residual:
        import torch

        if loaded.quantized and _dtype(config) == "bfloat16":
            from core.train.tiling import keep_residual_in

            keep_residual_in(model, torch.bfloat16)
        else:
            log.warning(
                "bf16_residual has no effect here: the stream is fp32 only in a 4-bit model "
                "computing in bf16 (this one: %s, %s)",
                "4-bit" if loaded.quantized else "not quantized",
                _dtype(config),
            )
    norm_at_kept_positions(model)
    if config.layer_tile:
        from core.train.tiling import tile_layers

        count = tile_layers(model, config.layer_tile)
        log.info("layers tiled by %d tokens: %d", config.layer_tile, count)
    if config.mlp_tile:
        from core.train.tiling import tile_mlps

        count = tile_mlps(model, config.mlp_tile)
        log.info("MLP tiled by %d tokens in %d layers", config.mlp_tile, count)
    loaded.model = model
    return loaded


def norm_at_kept_positions(model: Any) -> bool:
    """Move the decoder's final norm in front of the output head, so that it runs on the
    positions the loss keeps (`logits_to_keep`) and not on the whole sequence.

    The norm acts on each token alone, so the logits are the same; but a norm over the whole
    sequence saves its input for the backward, which keeps the last layer's output (one hidden
    state per token, e.g. 1.3 GB at 80K tokens of Llama-3-8B in fp32) alive from the end of the
    forward to the start of the backward, when the step's memory peaks. After the move only the
    kept positions are saved. Both forwards are replaced on the instances (the module tree,
    parameter names and checkpoints stay as they are); the decoder's last hidden state is then
    un-normed, which nothing in training reads; hub kernels are turned off so that a change of
    mode does not undo it (`keep_instance_forwards`). Returns whether it moved a norm now (not
    when the model has none, or when it was moved already)."""
    from core.train.tiling import keep_instance_forwards

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    keep_instance_forwards(base)
    norm = getattr(getattr(base, "model", None), "norm", None)
    head = getattr(base, "lm_head", None)
    if norm is None or head is None or getattr(head.forward, "normed", False):
        return False
    norm_forward, head_forward = norm.forward, head.forward

    def head_after_norm(hidden):
        return head_forward(norm_forward(hidden))

    head_after_norm.normed = True  # type: ignore[attr-defined]
    norm.forward = lambda hidden: hidden
    head.forward = head_after_norm
    return True


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def _dtype(config: TrainConfig) -> str:
    import torch

    if config.precision == "fp32" or (config.precision == "auto" and not torch.cuda.is_available()):
        return "float32"
    if config.precision == "fp16":
        return "float16"
    return "bfloat16"


# -- 2. prepare data -----------------------------------------------------------------------------------


@dataclass
class DataReport:
    samples: int
    dropped_too_long: int
    truncated: int
    tokens: int
    labelled_tokens: int
    malformed: int = 0
    """Rows the Data tab's validator rejects; fix them there (they are skipped here)."""


def read_sources(config: TrainConfig, tokenizer: Any) -> list[tuple[dict[str, Any] | None, str]]:
    """All samples of all sources, in order (files through the Data loader), each with the
    overflow policy of its source (its own, else the run's)."""
    from core.synth import procedural

    samples: list[tuple[dict[str, Any] | None, str]] = []
    for i, source in enumerate(config.data):
        if source.procedural:
            rows = procedural.make(
                source.procedural, source.n, source.length, tokenizer, seed=config.seed + i
            )
        else:
            rows = _read_file(source.path, config.seed)
        samples += [(row, source.overflow or config.overflow) for row in rows]
    return samples


def data_spec(spec: str) -> str:
    """A data file as the config names it (`path` or `path[N]`), relative paths also meaning
    "in the workspace"."""
    from core import workspace
    from core.data import io as data_io

    path, n = data_io.parse_spec(spec)
    if not Path(path).expanduser().is_absolute() and not Path(path).exists():
        path = str(workspace.home() / path)
    return f"{path}[{n}]" if n else path


def _read_file(spec: str, seed: int) -> list[dict[str, Any]]:
    """Records of a file (`path` or `path[N]`); malformed rows are kept as None to be counted."""
    from core.data import io as data_io

    source = data_io.open_source(data_spec(spec), seed=seed)
    rows = []
    for row in data_io.iter_raw(source):
        if row.problems:
            log.warning("%s line %d skipped: %s", spec, row.line, "; ".join(row.problems))
        rows.append(None if row.problems else row.record)
    return rows


def prepare_dataset(config: TrainConfig, tokenizer: Any) -> tuple[Any, DataReport]:
    """Render every sample through the chat template with its loss mask; drop or cut long ones."""
    return _render_dataset(read_sources(config, tokenizer), config, tokenizer, "sample")


def prepare_eval_dataset(config: TrainConfig, tokenizer: Any) -> tuple[Any, DataReport] | None:
    """The held-out samples, rendered like the training ones (None without `eval_data`)."""
    if not config.eval_data:
        return None
    samples = [(row, config.overflow) for row in _read_file(config.eval_data, config.seed)]
    return _render_dataset(samples, config, tokenizer, f"held-out sample of {config.eval_data}")


def _render_dataset(
    raw: list[tuple[dict[str, Any] | None, str]], config: TrainConfig, tokenizer: Any, what: str
) -> tuple[Any, DataReport]:
    """(sample, overflow) pairs -> rows; `what` names the samples in the error when none fits."""
    import datasets

    from core.data.render import render_sample

    rows: list[dict[str, list[int]]] = []
    dropped = truncated = tokens = labelled = malformed = 0
    for sample, overflow in raw:
        if sample is None:
            malformed += 1
            continue
        rendered = render_sample(tokenizer, sample, max_length=config.max_length, overflow=overflow)
        if rendered.dropped or len(rendered.input_ids) > config.max_length:
            dropped += 1
            continue
        truncated += int(rendered.cut is not None)
        n_labels = sum(1 for t in rendered.labels[1:] if t != IGNORE)
        if n_labels == 0:
            dropped += 1
            continue
        rows.append({"input_ids": list(rendered.input_ids), "labels": list(rendered.labels)})
        tokens += len(rendered.input_ids)
        labelled += n_labels
    if not rows:
        raise LongCtxError(
            f"no {what} fits max_length {config.max_length} ({dropped} dropped); raise max_length "
            "or set overflow: truncate_middle (or head, for text samples)"
        )
    random.Random(config.seed).shuffle(rows)
    for row in rows:
        row["length"] = len(row["input_ids"])
    dataset = datasets.Dataset.from_list(rows)
    report = DataReport(len(rows), dropped, truncated, tokens, labelled, malformed)
    return dataset, report


class Collator:
    """Pads a batch to its longest sample (labels with -100). Batch 1, the paper's, has no pad,
    unless the length must be a multiple of `multiple` (a sequence split over GPUs)."""

    def __init__(self, pad_id: int, multiple: int = 1):
        self.pad_id = pad_id
        self.multiple = multiple

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        longest += -longest % self.multiple
        ids, labels, mask = [], [], []
        for f in features:
            pad = longest - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }


# -- 3. build trainer -------------------------------------------------------------------------------------


def labelled_positions(labels: Any) -> tuple[Any, Any]:
    """Positions whose logits predict a labelled token, and those tokens.

    Position p predicts token p + 1, so the rows kept are the p where labels[p + 1] is set. For a
    batch, the union over rows is kept (rows without a label there are ignored by the loss).
    Returns (positions, targets) with targets shaped (batch, len(positions)).
    """
    return _kept(labels[:, 1:])


def _kept(shifted: Any) -> tuple[Any, Any]:
    """Positions with a label in `shifted` (labels already aligned to the positions predicting
    them), and those labels."""
    import torch

    positions = torch.nonzero((shifted != IGNORE).any(dim=0), as_tuple=False).squeeze(-1)
    return positions, shifted[:, positions]


def summed_loss(logits: Any, targets: Any, weighting: str) -> Any:
    """One micro-batch's share of the step's loss, before the division by the global count.

    `token`: the sum of its token losses (the Trainer divides by the labelled tokens of the
    global batch). `sample`: the sum of each row's mean token loss (divided by the samples of
    the global batch), so a sample's weight does not grow with its labelled tokens.
    """
    import torch

    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1).to(logits.device),
        ignore_index=IGNORE,
        reduction="none",
    ).view(targets.shape)
    if weighting == "token":
        return per_token.sum()
    counts = (targets != IGNORE).sum(dim=-1).to(per_token.device)
    return (per_token.sum(dim=-1) / counts.clamp(min=1)).sum()


def local_count(targets: Any, weighting: str) -> Any:
    """Labelled tokens, or samples with a label, in one micro-batch."""
    labelled = targets != IGNORE
    return (labelled if weighting == "token" else labelled.any(dim=-1)).sum()


def make_trainer_class() -> type:
    import torch
    from transformers import Trainer

    class LongContextTrainer(Trainer):
        """Trainer whose loss touches only the logits of labelled positions."""

        # The loss below is already divided by the tokens (or samples) of the whole global batch.
        loss_is_scaled_for_ga = True

        def __init__(
            self,
            *args: Any,
            tokens: Any = None,
            offload: bool = False,
            hidden_states_only: bool = False,
            loss_weighting: str = "token",
            **kwargs: Any,
        ):
            super().__init__(*args, **kwargs)
            self.tokens = tokens
            self.offload = offload
            # unsloth: the forward returns hidden states and lm_head runs here on labelled rows.
            self.hidden_states_only = hidden_states_only
            self.loss_weighting = loss_weighting
            # Make the Trainer count labelled tokens over the accumulated batch for us.
            self.model_accepts_loss_kwargs = True

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            """The micro-batches of one optimizer step, and what divides their summed losses:
            the Trainer's labelled-token count of the global batch, or, under `sample`, the
            samples of the global batch (every accumulation step, every process)."""
            batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
            if self.loss_weighting == "sample" and batches:
                samples = sum(local_count(b["labels"][:, 1:], "sample") for b in batches)
                count = torch.as_tensor(samples, device=device)
                if self.args.average_tokens_across_devices and self.args.world_size > 1:
                    count = self.accelerator.gather(count.reshape(1)).sum()
            return batches, count

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            # Context parallelism splits the sequence over GPUs after the Trainer has shifted
            # the labels (`shift_labels`, aligned to the positions that predict them): this
            # process's shard of them is what its positions predict.
            shifted = inputs.pop("shift_labels", None)
            if shifted is not None:
                positions, targets = _kept(shifted)
            else:
                positions, targets = labelled_positions(labels)
            offload = (
                torch.autograd.graph.save_on_cpu(pin_memory=True)
                if self.offload and labels.is_cuda
                else contextlib.nullcontext()
            )
            with offload:
                if self.hidden_states_only:
                    from core.train.unsloth_engine import hidden_states_only

                    with hidden_states_only():
                        outputs = model(**inputs, use_cache=False)
                    lm_head = self.accelerator.unwrap_model(model).get_output_embeddings()
                    hidden = outputs.logits[:, positions]
                    logits = lm_head(hidden.to(lm_head.weight.dtype))
                else:
                    outputs = model(**inputs, logits_to_keep=positions, use_cache=False)
                    logits = outputs.logits
            loss = summed_loss(logits.float(), targets, self.loss_weighting)
            # Held-out batches come through the Trainer's prediction_step, whose count is always
            # labelled tokens: under `sample` they are divided by their own samples, and the
            # Trainer's mean over batches and processes makes the mean of per-sample means.
            held_out_by_sample = self.loss_weighting == "sample" and not model.training
            if num_items_in_batch is None or held_out_by_sample:
                num_items_in_batch = local_count(targets, self.loss_weighting)
            loss = loss / num_items_in_batch
            # DDP averages gradients over processes; the divisor above already counts all of
            # them, so the mean is undone here (as the Trainer's own loss does).
            spread = self.args.average_tokens_across_devices and self.accelerator.num_processes > 1
            if spread and not held_out_by_sample:
                loss = loss * self.accelerator.num_processes
            if self.tokens is not None and model.training:  # held-out batches are not trained on
                self.tokens.total += int(inputs["attention_mask"].sum())
                self.tokens.labelled += int((targets != IGNORE).sum())
            return (loss, outputs) if return_outputs else loss

    return LongContextTrainer


def build_trainer(
    config: TrainConfig,
    loaded: loader.LoadedModel,
    dataset: Any,
    run_dir: Path,
    callbacks: list[Any],
    tokens: Any,
    eval_dataset: Any = None,
) -> Any:
    from transformers import TrainingArguments

    bf16 = _dtype(config) == "bfloat16" and loaded.device.startswith("cuda")
    held_out = {}
    if eval_dataset is not None:
        held_out = dict(
            eval_strategy="steps",
            eval_steps=config.eval_steps or config.save_steps,
            eval_on_start=True,  # the held-out loss before any step: the curve's starting point
            per_device_eval_batch_size=config.per_device_batch_size,
            prediction_loss_only=True,
        )
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        bf16=bf16,
        fp16=_dtype(config) == "float16" and loaded.device.startswith("cuda"),
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        use_cpu=not loaded.device.startswith("cuda"),
        ddp_find_unused_parameters=False,
        **held_out,
    )
    unsloth = config.engine == "unsloth"  # load_for_training refused it if it is not usable
    trainer_cls = make_trainer_class()
    return trainer_cls(
        model=loaded.model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=Collator(loaded.tokenizer.pad_token_id, distributed.pad_multiple(config)),
        callbacks=callbacks,
        tokens=tokens,
        offload=config.offload_checkpoints and not unsloth,  # unsloth offloads on its own
        hidden_states_only=unsloth,
        loss_weighting=config.loss_weighting,
    )


# -- 4. train, 5. save ------------------------------------------------------------------------------------------


def save_adapter(
    loaded: loader.LoadedModel, config: TrainConfig, run_dir: Path, state_dict: Any = None
) -> Path:
    """Write the adapter, the tokenizer and the RoPE/window the adapter was trained with
    (`state_dict`: the full weights gathered from a sharded model)."""
    out = run_dir / "adapter"
    loaded.model.save_pretrained(out, state_dict=state_dict)
    loaded.tokenizer.save_pretrained(out)
    meta = {
        "base_model": config.model,
        "rope_theta": rope.get_rope_theta(loaded.model.config),
        "rope": rope.get_rope_setting(loaded.model.config).to_dict(),
        "max_position_embeddings": loaded.model.config.max_position_embeddings,
        "max_length": config.max_length,
        "overrides": loaded.overrides,
        "recipe": "LongCtx Studio QLoRA context extension",
    }
    (out / names.ADAPTER_META_FILE).write_text(json.dumps(meta, indent=1))
    from core.train import export

    export.refresh_model_card(out)  # ours in place of peft's blank template
    return out


def run_training(config: TrainConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train `config` into `run_dir`; returns the final status fields."""
    from core.train import runs
    from core.train.callbacks import RunMonitor, TokenCounter

    config.validate()
    is_main = int(os.environ.get("RANK", 0)) == 0
    tokens = TokenCounter()
    governor = None
    if runs.device_key(config) == "cpu":  # a GPU run's CPU threads only feed the device
        governor = threads.Governor(
            "train", config.threads or None, processes=int(os.environ.get("WORLD_SIZE", 1))
        )
    monitor = RunMonitor(run_dir, tokens, is_main=is_main, governor=governor)
    monitor.install_signal_handlers()
    if is_main:
        runs.update_status(
            run_dir,
            state="starting",
            pid=os.getpid(),
            reason=None,
            device=runs.device_key(config),
            **monitor.thread_fields(),
        )
    loaded = load_for_training(config)
    dataset, report = prepare_dataset(config, loaded.tokenizer)
    held_out = prepare_eval_dataset(config, loaded.tokenizer)
    eval_dataset, eval_report = held_out or (None, None)
    if is_main:
        runs.update_status(
            run_dir,
            data=report.__dict__,
            overrides=loaded.overrides,
            eval_data=eval_report.__dict__ if eval_report else None,
            trainable=_trainable(loaded.model),
            engine=resolve_engine(config),
        )
    log.info("data: %s", report)
    if eval_report:
        log.info("held-out data: %s", eval_report)
    trainer = build_trainer(config, loaded, dataset, run_dir, [monitor], tokens, eval_dataset)
    accelerator = trainer.accelerator
    log.info("processes: %d (%s)", accelerator.num_processes, accelerator.distributed_type.value)
    checkpoint = runs.last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        log.warning("no complete checkpoint in %s; starting from the beginning", run_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    stopped = monitor.stop_requested.is_set()
    # Sharded weights are gathered by every process together; only the first one writes them.
    gathered = (
        trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    )
    if is_main:
        adapter = save_adapter(loaded, config, run_dir, gathered)
        final = {
            "state": "stopped" if stopped else "completed",
            "adapter": str(adapter),
            "step": trainer.state.global_step,
        }
        runs.update_status(run_dir, **final)
        return final
    return {}


def _trainable(model: Any) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total}
