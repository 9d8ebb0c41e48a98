"""Training runs end to end: the CLI, run folders, labels, stop / kill / resume, export.

A 2-layer random Llama with the embedded tokenizer keeps these fast; one test trains the
shipped CPU preset on the real embedded model and checks that the loss falls.
"""

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
import torch
from safetensors.torch import load_file

from core import children
from core.errors import LongCtxError
from core.train import allocator, runs
from core.train.config import DataSource, TrainConfig, load_preset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def tiny_config(model_dir: Path, **overrides) -> TrainConfig:
    base = dict(
        name="tiny",
        model=str(model_dir),
        quantization="none",
        engine="transformers",
        rope_theta=40000.0,
        max_length=512,
        precision="fp32",
        learning_rate=1e-3,
        global_batch_size=1,
        max_steps=6,
        save_steps=3,
        logging_steps=1,
        data=[DataSource(procedural="keys", n=24, length=300)],
    )
    return TrainConfig(**{**base, **overrides}).validate()


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def _wait_for(predicate, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children.reap()
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_cli_run_writes_the_run_folder_and_a_paper_shaped_adapter(tiny_llama_dir, tmp_path):
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(tiny_config(tiny_llama_dir).to_yaml())
    result = _cli("train", str(config_file))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(result.stdout.split("run ")[1].split(": ")[1].splitlines()[0])
    for name in ("config.yaml", "status.json", "metrics.jsonl", "log.txt", "adapter"):
        assert (run_dir / name).exists(), name
    assert TrainConfig.from_yaml(run_dir / "config.yaml") == tiny_config(tiny_llama_dir)
    status = runs.read_status(run_dir)
    assert status["state"] == "completed" and status["step"] == 6
    metrics = runs.read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mem_bytes", "peak_mem_bytes", "eta_s"):
        assert all(m.get(key) is not None for m in metrics), key
    assert metrics[0]["lr"] == pytest.approx(1e-3) and metrics[-1]["lr"] < metrics[0]["lr"]
    _assert_lean_allocator(run_dir)

    adapter = run_dir / "adapter"
    lora = json.loads((adapter / "adapter_config.json").read_text())
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (32, 16, 0.0)
    assert sorted(lora["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert {m.split(".")[-1] for m in lora["modules_to_save"]} == {"embed_tokens"}
    meta = json.loads((adapter / "longctx.json").read_text())
    assert meta["rope_theta"] == 40000.0 and meta["overrides"]["rope_theta"]["from"] == 10000.0
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: it trained
    assert any("embed_tokens" in k for k in weights)
    assert not any("mlp" in k or "norm" in k for k in weights)  # frozen base stays out


def test_adapter_loads_with_its_rope_and_exports_merged(tiny_llama_dir, tmp_path):
    from core import workspace
    from core.models import loader
    from core.train import export

    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(tiny_config(tiny_llama_dir, max_steps=2, save_steps=10).to_yaml())
    assert _cli("train", str(config_file)).returncode == 0
    run = runs.list_runs()[0]
    loaded = loader.load_model(loader.ModelSpec(name=str(run.path / "adapter")))
    assert loaded.rope_theta == 40000.0 and loaded.adapter
    # Evaluations of the adapter and of its bare base make the card's base-vs-tuned table.
    tuned_eval, base_eval = tmp_path / "eval-tuned", tmp_path / "eval-base"
    for model, out in ((run.path / "adapter", tuned_eval), (tiny_llama_dir, base_eval)):
        done = _cli(
            "niah",
            "--model",
            str(model),
            "--lengths",
            "200",
            "--depths",
            "0,100",
            "--max-new-tokens",
            "4",
            "--out",
            str(workspace.subdir("evals") / out.name),
        )
        assert done.returncode == 0, done.stderr[-2000:]
    done = _cli(
        "perplexity",
        "--model",
        str(run.path / "adapter"),
        "--lengths",
        "100,200",
        "--windows",
        "1",
        "--out",
        str(workspace.subdir("evals") / "eval-ppl"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    merged_dir = export.merge(run.path / "adapter", tmp_path / "merged")
    merged_cfg = json.loads((merged_dir / "config.json").read_text())
    assert merged_cfg["rope_parameters"]["rope_theta"] == 40000.0
    card = (merged_dir / "README.md").read_text()
    assert "r=32, alpha=16" in card and "10000.0 -> 40000.0" in card
    assert card.startswith("---\nlibrary_name: transformers\ntags:")  # a local base: no id
    assert f"# {run.id}\n" in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and "`eval-" in line]
    assert [r.split(" | ")[:2] for r in rows] == [
        ["| tuned", "`eval-tuned`"],
        ["| tuned", "`eval-ppl`"],
        ["| base", "`eval-base`"],
    ]
    assert " niah | 200 | 2/2 | mean score " in rows[0] and " niah | 200 | 2/2 | " in rows[2]
    assert re.search(
        r" perplexity \| 100, 200 \| 2/2 \| perplexity [\d.]+ at 200 tokens \|", rows[1]
    )
    adapter_card = export.refresh_model_card(run.path / "adapter").read_text()  # what a push sends
    assert "library_name: peft" in adapter_card and "`eval-tuned`" in adapter_card
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "README.md").write_text("Someone's own card.")
    assert export.refresh_model_card(foreign) is None
    assert (foreign / "README.md").read_text() == "Someone's own card."
    base = load_file(tiny_llama_dir / "model.safetensors")
    merged = load_file(merged_dir / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[key], merged[key])  # LoRA folded in
    mlp = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(base[mlp], merged[mlp])  # untouched by training


def test_killed_run_is_interrupted_and_resumes_from_its_checkpoint(tiny_llama_dir):
    config = tiny_config(tiny_llama_dir, name="killme", max_steps=400, save_steps=5)
    run_dir = runs.launch(config)

    def frozen_past_a_checkpoint():
        # Killed with rows past its last checkpoint, which the resume must replace: frozen
        # (SIGSTOP) while looking, so no step or save slips in between the look and the kill.
        pid = runs.read_status(run_dir).get("pid")
        if not pid:
            return False
        os.killpg(pid, signal.SIGSTOP)
        ckpt, rows = runs.last_checkpoint(run_dir), runs.read_metrics(run_dir)
        if ckpt and rows and rows[-1]["step"] >= int(ckpt.name.split("-")[1]) + 2:
            return pid
        os.killpg(pid, signal.SIGCONT)
        return False

    pid = _wait_for(frozen_past_a_checkpoint, what="steps past a first checkpoint")
    os.killpg(pid, signal.SIGKILL)
    state = _wait_for(
        lambda: runs.read_status(run_dir)["state"] == "interrupted" and "ok",
        what="interrupted state",
    )
    assert state
    ckpt = runs.last_checkpoint(run_dir)
    resumed_from = int(ckpt.name.split("-")[1])
    before = {m["step"]: m for m in runs.read_metrics(run_dir)}
    assert max(before) > resumed_from
    runs.resume(run_dir.name)
    final = runs.wait(run_dir, timeout=600)
    assert final["state"] == "completed", runs.tail_log(run_dir)
    # One row per step in the file itself (what charts, `runs show` and the card read): the
    # killed attempt's rows up to the checkpoint, then the resumed process's from the step after.
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [m["step"] for m in rows] == list(range(1, 401))
    assert all(rows[s - 1] == before[s] for s in range(1, resumed_from + 1))
    resumed_at = rows[resumed_from]["time"]
    assert all(before[s]["time"] < resumed_at for s in before)  # the killed rows past it went
    assert runs.read_metrics(run_dir) == rows
    state_file = json.loads((runs.last_checkpoint(run_dir) / "trainer_state.json").read_text())
    assert state_file["global_step"] == 400


def test_trim_metrics_keeps_what_a_resume_from_step_4_does_not_log_again(tmp_path):
    rows = [
        {"step": 0, "eval_loss": 3.0},
        *({"step": s, "loss": 9.0 - s} for s in range(1, 7)),
        {"step": 4, "eval_loss": 2.0},
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "lo'  # killed mid-line
    (tmp_path / "metrics.jsonl").write_text(text)
    # The held-out loss at step 4 is measured again on start, so the killed attempt's goes too.
    assert runs.trim_metrics(tmp_path, 4, reevaluates=True) == 4
    kept = runs.read_metrics(tmp_path)
    assert [(m["step"], "eval_loss" in m) for m in kept] == [
        (0, True),
        (1, False),
        (2, False),
        (3, False),
        (4, False),
    ]
    assert runs.trim_metrics(tmp_path, 4) == 0  # nothing more to drop: the file is untouched
    assert not list(tmp_path.glob(".metrics.jsonl*"))  # no temporary file left beside it
    # A file from before trimming existed: read as one row per step, the later one winning.
    (tmp_path / "metrics.jsonl").write_text(text + "\n" + json.dumps({"step": 5, "loss": 0.5}))
    assert [m.get("loss") for m in runs.read_metrics(tmp_path) if m["step"] == 5] == [0.5]


def test_stop_is_a_clean_checkpoint_and_one_run_per_device(tiny_llama_dir):
    config = tiny_config(tiny_llama_dir, name="stopme", max_steps=2000, save_steps=1000)
    run_dir = runs.launch(config)
    _wait_for(lambda: runs.read_metrics(run_dir), what="first metrics")
    with pytest.raises(LongCtxError, match="one run per device"):
        runs.launch(tiny_config(tiny_llama_dir, name="second"))
    runs.stop(run_dir.name)
    final = runs.wait(run_dir, timeout=300)
    assert final["state"] == "stopped"
    assert runs.last_checkpoint(run_dir) is not None
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert final["step"] < 2000
    _assert_lean_allocator(run_dir)  # the app's way in (a child process) gets it too
    # Resumed and stopped again: the card states the steps of the second stop (peft rewrites
    # the front matter of a card it finds; ours must still be recognised and replaced).
    first = final["step"]
    runs.resume(run_dir.name)
    _wait_for(lambda: (runs.read_status(run_dir).get("step") or 0) > first, what="more steps")
    runs.stop(run_dir.name)
    final = runs.wait(run_dir, timeout=300)
    assert final["state"] == "stopped" and final["step"] > first
    card = (run_dir / "adapter" / "README.md").read_text()
    assert f"{final['step']} steps" in card and "longctx-studio" in card


def _assert_lean_allocator(run_dir: Path) -> None:
    """CPU training runs on tcmalloc/jemalloc when one is installed (see core/train/allocator)."""
    expected = allocator.find() or "the system's malloc"
    assert f"memory allocator: {expected}" in (run_dir / "log.txt").read_text()


def test_failures_are_one_line_reasons(tmp_path):
    config = TrainConfig(
        name="bad", model="embedded", data=[DataSource(path=str(tmp_path / "none.jsonl"))]
    )
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(config.to_yaml())
    result = _cli("train", str(config_file))
    assert result.returncode == 1
    run = runs.list_runs()[0]
    assert run.state == "failed" and "none.jsonl" in run.status["reason"]
    assert "Traceback" not in result.stderr


def test_cpu_preset_trains_with_falling_loss():
    result = _cli("train", str(ROOT / "assets" / "presets" / "cpu-keys.yaml"), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = runs.list_runs()[0]
    losses = [m["loss"] for m in runs.read_metrics(run.path)]
    assert len(losses) == load_preset("cpu-keys").max_steps
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.7 * first, losses
    # Library noise stays out of the log: peft's offline lookup of the adapter's Hub base at
    # each save, bitsandbytes' missing CPU kernels, peft's use of a deprecated name.
    log = (run.path / "log.txt").read_text()
    for noise in ("Unable to fetch remote file", "kernels-community", "is_gradient_checkpointing"):
        assert noise not in log, noise


def test_held_out_loss_is_measured_before_and_during_training(tiny_llama_dir, tmp_path):
    from core.models.tokenizers import load_tokenizer
    from core.synth import procedural

    held = procedural.make("keys", 3, 300, load_tokenizer(str(tiny_llama_dir)), seed=99)
    held_file = tmp_path / "keys.eval.jsonl"
    held_file.write_text("".join(json.dumps(r) + "\n" for r in held))
    config = tiny_config(
        tiny_llama_dir,
        name="held-out",
        max_steps=5,
        save_steps=5,
        eval_steps=2,
        eval_data=str(held_file),
    )
    run_dir = runs.launch(config)
    final = runs.wait(run_dir, timeout=600)
    assert final["state"] == "completed", runs.tail_log(run_dir)
    metrics = runs.read_metrics(run_dir)
    measured = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    # Before the first step, every 2 steps, and the final adapter.
    assert [step for step, _ in measured] == [0, 2, 4, 5]
    assert all(0 < loss < 20 for _, loss in measured), measured
    # Training rows are unchanged, and their token counts leave the held-out samples out.
    trained = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in trained] == [1, 2, 3, 4, 5]
    status = runs.read_status(run_dir)
    assert status["eval_data"]["samples"] == 3 and status["eval_loss"] == measured[-1][1]
    assert trained[-1]["tokens"] <= 5 * config.max_length  # 5 samples; 12 held-out ones more
    card = (run_dir / "adapter" / "README.md").read_text()
    first, last = measured[0][1], measured[-1][1]
    assert (
        f"Held-out loss (3 samples of `keys.eval.jsonl`): {first:.4f} at step 0 -> "
        f"{last:.4f} at step 5" in card
    )


def test_held_out_samples_too_long_for_max_length_are_named_as_such(embedded_tokenizer, tmp_path):
    from core.train.engine import prepare_eval_dataset

    long = {
        "conversations": [
            {"role": "user", "content": "word " * 2000 + "\n\nHow many?"},
            {"role": "assistant", "content": "Many."},
        ]
    }
    held_file = tmp_path / "long.eval.jsonl"
    held_file.write_text(json.dumps(long) + "\n")
    config = TrainConfig(
        max_length=512,
        eval_data=str(held_file),
        data=[DataSource(procedural="keys", n=2, length=200)],
    )
    with pytest.raises(
        LongCtxError, match=f"no held-out sample of {held_file} fits max_length 512"
    ):
        prepare_eval_dataset(config, embedded_tokenizer)
    assert prepare_eval_dataset(TrainConfig(), embedded_tokenizer) is None  # none named


def test_paper_preset_trains_on_a_long_texts_head_plus_eos(embedded_tokenizer, tmp_path):
    from core.train.engine import Collator, labelled_positions, prepare_dataset

    tok = embedded_tokenizer
    text = " ".join(f"page {i} of the long report." for i in range(100))
    long_chat = {
        "conversations": [
            {"role": "user", "content": "word " * 400 + "\n\nHow many?"},
            {"role": "assistant", "content": "Many."},
        ]
    }
    mixed, chats = tmp_path / "mixed.jsonl", tmp_path / "chats.jsonl"
    mixed.write_text(json.dumps({"text": text}) + "\n" + json.dumps(long_chat) + "\n")
    chats.write_text(json.dumps(long_chat) + "\n")
    config = load_preset("paper")
    config.max_length = 128
    # The preset's policy for the mixed file; the second source sets its own.
    config.data = [
        DataSource(path=str(mixed)),
        DataSource(path=str(chats), overflow="truncate_middle"),
    ]
    dataset, report = prepare_dataset(config, tok)
    # The long conversation of the mixed file is dropped; the other source's is cut instead.
    assert (report.samples, report.dropped_too_long, report.truncated) == (2, 1, 2)
    ids = tok(text)["input_ids"]
    assert len(ids) > 128
    row = next(r for r in dataset if r["labels"] == r["input_ids"])  # the text sample
    assert row["input_ids"] == ids[:127] + [tok.eos_token_id]
    _, targets = labelled_positions(Collator(tok.pad_token_id)([row])["labels"])
    assert targets[0].tolist() == ids[1:127] + [tok.eos_token_id]  # what the loss falls on
    chat = next(r for r in dataset if r["labels"] != r["input_ids"])
    assert len(chat["input_ids"]) == 128 and tok.decode(chat["input_ids"]).count("Many.") == 1


def test_data_check_counts_what_max_length_would_drop(embedded_tokenizer, tmp_path):
    from core.train import datacheck

    short = {
        "conversations": [
            {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."},
        ]
    }
    long = {"text": "word " * 2000}
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "".join(json.dumps(r) + "\n" for r in [short, long, short, long, short]) + "{oops\n"
    )
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps(short) + "\n")
    config = TrainConfig(
        max_length=512,
        eval_data=str(held),
        data=[DataSource(path=str(mixed)), DataSource(procedural="keys", n=8, length=1000)],
    )
    fits = datacheck.check(config)
    assert [(f.role, f.samples, f.over, f.malformed) for f in fits] == [
        ("training", 6, 2, 1),
        ("training", 8, 8, 0),
        ("held-out", 1, 0, 0),
    ]
    assert fits[0].line(config) == (
        f"{mixed} (training): 6 samples, 1 malformed (skipped), 2 over 512 tokens (40.0 %): dropped"
    )
    assert fits[2].line(config).endswith("all within 512 tokens")
    config.overflow = "truncate_middle"
    assert fits[1].line(config).endswith("8 over 512 tokens (100.0 %): cut in the middle")
    config.data[0].overflow = "head"  # a source's own policy wins over the run's
    line = datacheck.check(config)[0].line(config)
    assert line.endswith(
        "2 over 512 tokens (40.0 %): texts keep their head + EOS, conversations dropped"
    )


def test_several_processes_share_the_global_batch(tiny_llama_dir):
    # The multi-GPU launch (`accelerate launch`, one process per device) exercised on CPU
    # processes with the gloo backend: the same command, the same accumulation arithmetic, rank
    # 0 alone writing.
    config = tiny_config(
        tiny_llama_dir,
        name="two-procs",
        num_gpus=2,
        global_batch_size=4,
        max_steps=4,
        save_steps=2,
        data=[DataSource(procedural="keys", n=32, length=120)],
    )
    assert config.gradient_accumulation_steps == 2  # 4 = 2 processes x 1 sample x 2 steps
    run_dir = runs.launch(config)
    command = runs.read_status(run_dir)["command"]
    assert command[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert command[4] == str(run_dir / "accelerate.yaml")
    final = runs.wait(run_dir, timeout=600)
    assert final["state"] == "completed", runs.tail_log(run_dir)
    assert [m["step"] for m in runs.read_metrics(run_dir)] == [1, 2, 3, 4]  # one writer
    log = (run_dir / "log.txt").read_text()
    assert log.count("data: DataReport(samples=32") == 2  # both ranks read the data
    state = json.loads((runs.last_checkpoint(run_dir) / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(0.5)  # 4 steps x 4 samples of 32: the global batch
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()


def test_unsloth_engine_without_a_gpu_is_refused_before_any_run_folder(tiny_llama_dir, tmp_path):
    config = tiny_config(tiny_llama_dir, engine="unsloth", precision="auto")
    config_file = tmp_path / "unsloth.yaml"
    config_file.write_text(config.to_yaml())
    before = {r.id for r in runs.list_runs()}
    result = _cli("train", str(config_file))
    assert result.returncode == 1
    assert "engine unsloth:" in result.stderr and "use engine: transformers" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(LongCtxError, match="engine unsloth"):
        runs.launch(config)  # the app's path
    assert {r.id for r in runs.list_runs()} == before


def test_a_model_that_cannot_be_found_is_refused_before_any_run_folder(tmp_path):
    config = tiny_config(tmp_path / "no-such-model")
    config_file = tmp_path / "missing.yaml"
    config_file.write_text(config.to_yaml())
    before = {r.id for r in runs.list_runs()}
    result = _cli("train", str(config_file))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no-such-model" in result.stderr.splitlines()[-1]
    with pytest.raises(LongCtxError, match="no-such-model"):
        runs.launch(config)  # the app's path
    assert {r.id for r in runs.list_runs()} == before


def test_unsloth_loads_a_staged_folder_with_the_new_rope_base(tiny_llama_dir, tmp_path):
    # unsloth adds linear RoPE scaling when max_seq_length > max_position_embeddings, so it is
    # handed a folder whose config already has the new base and window; the weights are links.
    from transformers import AutoConfig, AutoModelForCausalLM

    from core.models import loader, rope
    from core.train.unsloth_engine import stage_model

    original = (tiny_llama_dir / "config.json").read_bytes()
    resolved = loader.load_config(
        loader.ModelSpec(name=str(tiny_llama_dir), rope_theta=2e8, max_position_embeddings=8192)
    )
    staged = stage_model(tiny_llama_dir, resolved.config, tmp_path / "staged")
    config = AutoConfig.from_pretrained(staged)
    assert rope.get_rope_theta(config) == 2e8 and config.max_position_embeddings == 8192
    assert rope.get_rope_parameters(config).get("rope_type", "default") == "default"
    weights = staged / "model.safetensors"
    assert weights.is_symlink() and weights.resolve() == (tiny_llama_dir / "model.safetensors")
    assert (tiny_llama_dir / "config.json").read_bytes() == original
    a = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(staged).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
