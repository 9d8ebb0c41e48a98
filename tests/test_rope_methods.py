"""The typed RoPE setting (core.models.rope.RopeSetting): validation, what it writes into a
config, and a scaling that survives training, merging and reloading."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import LlamaConfig

from core.errors import ConfigError
from core.models import rope
from core.models.loader import ModelSpec
from core.models.rope import RopeSetting
from core.train.config import DataSource, TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def _config(window: int = 8192, theta: float = 1e5) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=1,
        max_position_embeddings=window,
        rope_theta=theta,
    )


def test_every_problem_is_listed_at_once():
    setting = RopeSetting.parse("yarn:beta_fast=1,beta_slow=2,attention_factor=-1,theta=-5")
    problems = setting.problems()
    assert problems == [
        "rope theta must be positive, got -5",
        "rope method yarn needs a factor (e.g. 4 to take 8K to 32K)",
        "rope beta_fast (1) must exceed beta_slow (2)",
        "rope attention_factor must be positive, got -1",
    ]
    with pytest.raises(ConfigError) as err:
        ModelSpec(rope="yarn:beta_fast=1,beta_slow=2")
    assert "needs a factor" in str(err.value) and "must exceed beta_slow" in str(err.value)


def test_settings_refuse_what_their_method_does_not_take():
    assert RopeSetting.parse("linear:factor=2,beta_fast=8").problems() == [
        "rope method linear does not take beta_fast"
    ]
    assert RopeSetting.parse("ntk:factor=2").problems()[0].startswith("rope method must be one of")
    with pytest.raises(ConfigError, match="unknown rope setting"):
        RopeSetting.parse("yarn:factr=4")
    with pytest.raises(ConfigError, match="key=value"):
        RopeSetting.parse("yarn:4")
    assert RopeSetting.parse("linear:factor=0.5").problems() == [
        "rope factor must be at least 1, got 0.5"
    ]


@pytest.mark.parametrize(
    "text, rope_type, window, extra",
    [
        ("base:theta=1e6", "default", 8192, {"rope_theta": 1e6}),
        ("2e8", "default", 8192, {"rope_theta": 2e8}),
        ("linear:factor=2", "linear", 16384, {"factor": 2.0}),
        ("dynamic:factor=4", "dynamic", 8192, {"factor": 4.0}),
        (
            "yarn:factor=4",
            "yarn",
            32768,
            {
                "factor": 4.0,
                "original_max_position_embeddings": 8192,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
            },
        ),
        (
            "llama3:factor=4,theta=5e5",
            "llama3",
            32768,
            {"rope_theta": 5e5, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
        ),
    ],
)
def test_a_setting_is_written_into_the_config(text, rope_type, window, extra):
    config = _config()
    changed = rope.apply_setting(config, RopeSetting.parse(text))
    params = rope.get_rope_parameters(config)
    assert params["rope_type"] == rope_type
    assert {k: params[k] for k in extra} == extra
    assert config.max_position_embeddings == window
    assert ("max_position_embeddings" in changed) == (window != 8192)
    # What a saved config carries reads back as the same setting.
    again = rope.get_rope_setting(config)
    assert again.method == ("base" if rope_type == "default" else rope_type)
    assert again.factor == extra.get("factor", RopeSetting.parse(text).factor)


def test_the_scaled_frequencies_are_the_ones_transformers_computes():
    """A linear factor of 2 halves every inverse frequency; YaRN keeps the fastest dimension."""
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    plain = 1.0 / (1e5 ** (torch.arange(0, 16, 2, dtype=torch.float) / 16))  # head_dim 16
    linear = _config()
    rope.apply_setting(linear, RopeSetting.parse("linear:factor=2"))
    halved, _ = ROPE_INIT_FUNCTIONS["linear"](linear, "cpu")
    assert torch.allclose(halved, plain / 2)
    yarn = _config()
    rope.apply_setting(yarn, RopeSetting.parse("yarn:factor=4"))
    stretched, scale = ROPE_INIT_FUNCTIONS["yarn"](yarn, "cpu")
    assert stretched[0] == pytest.approx(plain[0].item()) and stretched[-1] < plain[-1]
    assert scale == pytest.approx(0.1 * math.log(4) + 1)


def test_longrope_factors_come_from_a_file_and_must_fit_the_heads(tmp_path):
    factors = tmp_path / "factors.json"
    factors.write_text(
        json.dumps({"rope_scaling": {"short_factor": [1.0] * 8, "long_factor": [2.0] * 8}})
    )
    setting = RopeSetting.parse(f"longrope:factor=4,factors_file={factors}")
    assert setting.long_factor == [2.0] * 8
    assert setting.problems(head_dim=16) == []
    assert setting.problems(head_dim=32) == [
        "rope short_factor has 8 numbers; this model needs head_dim / 2 = 16",
        "rope long_factor has 8 numbers; this model needs head_dim / 2 = 16",
    ]
    config = _config()  # head_dim 16
    rope.apply_setting(config, setting)
    assert rope.get_rope_parameters(config)["long_factor"] == [2.0] * 8


def test_old_configs_with_only_rope_theta_load_unchanged(tmp_path):
    config = TrainConfig.from_yaml("rope_theta: 1000000.0\nmax_length: 4096\n")
    assert config.rope == "" and config.rope_setting() == RopeSetting(method="base", theta=1e6)
    assert "rope: ''" in config.to_yaml()
    spec = ModelSpec(name="embedded", rope_theta=1e6)
    assert spec.rope_setting() == RopeSetting(method="base", theta=1e6)
    assert spec.label == "embedded (rope_theta=1e+06)"


def test_train_config_takes_a_mapping_or_a_line_and_refuses_a_contradiction():
    mapped = TrainConfig.from_yaml("rope:\n  method: yarn\n  factor: 4\n")
    assert mapped.rope == "yarn:factor=4" and mapped.rope_setting().factor == 4
    with pytest.raises(ConfigError) as err:
        TrainConfig(rope="base:theta=1e6", rope_theta=2e8).validate()
    assert "disagree" in str(err.value)
    with pytest.raises(ConfigError, match="needs a factor"):
        TrainConfig(rope="llama3").validate()


@pytest.mark.integration
def test_yarn_trains_merges_and_reloads_with_the_same_scaling(tiny_llama_dir, tmp_path):
    from core.models import loader
    from core.train import export, runs

    config = TrainConfig(
        name="yarn",
        model=str(tiny_llama_dir),
        quantization="none",
        engine="transformers",
        rope="yarn:factor=4",
        max_length=512,
        precision="fp32",
        learning_rate=1e-3,
        global_batch_size=1,
        max_steps=2,
        save_steps=10,
        logging_steps=1,
        data=[DataSource(procedural="keys", n=8, length=300)],
    ).validate()
    config_file = tmp_path / "yarn.yaml"
    config_file.write_text(config.to_yaml())
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "train", str(config_file)],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = runs.list_runs()[0]
    meta = json.loads((run.path / "adapter" / "longctx.json").read_text())
    assert meta["rope"]["method"] == "yarn" and meta["rope"]["factor"] == 4.0
    assert meta["max_position_embeddings"] == 8192  # 2048 x 4
    adapter = loader.load_model(loader.ModelSpec(name=str(run.path / "adapter")))
    assert adapter.model.base_model.model.model.rotary_emb.rope_type == "yarn"
    assert "rope yarn x4" in adapter.label
    merged = export.merge(run.path / "adapter", tmp_path / "merged")
    params = json.loads((merged / "config.json").read_text())["rope_parameters"]
    assert (params["rope_type"], params["factor"], params["original_max_position_embeddings"]) == (
        "yarn",
        4.0,
        2048,
    )
    reloaded = loader.load_model(loader.ModelSpec(name=str(merged)))
    assert reloaded.model.model.rotary_emb.rope_type == "yarn" and reloaded.window == 8192
    assert "RoPE: yarn x4" in (merged / "README.md").read_text()


def test_each_method_has_a_suggestion_for_the_target():
    from core.rope import advisor, methods

    shape = advisor.RopeShape(base=1e5, head_dim=64, window=8192)
    suggested = {m.method: m for m in methods.suggest(shape, 32768)}
    assert list(suggested) == ["base", "linear", "dynamic", "yarn", "llama3", "longrope"]
    assert suggested["linear"].setting.spelled() == "linear:factor=4"
    assert suggested["yarn"].setting.spelled() == "yarn:factor=4,original_window=8192"
    assert suggested["base"].setting.theta == advisor.round_up(advisor.ntk_base(shape, 32768))
    assert suggested["longrope"].setting is None and "factors_file" in suggested["longrope"].why
    # transformers' dynamic NTK at the target: (4 * 4 - 3) ** (64 / 62) times the base.
    assert f"x{13 ** (64 / 62):.3g}" in suggested["dynamic"].why
    for m in suggested.values():
        assert m.setting is None or m.setting.problems() == []


def test_wavelengths_follow_each_method():
    """Linear stretches every pair by the factor; YaRN and llama3 keep the fast pairs and
    stretch the slow ones by the factor; a new base stretches the slowest pair most."""
    import numpy as np

    from core.rope import figures, methods

    config = _config()  # 8 pairs, base 1e5, window 8192
    plain = methods.wavelengths(config, None, 32768)
    assert np.allclose(
        methods.wavelengths(config, RopeSetting.parse("linear:factor=4"), 32768), plain * 4
    )
    for text in ("yarn:factor=4", "llama3:factor=4"):
        waves = methods.wavelengths(config, RopeSetting.parse(text), 32768)
        assert waves[0] == pytest.approx(plain[0]) and waves[-1] == pytest.approx(plain[-1] * 4)
    based = methods.wavelengths(config, RopeSetting.parse("base:theta=1e6"), 32768)
    assert based[0] == pytest.approx(plain[0]) and based[-1] / plain[-1] > based[1] / plain[1]
    fig = figures.methods_figure(config, [RopeSetting.parse("yarn:factor=4")], 32768)
    assert [t.name for t in fig.data][:2] == ["as trained", "yarn x4"]


def test_a_comparison_refuses_bad_methods_all_at_once():
    from core.evals.methods import MethodsConfig

    with pytest.raises(ConfigError) as err:
        MethodsConfig(methods=["none", "yarn", "linear:factor=0.5", "none"], lengths="1k")
    assert [p.split(":")[0] for p in err.value.problems] == [
        "yarn",
        "linear",
        "a method is listed twice",
    ]
    with pytest.raises(ConfigError, match="has no adapter"):
        MethodsConfig(methods=[], runs=["no-such-run"]).entries()


@pytest.mark.integration
def test_compare_methods_writes_one_folder_per_entry_and_measure(tiny_llama_dir, tmp_path):
    """Three entries on a 2-layer model, perplexity and NIAH at two lengths: every folder is an
    ordinary evaluation, the table and figures have a line per entry, and a rerun resumes."""
    out = tmp_path / "cmp"
    argv = [
        sys.executable,
        "-m",
        "core.cli",
        "compare-methods",
        "--model",
        str(tiny_llama_dir),
        "--methods",
        "none",
        "yarn:factor=2",
        "linear:factor=2",
        "--lengths",
        "256,512",
        "--depths",
        "50",
        "--out",
        str(out),
    ]
    done = subprocess.run(argv, cwd=ROOT, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == [
        "as-is-niah",
        "as-is-perplexity",
        "linear-x2-niah",
        "linear-x2-perplexity",
        "yarn-x2-niah",
        "yarn-x2-perplexity",
    ]
    for name in ("perplexity.html", "niah.html", "table.md", "comparison.json"):
        assert (out / name).exists(), name
    from core.evals.methods import Comparison

    comparison = Comparison.open(out)
    rows = comparison.rows()
    assert [r["label"] for r in rows] == ["as is", "yarn x2", "linear x2"]
    for row in rows:
        assert set(row["ppl"]) == {256, 512} and set(row["niah"]) == {256, 512}
        assert all(v > 1 for v in row["ppl"].values())
    table = (out / "table.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 4  # header + 3 entries
    assert "| yarn x2 |" in table
    yarn = json.loads((out / "yarn-x2-niah" / "config.json").read_text())
    assert yarn["target"]["model"]["rope"] == {"method": "yarn", "factor": 2.0}
    # A rerun finds every cell done and computes none (each folder resumes on its own).
    reported = []
    comparison.run(lambda what, done, total: reported.append((done, total)))
    assert reported and all(done == total for done, total in reported)
