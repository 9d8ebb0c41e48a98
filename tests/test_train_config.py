"""Training configs: presets, YAML round trip, validation, the loss-position selection, fit;
the run log's tail."""

from __future__ import annotations

import pytest
import torch

from core.errors import ConfigError
from core.train import config as cfg
from core.train import memory, runs
from core.train.engine import IGNORE, Collator, labelled_positions


def test_every_preset_loads_validates_and_explains_itself():
    names = cfg.list_presets()
    assert "paper" in names and any("cpu" in n for n in names)
    for name in names:
        cfg.load_preset(name).validate()
        header = cfg.preset_header(name)
        assert "Run:" in header and "Needs:" in header, name
        assert f"longctx train assets/presets/{name}.yaml" in header


def test_paper_preset_is_the_paper_recipe():
    c = cfg.load_preset("paper")
    assert (c.lora_r, c.lora_alpha, c.lora_dropout) == (32, 16, 0.0)
    assert c.lora_targets == ["q_proj", "k_proj", "v_proj", "o_proj"] and c.train_embeddings
    assert (c.learning_rate, c.lr_scheduler, c.warmup_steps) == (5e-5, "linear", 0)
    assert (c.global_batch_size, c.per_device_batch_size, c.epochs) == (8, 1, 1.0)
    assert c.rope_theta == 2e8 and c.max_length == 81920 and c.quantization == "4bit"
    assert c.gradient_checkpointing and c.group_by_length and c.precision == "bf16"
    # Each sample weighs the same in the loss (8 GPUs x 1 sample); configs written before the
    # setting existed keep weighing tokens, as they trained.
    assert c.loss_weighting == "sample"
    # Over-length: conversations dropped, texts keep their head and end with EOS.
    assert c.overflow == "head"
    assert cfg.TrainConfig.from_yaml("name: old\n").loss_weighting == "token"
    # The paper's mix, one source each with its count: synthetic QA, RedPajama text, LongAlpaca.
    paths = [s.path for s in c.data]
    assert [p.rsplit("[", 1)[1] for p in paths] == ["3500]", "5000]", "12000]"]
    assert "synthetic" in paths[0] and "redpajama" in paths[1] and "longalpaca" in paths[2]
    assert c.data[1].overflow == "head"
    assert "namespace-Pt/projects" in cfg.preset_header("paper")


def test_yaml_round_trip_is_exact():
    c = cfg.load_preset("cpu-keys")
    again = cfg.TrainConfig.from_yaml(c.to_yaml())
    assert again == c and again.to_yaml() == c.to_yaml()


def test_validation_lists_every_problem_once():
    with pytest.raises(ConfigError) as info:
        cfg.TrainConfig(
            max_length=10,
            overflow="cut",
            lora_targets=[],
            global_batch_size=3,
            per_device_batch_size=2,
            data=[],
        ).validate()
    problems = info.value.problems
    assert len(problems) == 5
    assert any("max_length" in p for p in problems) and any(
        "no training data" in p for p in problems
    )


def test_a_source_may_set_its_own_overflow():
    c = cfg.TrainConfig(
        overflow="drop", data=[{"path": "a.jsonl", "overflow": "head"}, {"path": "b.jsonl"}]
    )
    again = cfg.TrainConfig.from_yaml(c.to_yaml()).validate()
    assert [d.overflow for d in again.data] == ["head", ""]  # empty: the run's policy
    assert "overflow" not in again.to_dict()["data"][1]  # older YAMLs read and write the same
    with pytest.raises(ConfigError, match="data source 2: overflow must be empty"):
        cfg.TrainConfig(
            data=[{"path": "a.jsonl"}, {"path": "b.jsonl", "overflow": "tail"}]
        ).validate()


def test_unsloth_is_refused_in_fp32():
    with pytest.raises(ConfigError, match="engine unsloth trains in bf16 or fp16"):
        cfg.TrainConfig(
            engine="unsloth",
            precision="fp32",
            data=[cfg.DataSource(procedural="keys", n=2, length=100)],
        ).validate()


def test_layer_tiles_are_refused_with_lora_dropout():
    # The tiled backward recomputes tiles in another order: dropout masks would not match.
    with pytest.raises(ConfigError, match="set lora_dropout: 0"):
        cfg.TrainConfig(
            layer_tile=2048,
            lora_dropout=0.05,
            data=[cfg.DataSource(procedural="keys", n=2, length=100)],
        ).validate()


def test_unknown_keys_suggest_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        cfg.TrainConfig.from_yaml("learning_rte: 0.1\n")


