"""Sequence tiling (the MLP alone, or the whole decoder layer): same loss and gradients as the
whole sequence under gradient checkpointing, parameter names unchanged, applied by the engine
from `mlp_tile` / `layer_tile`, and counted by the memory estimate."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM

from core.train import memory
from core.train.config import TrainConfig
from core.train.tiling import tile_layers, tile_mlps


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(config)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def _whole_and_tiled() -> tuple[LlamaForCausalLM, LlamaForCausalLM, torch.Tensor]:
    """The test model, a copy of it with layer tiles of 32 tokens, and 100 token ids."""
    whole = _model()
    tiled = copy.deepcopy(whole)
    tile_layers(tiled, 32)
    return whole, tiled, torch.randint(0, 300, (1, 100))


def _loss_and_grads(
    model: LlamaForCausalLM, ids: torch.Tensor, autocast: torch.dtype | None = None
):
    """As the Trainer does: the forward under `autocast` when given, the backward outside it."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _engine_config(folder, **tiles) -> TrainConfig:
    """A config training the model in `folder` through the transformers engine."""
    return TrainConfig(
        model=str(folder),
        quantization="none",
        engine="transformers",
        data=[{"procedural": "keys", "n": 2, "length": 200}],
        **tiles,
    ).validate()


def _last_tokens_labelled(ids: torch.Tensor, count: int = 8):
    """The positions whose logits the loss keeps when the last `count` tokens are labelled,
    and their targets."""
    from core.train.engine import labelled_positions

    labels = torch.full_like(ids, -100)
    labels[0, -count:] = ids[0, -count:]
    return labelled_positions(labels)


def test_a_tiled_mlp_gives_the_same_loss_and_gradients_with_the_same_names():
    whole = _model()
    tiled = copy.deepcopy(whole)
    names = [n for n, _ in tiled.named_parameters()]
    assert tile_mlps(tiled, 24) == 3  # every layer; 100 tokens make tiles of 24, 24, 24, 24, 4
    assert [n for n, _ in tiled.named_parameters()] == names  # adapters and checkpoints load
    ids = torch.randint(0, 300, (1, 100))
    loss, grads = _loss_and_grads(whole, ids)
    tiled_loss, tiled_grads = _loss_and_grads(tiled, ids)
    assert abs(loss - tiled_loss) < 1e-6
    for name, grad in grads.items():
        torch.testing.assert_close(tiled_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert tile_mlps(tiled, 24) == 3  # wrapping twice does not tile the tiles
    with torch.no_grad():  # inference goes through the tiles too
        torch.testing.assert_close(tiled(ids).logits, whole(ids).logits, rtol=1e-5, atol=1e-6)


def test_a_tiled_layer_gives_the_same_loss_and_gradients_and_attends_tile_by_tile(monkeypatch):
    whole = _model()
    tiled = copy.deepcopy(whole)
    names = [n for n, _ in tiled.named_parameters()]
    assert tile_layers(tiled, 32) == 3
    assert tile_mlps(tiled, 8) == 3  # an MLP tile inside a layer tile composes
    assert [n for n, _ in tiled.named_parameters()] == names
    ids = torch.randint(0, 300, (1, 100))
    loss, grads = _loss_and_grads(whole, ids)

    # The tiles' queries attend to the keys before them (bottom-right causal masks), so the
    # tiled path is the one that ran: 100 tokens in tiles of 32 end at 64, 96 and 100.
    masks, stored = [], []
    attend = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        masks.append(None if attn_mask is None else tuple(attn_mask.shape))
        if attn_mask is not None:
            stored.append(attn_mask.untyped_storage().nbytes() // attn_mask.element_size())
        return attend(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    tiled_loss, tiled_grads = _loss_and_grads(tiled, ids)
    assert masks[:4] == [None, (32, 64), (32, 96), (4, 100)]
    # Each mask is a window over one vector of keys + queries values, not queries x keys.
    assert stored[:3] == [64 + 32, 96 + 32, 100 + 4]
    assert abs(loss - tiled_loss) < 1e-5
    for name, grad in grads.items():
        torch.testing.assert_close(tiled_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(tiled(ids).logits, whole(ids).logits, rtol=1e-4, atol=1e-5)
        # Generation with a KV cache goes through the layer's own forward.
        assert tiled.generate(ids, max_new_tokens=3, do_sample=False).tolist() == (
            whole.generate(ids, max_new_tokens=3, do_sample=False).tolist()
        )


def _kept_between_passes(model: LlamaForCausalLM, ids: torch.Tensor, **kwargs) -> int:
    """Bytes the forward leaves saved for the backward (outside any checkpoint's recompute)."""
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, **(kwargs or {"labels": ids}))
    return sum(storages.values())


def test_a_tiled_layer_keeps_no_more_than_a_whole_one_between_the_passes():
    # Under gradient checkpointing a layer keeps its input only; a tiled layer must too (its
    # tiles' keys, values and inputs exist only while the backward recomputes the layer).
    whole, tiled, ids = _whole_and_tiled()
    # The rotary tables (cos and sin, one pair shared by every layer and alive through the step
    # either way) are saved by the tiled layer where the checkpoint holds them unseen.
    rotary = 2 * ids.shape[1] * (64 // 4) * 4
    assert _kept_between_passes(tiled, ids) == _kept_between_passes(whole, ids) + rotary


def test_a_tiled_layer_writes_its_input_gradient_over_the_previous_tiled_layers_output():
    # The output of a tiled layer is saved by the next one only, so the next one's backward can
    # write its input's gradient there instead of in a new whole-sequence buffer. The first
    # layer's input (the embeddings' output) is not a tiled layer's: it gets a buffer of its
    # own and is left as it was.
    whole, tiled, ids = _whole_and_tiled()
    embedded = []
    tiled.model.embed_tokens.register_forward_hook(lambda _m, _i, out: embedded.append(out))
    loss = tiled(input_ids=ids, labels=ids).loss
    before = embedded[0].detach().clone()

    class NewBuffers(TorchDispatchMode):
        """Counts the buffers of one hidden state per token made for the layers' gradients."""

        made = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.empty_like.default and out.shape == (1, 100, 64):
                self.made += 1
            return out

    with NewBuffers() as counted:
        loss.backward()
    assert counted.made == 1  # not 3
    torch.testing.assert_close(embedded[0], before, rtol=0, atol=0)
    _, grads = _loss_and_grads(whole, ids)
    for name, param in tiled.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], rtol=1e-4, atol=1e-5, msg=name)
    # The spent outputs make a second backward through the graph fail, not give wrong sums.
    loss = tiled(input_ids=ids, labels=ids).loss
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_layers_of_another_layout_are_left_whole():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    model = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=300,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
        )
    )
    assert tile_layers(model, 32) == 0  # query/key norms: not Llama's layout

    from peft import LoraConfig, get_peft_model

    dropped = get_peft_model(_model(), LoraConfig(target_modules=["q_proj"], lora_dropout=0.1))
    assert tile_layers(dropped, 32) == 0  # the backward could not redraw the same masks


