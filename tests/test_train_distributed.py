"""Several devices: the accelerate config a run launches with (DDP on CPU processes, FSDP2 and
context parallelism on GPUs), what is refused before launching, and the loss under a sequence
split over GPUs computed from the Trainer's shifted labels.

FSDP2 and context parallelism need GPUs (accelerate shards on GPU-type devices only), so here
they are tested up to the generated config that `accelerate launch` reads; the two-process CPU
run through that launcher is in test_train_loss.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file

from core.errors import ConfigError, LongCtxError
from core.train import distributed, runs
from core.train.config import DataSource, TrainConfig
from core.train.engine import IGNORE, Collator


def _config(**overrides) -> TrainConfig:
    base = dict(model="embedded", data=[DataSource(procedural="keys", n=2, length=100)])
    return TrainConfig(**{**base, **overrides}).validate()


def test_fsdp2_with_sequence_parallelism_writes_a_config_accelerate_reads(tmp_path):
    config = _config(num_gpus=4, sharding="fsdp2", sequence_parallel=2, precision="bf16")
    path = distributed.write_config(config, "cuda", tmp_path)
    read = load_config_from_file(str(path))  # accelerate's own reader: every key is known
    assert read.distributed_type == "FSDP" and read.num_processes == 4
    assert read.mixed_precision == "bf16" and not read.use_cpu
    assert read.fsdp_config["fsdp_version"] == 2
    assert read.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert read.parallelism_config["parallelism_config_cp_size"] == 2
    assert read.parallelism_config["parallelism_config_dp_shard_size"] == 2
    # Two GPUs share each sequence, so two read different samples: accumulation fills 8.
    assert config.data_parallel == 2 and config.gradient_accumulation_steps == 4
    # The launch command points at the file in the run folder.
    cmd = runs.command_for(tmp_path, config)
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[4] == str(tmp_path / "accelerate.yaml") and cmd[5:8] == ["-m", "core.cli", "train"]


def test_ddp_on_gpus_and_processes_on_a_cpu():
    gpus = distributed.accelerate_config(_config(num_gpus=2), "cuda")
    assert gpus["distributed_type"] == "MULTI_GPU" and "fsdp_config" not in gpus
    cpu = distributed.accelerate_config(_config(num_gpus=2, sharding="fsdp2"), "cpu")
    # accelerate's torchrun launcher; the processes train on the CPU over gloo (MULTI_CPU).
    assert cpu["distributed_type"] == "MULTI_GPU" and cpu["use_cpu"]
    assert cpu["mixed_precision"] == "no" and "fsdp_config" not in cpu
    one = runs.command_for(runs.runs_dir() / "x", _config())
    assert "accelerate.commands.launch" not in one


def test_what_cannot_run_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="sequence_parallel runs over FSDP2"):
        _config(num_gpus=2, sequence_parallel=2)
    with pytest.raises(ConfigError, match="not a multiple of sequence_parallel"):
        _config(num_gpus=3, sharding="fsdp2", sequence_parallel=2, global_batch_size=6)
    with pytest.raises(ConfigError, match="with sequence_parallel use mlp_tile"):
        _config(num_gpus=2, sharding="fsdp2", sequence_parallel=2, layer_tile=4096)
    with pytest.raises(ConfigError, match="sharding must be one of"):
        _config(sharding="zero3")
    split = _config(num_gpus=2, sharding="fsdp2", sequence_parallel=2)
    problems = distributed.launch_problems(split, "cpu")
    assert any("sequence_parallel needs GPUs" in p for p in problems)
    assert any("sharding fsdp2 needs GPUs" in p for p in problems)
    if not torch.cuda.is_available():  # on this machine launching refuses before any folder
        before = set(runs.runs_dir().glob("*")) if runs.runs_dir().exists() else set()
        with pytest.raises(LongCtxError, match="needs GPUs"):
            runs.launch(split)
        after = set(runs.runs_dir().glob("*")) if runs.runs_dir().exists() else set()
        assert after == before


def test_a_split_sequence_pads_to_its_chunks_and_reads_the_shifted_labels(tiny_llama_dir, tmp_path):
    # Context parallelism splits a sequence into 2 x degree chunks: pad to a multiple of that.
    split = _config(num_gpus=2, sharding="fsdp2", sequence_parallel=2)
    batch = Collator(pad_id=0, multiple=distributed.pad_multiple(split))(
        [{"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE, IGNORE, IGNORE, 8, 9]}]
    )
    assert batch["input_ids"].shape[1] == 8 and batch["labels"][0, 5:].eq(IGNORE).all()
    assert batch["attention_mask"][0].tolist() == [1] * 5 + [0] * 3
    # The Trainer shifts labels before splitting (`shift_labels`); our loss reads them as
    # they are, and over the whole row gives what shifting the labels itself gives.
    trainer = _trainer(tiny_llama_dir, tmp_path)
    labels = batch["labels"]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    whole = trainer.compute_loss(trainer.model, {**inputs, "labels": labels})
    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    split_loss = trainer.compute_loss(
        trainer.model, {**inputs, "labels": labels, "shift_labels": shifted}
    )
    assert split_loss.item() == pytest.approx(whole.item(), rel=1e-6)
    # A shard whose labelled positions are not the row's would give another loss.
    other = shifted.clone()
    other[0, 3] = IGNORE
    with torch.no_grad():
        moved = trainer.compute_loss(
            trainer.model, {**inputs, "labels": labels, "shift_labels": other}
        )
    assert moved.item() != pytest.approx(whole.item(), rel=1e-6)


def _trainer(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, TrainingArguments

    from core.train.engine import make_trainer_class

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    return make_trainer_class()(model=model, args=args)


def _two_processes(model_dir, n: int, **overrides) -> TrainConfig:
    """A tiny run in 2 CPU processes of one sample each, on `n` procedural samples."""
    base = dict(
        model=str(model_dir),
        quantization="none",
        engine="transformers",
        max_length=256,
        precision="fp32",
        global_batch_size=2,
        num_gpus=2,
        data=[DataSource(procedural="keys", n=n, length=200)],
    )
    return TrainConfig(**{**base, **overrides}).validate()


@pytest.mark.integration
def test_a_stop_reaches_every_process_of_a_run(tiny_llama_dir):
    # The stop signal goes to the first process only; the others must stop at the same step
    # (not wait for it in their next gradient exchange), and the run ends `stopped`.
    config = _two_processes(
        tiny_llama_dir, name="two-procs-stop", max_steps=400, save_steps=1000, n=8
    )
    run_dir = runs.launch(config)
    try:
        deadline = time.monotonic() + 300
        while not runs.read_metrics(run_dir) and time.monotonic() < deadline:
            assert runs.read_status(run_dir)["state"] in runs.ACTIVE, runs.tail_log(run_dir)
            time.sleep(0.2)
        runs.stop(run_dir.name)
        final = runs.wait(run_dir, timeout=120)
    finally:  # a process left waiting must not outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runs.read_status(run_dir)["group"], signal.SIGKILL)
    assert final["state"] == "stopped", runs.tail_log(run_dir)
    # Rank 0 logged up to the step the run stopped at, and nothing after it.
    assert runs.read_metrics(run_dir)[-1]["step"] == final["step"]
    # Stopped cleanly: a checkpoint of the step it stopped at, to resume from.
    assert runs.last_checkpoint(run_dir).name == f"checkpoint-{final['step']}"
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.integration
def test_a_run_folder_given_to_the_command_trains_in_its_processes(tiny_llama_dir, tmp_path):
    # An experiment's training step runs `longctx train CONFIG --run-dir DIR` itself: with
    # num_gpus 2 that command starts the two processes (it used to train in one).
    config = _two_processes(tiny_llama_dir, name="folder-two-procs", max_steps=1, n=2)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(config.to_yaml())
    cmd = [sys.executable, "-m", "core.cli", "train", str(run_dir / "config.yaml")]
    done = subprocess.run(
        [*cmd, "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "processes: 2 (MULTI_CPU)" in done.stderr + done.stdout
    assert runs.read_status(run_dir)["state"] == "completed"
    assert (run_dir / "accelerate.yaml").exists()
