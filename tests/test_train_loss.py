"""What one optimizer step trains on: loss weighting (per token or per sample), its equality
over accumulation steps and processes, and the seed fixing the starting adapter.

Runs go through the real launch paths (the CLI, accelerate launch on CPU with gloo); references are
computed with plain transformers on the same weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from core.data.render import IGNORE, render_sample
from core.train import runs
from core.train.config import DataSource, TrainConfig

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def trained_tokens(tokenizer, sample: dict) -> int:
    """Labelled tokens that a position predicts (a text sample's first token is predicted by none)."""
    return sum(1 for label in render_sample(tokenizer, sample).labels[1:] if label != IGNORE)


def _with_labels(tokenizer, make, target: int) -> dict:
    """The first sample `make(k)` (k = 1, 2, ...) with `target` trained tokens."""
    for k in range(1, 4 * target):
        sample = make(k)
        if trained_tokens(tokenizer, sample) == target:
            return sample
    raise AssertionError(f"no sample with exactly {target} loss tokens")


def two_samples(tokenizer, tmp_path: Path) -> tuple[Path, list[dict]]:
    """A text sample with 61 labelled tokens and a QA sample with 5, as one JSONL file."""
    words = "the river ran past old mills and quiet farms toward a grey sea".split()
    text = _with_labels(
        tokenizer, lambda k: {"text": " ".join(words[i % 13] for i in range(k))}, 61
    )
    qa = _with_labels(
        tokenizer,
        lambda k: {
            "conversations": [
                {"role": "user", "content": "Where did the river run?"},
                {"role": "assistant", "content": " ".join(["sea"] * k)},
            ]
        },
        5,
    )
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in (text, qa)))
    return path, [text, qa]


def _config(model: str, data: Path, **overrides) -> TrainConfig:
    base = dict(
        name="loss",
        model=model,
        quantization="none",
        engine="transformers",
        max_length=512,
        precision="fp32",
        learning_rate=1e-3,
        global_batch_size=2,
        per_device_batch_size=1,
        max_steps=1,
        save_steps=10,
        logging_steps=1,
        loss_weighting="sample",
        data=[DataSource(path=str(data))],
    )
    return TrainConfig(**{**base, **overrides}).validate()


def _train(config: TrainConfig) -> Path:
    run_dir = runs.launch(config)
    final = runs.wait(run_dir, timeout=600)
    assert final["state"] == "completed", runs.tail_log(run_dir)
    return run_dir


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_sample_weighting_logs_the_mean_of_each_samples_own_mean(
    tiny_llama_dir, embedded_tokenizer, tmp_path
):
    data, samples = two_samples(embedded_tokenizer, tmp_path)
    # References: plain transformers on the same weights (LoRA's B starts at zero and the
    # trained embed_tokens starts as a copy, so step 1 sees exactly these weights).
    model = str(tiny_llama_dir)
    reference = AutoModelForCausalLM.from_pretrained(model)
    own_means, counts = [], []
    with torch.no_grad():
        for sample in samples:
            rendered = render_sample(embedded_tokenizer, sample)
            out = reference(
                input_ids=torch.tensor([rendered.input_ids]), labels=torch.tensor([rendered.labels])
            )
            own_means.append(float(out.loss))
            counts.append(trained_tokens(embedded_tokenizer, sample))
    assert sorted(counts) == [5, 61]
    per_sample = sum(own_means) / 2
    per_token = sum(m * n for m, n in zip(own_means, counts, strict=True)) / sum(counts)
    assert abs(per_sample - per_token) > 0.05, (own_means, counts)  # the test can tell them apart

    config_file = tmp_path / "sample.yaml"
    config_file.write_text(_config(model, data).to_yaml())
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "train", str(config_file)],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logged = runs.read_metrics(runs.list_runs()[0].path)[0]["loss"]
    assert logged == pytest.approx(per_sample, rel=1e-4)
    assert logged != pytest.approx(per_token, rel=1e-3)

    # Both samples in one micro-batch: the same step; and the held-out loss, measured on them
    # before the step in batches of 2, is the same mean of means.
    batched = _train(
        _config(
            model, data, name="batched", per_device_batch_size=2, eval_data=str(data), eval_steps=1
        )
    )
    held_out, trained = runs.read_metrics(batched)[:2]
    assert held_out["step"] == 0 and held_out["eval_loss"] == pytest.approx(per_sample, rel=1e-4)
    assert trained["loss"] == pytest.approx(per_sample, rel=1e-4)
    token_run = _train(_config(model, data, name="token", loss_weighting="token"))
    assert runs.read_metrics(token_run)[0]["loss"] == pytest.approx(per_token, rel=1e-4)


def test_accumulation_and_processes_give_the_same_step(
    tiny_llama_dir, embedded_tokenizer, tmp_path
):
    # The global batch of 2 as one process accumulating 2 micro-batches, and as two processes
    # (`accelerate launch` with the config written into the run folder, gloo on CPU) of one
    # each: the same loss, gradient norm and updated adapter.
    data, _ = two_samples(embedded_tokenizer, tmp_path)
    one = _config(str(tiny_llama_dir), data, name="one-proc")
    two = _config(str(tiny_llama_dir), data, name="two-procs", num_gpus=2)
    assert (one.gradient_accumulation_steps, two.gradient_accumulation_steps) == (2, 1)
    a, b = _train(one), _train(two)
    launched = yaml.safe_load((b / "accelerate.yaml").read_text())
    assert (launched["num_processes"], launched["use_cpu"]) == (2, True)
    assert "accelerate.commands.launch" in runs.read_status(b)["command"]
    assert "processes: 2 (MULTI_CPU)" in (b / "log.txt").read_text()
    step_a, step_b = runs.read_metrics(a)[0], runs.read_metrics(b)[0]
    assert step_b["loss"] == pytest.approx(step_a["loss"], rel=1e-5)
    assert step_b["grad_norm"] == pytest.approx(step_a["grad_norm"], rel=1e-4)
    weights_a, weights_b = _adapter(a), _adapter(b)
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_b[key], weights_a[key], rtol=1e-4, atol=2e-5)


def test_same_seed_same_adapter_and_losses(tiny_llama_dir):
    def run(name: str, seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
        config = TrainConfig(
            name=name,
            model=str(tiny_llama_dir),
            quantization="none",
            engine="transformers",
            max_length=512,
            precision="fp32",
            learning_rate=1e-3,
            global_batch_size=1,
            max_steps=2,
            save_steps=10,
            seed=seed,
            data=[DataSource(procedural="keys", n=4, length=200)],
        ).validate()
        run_dir = _train(config)
        return [m["loss"] for m in runs.read_metrics(run_dir)], _adapter(run_dir)

    losses, adapter = run("seed-a", 7)
    again_losses, again = run("seed-b", 7)
    assert again_losses == losses
    assert adapter.keys() == again.keys()
    assert all(torch.equal(adapter[k], again[k]) for k in adapter)
    # The seed is what fixes them: another one starts LoRA's A matrices elsewhere.
    _, other = run("seed-c", 8)
    lora_a = [k for k in adapter if "lora_A" in k]
    assert lora_a and not all(torch.equal(adapter[k], other[k]) for k in lora_a)