def test_the_engine_tiles_the_mlps_of_the_model_it_trains(tiny_llama_dir):
    from core.train.engine import load_for_training

    config = _engine_config(tiny_llama_dir, mlp_tile=128)
    loaded = load_for_training(config)
    tiles = [m.mlp.forward.tile for m in loaded.model.modules() if hasattr(m, "self_attn")]
    assert tiles == [128, 128]
    config.mlp_tile, config.layer_tile = 0, 256
    loaded = load_for_training(config)
    tiles = [m.forward.tile for m in loaded.model.modules() if hasattr(m, "self_attn")]
    assert tiles == [256, 256]


def test_the_engine_changes_survive_the_trainers_switches_between_train_and_eval(tiny_llama_dir):
    # transformers (5.25 on) loads models with hub kernels on and kernelizes again at each
    # change of mode, which reset instance forwards: the moved final norm then ran twice and
    # training saw other logits than the model's. The Trainer switches modes at every step.
    from transformers import AutoModelForCausalLM

    from core.train.engine import load_for_training

    model = load_for_training(_engine_config(tiny_llama_dir, layer_tile=32)).model
    ids = torch.randint(0, 300, (1, 100))
    positions, _ = _last_tokens_labelled(ids)
    with torch.no_grad():  # LoRA starts as a no-op: the trained model gives the model's logits
        expected = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)(ids).logits[:, positions]
    for mode in (True, False, True):
        model.train(mode)
        with torch.no_grad():
            logits = model(input_ids=ids, logits_to_keep=positions).logits
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5, msg=f"train={mode}")
    assert all(m.forward.tile == 32 for m in model.modules() if hasattr(m, "self_attn"))