def test_form_values_are_coerced_to_declared_types():
    c = cfg.TrainConfig(
        max_length=2048.0,
        lora_r="16",
        gradient_checkpointing="false",
        data=[{"procedural": "keys", "n": 3.0, "length": 100.0}],
    )
    assert c.max_length == 2048 and isinstance(c.max_length, int)
    assert c.lora_r == 16 and c.gradient_checkpointing is False and c.data[0].n == 3


def test_labelled_positions_select_exactly_the_predicting_rows():
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 7, 8, IGNORE, 9]])
    positions, targets = labelled_positions(labels)
    # Position p predicts token p + 1: labels at 3, 4, 6 are predicted from rows 2, 3, 5.
    assert positions.tolist() == [2, 3, 5]
    assert targets.tolist() == [[7, 8, 9]]


def test_collator_pads_labels_with_ignore():
    batch = Collator(pad_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [5], "labels": [IGNORE]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_fit_estimate_scales_with_length_and_gives_the_fix(llama3_8b_shape):
    llama8b = llama3_8b_shape
    paper = cfg.load_preset("paper")
    a800 = ("A800", 80 * memory.GB)
    est = memory.estimate(paper, llama8b, labelled_tokens=1024, device=a800)
    assert est.verdict in ("fits", "tight") and "4-bit" in est.summary()
    assert "assumes 4-bit NF4 base, batch 1 x 81,920 tokens, checkpointed layers on CPU" in (
        est.summary()
    )
    paper.max_length = 400_000
    too_long = memory.estimate(paper, llama8b, labelled_tokens=1024, device=a800)
    assert too_long.verdict == "too big" and too_long.total > est.total
    # The cheapest change that fits is named, and it does fit.
    assert "to fit: set mlp_tile: 4096 (about" in too_long.summary()
    paper.mlp_tile = 4096
    assert memory.estimate(paper, llama8b, labelled_tokens=1024, device=a800).verdict != "too big"
    # A million tokens need the whole layer tiled (keys, values and one tile per layer).
    paper.mlp_tile, paper.max_length = 0, 1_000_000
    advice = memory.estimate(paper, llama8b, labelled_tokens=1024, device=a800).notes[-1]
    assert advice.startswith("to fit: set layer_tile: 4096 (about")
    # When no setting is enough on one GPU: more GPUs sharing each sequence, with the memory
    # each would take, or the longest max_length that fits on this one.
    paper.max_length = 4_000_000
    advice = memory.estimate(paper, llama8b, labelled_tokens=1024, device=a800).notes[-1]
    assert advice.startswith(
        "to fit: set mlp_tile: 4096, turn on bf16_residual, and use 8 GPUs with sharding: fsdp2, "
        "sequence_parallel: 8 (about "
    )
    spread = cfg.TrainConfig(**{**paper.to_dict(), "data": []})
    spread.mlp_tile, spread.bf16_residual = 4096, True  # a tiled layer needs whole sequences
    spread.num_gpus, spread.sharding, spread.sequence_parallel = 8, "fsdp2", 8
    per_gpu = memory.estimate(spread, llama8b, labelled_tokens=1024, device=a800)
    assert per_gpu.verdict != "too big" and "on each of 8 x A800" in per_gpu.summary()
    assert "8 GPUs sharded (fsdp2), each sequence split over 8" in per_gpu.summary()
    one_gpu = "or on 1 GPU(s): set mlp_tile: 4096, turn on bf16_residual, set layer_tile: 4096"
    assert one_gpu + ", and lower max_length to " in advice
    longest = int(advice.split("lower max_length to ")[1].split(" ")[0].replace(",", ""))
    paper.mlp_tile, paper.layer_tile, paper.max_length = 4096, 4096, longest
    paper.bf16_residual = True
    assert memory.estimate(paper, llama8b, labelled_tokens=1024, device=a800).verdict != "too big"
    paper.max_length = longest + 1024
    assert memory.estimate(paper, llama8b, labelled_tokens=1024, device=a800).verdict == "too big"


def test_log_tail_shows_progress_bars_as_a_terminal_would(tmp_path):
    bar = "".join(f"\r{pct:3d}%|{'#' * (pct // 10):10}| {pct // 10}/10" for pct in (0, 50, 100))
    (tmp_path / "log.txt").write_text(
        "loading\r\n" + bar + "\r" + " " * 30 + "\r{'loss': '0.25'}\n" + bar + "\n\ndone\n"
    )
    assert runs.tail_log(tmp_path).splitlines() == [
        "loading",
        "{'loss': '0.25'}",
        "100%|##########| 10/10",
        "done",
    ]
    assert runs.tail_log(tmp_path, lines=2).splitlines() == ["100%|##########| 10/10", "done"]
