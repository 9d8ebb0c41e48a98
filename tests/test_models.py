"""Model resolution and loading: embedded conversion, overrides, adapters, clear errors."""

from __future__ import annotations

import json
import time

import pytest

from core.errors import ConfigError, LongCtxError
from core.models import loader, names
from core.models.loader import ModelSpec, load_model


def test_unknown_names_give_one_line_errors():
    with pytest.raises(LongCtxError, match="unknown model 'no-such-model'"):
        names.resolve("no-such-model")
    # Offline (conftest sets HF_HUB_OFFLINE): a Hub id not in the cache fails at once.
    start = time.monotonic()
    with pytest.raises(LongCtxError, match="not in the local Hugging Face cache"):
        load_model(ModelSpec(name="nobody/not-a-model"))
    assert time.monotonic() - start < 5


def test_folder_without_model_is_refused(tmp_path):
    with pytest.raises(LongCtxError, match="neither a model"):
        names.resolve(str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LongCtxError, match="is a file"):
        names.resolve(str(tmp_path / "notes.txt"))


def test_spec_validation_reports_every_problem():
    with pytest.raises(ConfigError) as info:
        ModelSpec(name="", rope_theta=-1, quantization="8bit")
    assert len(info.value.problems) == 3


@pytest.mark.integration
def test_embedded_is_converted_once_and_reloads_fast(embedded):
    path = names.embedded_path()
    assert (path / "model.safetensors").exists()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["max_position_embeddings"] == 8192
    start = time.monotonic()
    again = load_model(ModelSpec())
    assert time.monotonic() - start < 5
    assert embedded.window == 8192 and embedded.rope_theta == 1e5
    assert again.describe()["parameters"] == embedded.describe()["parameters"]


@pytest.mark.integration
def test_rope_override_is_applied_and_recorded(tiny_llama_dir, tmp_path):
    loaded = load_model(
        ModelSpec(name=str(tiny_llama_dir), rope_theta=2e8, max_position_embeddings=81920)
    )
    assert loaded.overrides["rope_theta"] == {"from": 10000.0, "to": 2e8}
    assert loaded.window == 81920
    # The rotary frequencies follow the new base: the slowest one is 1 / base^((d-2)/d).
    inv_freq = loaded.model.model.rotary_emb.inv_freq
    dim = 64 // 4
    assert float(inv_freq[-1]) == pytest.approx(1 / 2e8 ** ((dim - 2) / dim), rel=1e-4)
    loaded.model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["rope_parameters"]["rope_theta"] == 2e8
    assert saved["max_position_embeddings"] == 81920


@pytest.mark.integration
def test_adapter_folder_loads_on_its_base_with_its_rope(tiny_llama_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():  # make the adapter do something, so applying it is visible
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.05)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    (adapter_dir / names.ADAPTER_META_FILE).write_text(json.dumps({"rope_theta": 5e5}))

    loaded = load_model(ModelSpec(name=str(adapter_dir)))
    assert loaded.adapter == str(adapter_dir.resolve())
    assert loaded.source == str(tiny_llama_dir.resolve())
    assert loaded.rope_theta == 5e5
    plain = load_model(ModelSpec(name=str(tiny_llama_dir), rope_theta=5e5))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert not torch.allclose(loaded.model(ids).logits, plain.model(ids).logits)


def test_4bit_on_cpu_explains_itself(tiny_llama_dir):
    if loader.bnb_4bit_available(loader.pick_device()):
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(LongCtxError, match="4-bit loading needs bitsandbytes on a CUDA GPU"):
        load_model(ModelSpec(name=str(tiny_llama_dir), quantization="4bit"))