def test_the_estimate_counts_one_tile_of_mlp_intermediates(llama3_8b_shape):
    shape = llama3_8b_shape
    device = ("GPU", 80 * memory.GB)
    plain = TrainConfig(max_length=81920, quantization="4bit", precision="bf16")
    tiled = TrainConfig(max_length=81920, quantization="4bit", precision="bf16", mlp_tile=4096)
    a = memory.estimate(plain, shape, device=device).parts["largest layer working set"]
    b = memory.estimate(tiled, shape, device=device).parts["largest layer working set"]
    saved = (81920 - 4096) * 4 * 14336 * 2 * 2  # intermediates x bf16 x (values + grads)
    assert a - b == saved
    big = TrainConfig(max_length=400_000, quantization="4bit", precision="bf16")
    assert "set mlp_tile: 4096" in memory.estimate(big, shape, device=device).summary()


def test_a_bf16_residual_stream_halves_the_saved_layer_inputs_with_norms_in_fp32():
    # A 4-bit model after peft's k-bit preparation: fp32 embeddings and norms, projections
    # computing in bf16 under autocast (here on the CPU), so the stream between layers is fp32.
    from core.train.tiling import keep_residual_in

    fp32 = _model()
    bf16 = copy.deepcopy(fp32)
    keep_residual_in(bf16, torch.bfloat16)
    ids = torch.randint(0, 300, (1, 100))
    inputs = {}

    def record(name):
        def hook(_module, args, kwargs):
            inputs.setdefault(name, (args or [kwargs["hidden_states"]])[0].dtype)

        return hook

    for name, model in (("fp32", fp32), ("bf16", bf16)):
        model.model.layers[1].register_forward_pre_hook(record(name), with_kwargs=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kept = {n: _kept_between_passes(m, ids) for n, m in (("fp32", fp32), ("bf16", bf16))}
        losses = {
            n: m(input_ids=ids, labels=ids).loss.item() for n, m in (("fp32", fp32), ("bf16", bf16))
        }
    assert inputs == {"fp32": torch.float32, "bf16": torch.bfloat16}
    # Three layers' saved inputs (100 x 64 each) shrink from 4 to 2 bytes per value.
    assert kept["fp32"] - kept["bf16"] >= 3 * 100 * 64 * 2
    assert abs(losses["bf16"] - losses["fp32"]) < 0.02 * abs(losses["fp32"])
    assert bf16.model.norm.weight.dtype == torch.float32  # norms keep computing in fp32


def test_the_final_norm_runs_at_the_kept_positions_only():
    # The loss needs logits at the labelled positions; the final norm moved in front of the
    # head gives the same loss and gradients and no longer keeps the last layer's output.
    from core.train.engine import norm_at_kept_positions

    whole = _model()
    moved = copy.deepcopy(whole)
    assert norm_at_kept_positions(moved)
    assert not norm_at_kept_positions(moved)  # once
    ids = torch.randint(0, 300, (1, 100))
    positions, targets = _last_tokens_labelled(ids)

    def step(model):
        model.zero_grad()
        logits = model(input_ids=ids, logits_to_keep=positions).logits
        loss = torch.nn.functional.cross_entropy(logits[0], targets[0])
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    (loss, grads), (moved_loss, moved_grads) = step(whole), step(moved)
    assert abs(loss - moved_loss) < 1e-6
    for name, grad in grads.items():
        torch.testing.assert_close(moved_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():  # whole-sequence logits (evaluation, generation) are unchanged
        torch.testing.assert_close(moved(ids).logits, whole(ids).logits)

    hidden_state = ids.shape[1] * 64 * 4
    kept = [_kept_between_passes(m, ids, logits_to_keep=positions) for m in (moved, whole)]
    assert kept[0] <= kept[1] - hidden_state


def test_a_tiled_layer_recomputes_under_the_autocast_of_its_forward():
    # The backward runs outside the forward's autocast; recomputed in fp32, its gradients would
    # be those of another function than the bf16 one whose loss was reported.
    whole, tiled, ids = _whole_and_tiled()
    computed = []
    tiled.model.layers[0].self_attn.q_proj.register_forward_hook(
        lambda _m, _i, out: computed.append(out.dtype)
    )
    loss, grads = _loss_and_grads(whole, ids, autocast=torch.bfloat16)
    tiled_loss, tiled_grads = _loss_and_grads(tiled, ids, autocast=torch.bfloat16)
    assert computed == [torch.bfloat16] * 8  # 4 tiles in the forward, 4 again in the backward
    assert abs(loss - tiled_loss) < 1e-2
    for name, grad in grads.items():
        torch.testing.assert_close(tiled_grads[name], grad, rtol=2e-2, atol=2e-3, msg=name)
