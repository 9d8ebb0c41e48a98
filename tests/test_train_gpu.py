"""Training on a CUDA GPU: 4-bit NF4 through bitsandbytes, and the unsloth engine.

Skipped without CUDA (and the unsloth tests without unsloth); run on a GPU machine with
`make test-gpu`. A 2-layer random Llama with head size 64 keeps them to seconds. Its tokenizer
is a small BPE trained here on the built-in corpus with a ChatML template, so the tests need
neither the embedded model nor a download.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.train import runs
from core.train.config import DataSource, TrainConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
ROOT = Path(__file__).resolve().parent.parent


def _unsloth_reason() -> str | None:
    from core.train.unsloth_engine import unavailable_reason

    return unavailable_reason(try_import=False)


needs_unsloth = pytest.mark.skipif(
    torch.cuda.is_available() and _unsloth_reason() is not None,
    reason=f"unsloth engine unavailable: {_unsloth_reason()}",
)


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def bpe_tokenizer(folder: Path, vocab_size: int = 4000) -> None:
    """Train a byte-level BPE on the built-in corpus and save it with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from core.text.corpus import builtin_documents

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator((d.text for d in builtin_documents()), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def gpu_llama_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("gpu-llama")
    bpe_tokenizer(path)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    return path


def _config(model_dir: Path, **overrides) -> TrainConfig:
    base = dict(
        name="gpu",
        model=str(model_dir),
        quantization="4bit",
        rope_theta=2e8,
        max_length=2048,
        precision="bf16",
        learning_rate=1e-3,
        global_batch_size=1,
        max_steps=8,
        save_steps=4,
        data=[DataSource(procedural="keys", n=16, length=1500)],
    )
    return TrainConfig(**{**base, **overrides}).validate()


def _train(config: TrainConfig, tmp_path: Path) -> Path:
    config_file = tmp_path / "gpu.yaml"
    config_file.write_text(config.to_yaml())
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "train", str(config_file)],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=900,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return runs.list_runs()[0].path


def _assert_trained_with_new_base(run_dir: Path, engine: str) -> None:
    status = runs.read_status(run_dir)
    assert status["state"] == "completed" and status["engine"] == engine
    losses = [m["loss"] for m in runs.read_metrics(run_dir)]
    assert len(losses) == 8 and all(loss == loss for loss in losses)  # no NaN
    assert all(m["peak_mem_bytes"] > 0 for m in runs.read_metrics(run_dir))
    meta = json.loads((run_dir / "adapter" / "longctx.json").read_text())
    assert meta["rope_theta"] == 2e8 and meta["max_position_embeddings"] == 2048
    lora = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert (lora["r"], lora["lora_alpha"]) == (32, 16)
    assert {m.split(".")[-1] for m in lora["modules_to_save"]} == {"embed_tokens"}


def test_transformers_engine_trains_a_4bit_base(gpu_llama_dir, tmp_path):
    run_dir = _train(_config(gpu_llama_dir, engine="transformers"), tmp_path)
    _assert_trained_with_new_base(run_dir, "transformers")


def test_transformers_engine_with_offloaded_checkpoints(gpu_llama_dir, tmp_path):
    config = _config(gpu_llama_dir, engine="transformers", offload_checkpoints=True)
    _assert_trained_with_new_base(_train(config, tmp_path), "transformers")


@needs_unsloth
def test_unsloth_engine_trains_without_its_own_rope_scaling(gpu_llama_dir, tmp_path):
    run_dir = _train(_config(gpu_llama_dir, engine="unsloth"), tmp_path)
    _assert_trained_with_new_base(run_dir, "unsloth")


@needs_unsloth
def test_unsloth_labelled_loss_equals_the_full_logits_loss(gpu_llama_dir):
    # In its own process: unsloth patches transformers when it imports.
    script = f"""
import unsloth, torch
from core.train.config import DataSource, TrainConfig
from core.train.engine import load_for_training, make_trainer_class, labelled_positions
config = TrainConfig(name="x", model={str(gpu_llama_dir)!r}, engine="unsloth", quantization="4bit",
                     rope_theta=2e8, max_length=2048, precision="bf16",
                     data=[DataSource(procedural="keys", n=2, length=300)]).validate()
loaded = load_for_training(config)
model = loaded.model
rotary = model.base_model.model.model.rotary_emb
dim = rotary.inv_freq.numel() * 2
expected = 1.0 / (2e8 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
assert torch.allclose(rotary.inv_freq.float().cpu(), expected, rtol=1e-3), "RoPE base not 2e8"
from core.models import rope
assert rope.get_rope_parameters(model.config).get("rope_type", "default") == "default"
torch.manual_seed(0)
ids = torch.randint(5, 1000, (1, 1800), device="cuda")
labels = torch.full_like(ids, -100); labels[:, -40:] = ids[:, -40:]
trainer_cls = make_trainer_class()
from transformers import TrainingArguments
import tempfile
args = TrainingArguments(tempfile.mkdtemp(), report_to="none", bf16=True)
trainer = trainer_cls(model=model, args=args, hidden_states_only=True)
inputs = {{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}}
ours = trainer.compute_loss(model, dict(inputs), num_items_in_batch=torch.tensor(40, device="cuda"))
with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
full = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100)
print("ours", float(ours), "full", float(full))
assert abs(float(ours) - float(full)) < 2e-2 * float(full), (float(ours), float(full))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, text=True, capture_output=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
