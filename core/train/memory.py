"""Will it fit? An estimate of a run's peak memory from its config, before anything loads.

The estimate adds up, from the model's config alone (no weights are read): the base weights at
their precision, the LoRA weights with their gradients and Adam state, the fully trained
embeddings with theirs, the activations kept at each checkpoint boundary, the largest working
set of one layer while it is recomputed and back-propagated, and the logits of the labelled
positions. It is compared with the chosen device's memory to give a verdict with the fix.

Knows nothing about training itself; `bench/bench_train_memory.py` checks it against reality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.models import loader
from core.train.config import TrainConfig

GB = 1024**3
_ADAM = 8  # two fp32 moments per trained parameter


@dataclass
class FitEstimate:
    parts: dict[str, float] = field(default_factory=dict)
    """Bytes per component, in the order they are shown."""
    capacity: float = 0.0
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)
    gpus: int = 1
    """Devices the run spreads over; `parts` and `capacity` are per device."""

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def verdict(self) -> str:
        """`fits`, `tight` (over 85% of the device) or `too big`."""
        if self.capacity <= 0:
            return "unknown"
        ratio = self.total / self.capacity
        return "fits" if ratio < 0.85 else ("tight" if ratio <= 1.0 else "too big")

    def summary(self) -> str:
        where = f"on each of {self.gpus} x {self.device}" if self.gpus > 1 else f"on {self.device}"
        text = (
            f"{self.verdict}: about {self.total / GB:.1f} GB of {self.capacity / GB:.0f} GB {where}"
        )
        return text + ("" if not self.notes else " — " + "; ".join(self.notes))


def _dims(config: Any) -> dict[str, int]:
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    return {
        "hidden": hidden,
        "layers": int(config.num_hidden_layers),
        "inter": int(getattr(config, "intermediate_size", 4 * hidden)),
        "vocab": int(config.vocab_size),
        "heads": heads,
        "kv": int(getattr(config, "num_key_value_heads", heads) or heads) * head_dim,
        "q": heads * head_dim,
        "tied": bool(getattr(config, "tie_word_embeddings", False)),
    }


def _lora_params(d: dict[str, int], targets: list[str], r: int) -> int:
    shapes = {
        "q_proj": (d["hidden"], d["q"]),
        "k_proj": (d["hidden"], d["kv"]),
        "v_proj": (d["hidden"], d["kv"]),
        "o_proj": (d["q"], d["hidden"]),
        "gate_proj": (d["hidden"], d["inter"]),
        "up_proj": (d["hidden"], d["inter"]),
        "down_proj": (d["inter"], d["hidden"]),
    }
    per_layer = sum(r * (i + o) for name, (i, o) in shapes.items() if name in targets)
    return per_layer * d["layers"]


def device_capacity(num_gpus: int = 1) -> tuple[str, float]:
    """(device name, bytes) of the memory training would use."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.name, float(props.total_memory)
    import psutil

    return "CPU RAM", float(psutil.virtual_memory().total)


def estimate(
    config: TrainConfig,
    model_config: Any | None = None,
    labelled_tokens: int | None = None,
    device: tuple[str, float] | None = None,
    advise: bool = True,
) -> FitEstimate:
    """Estimate peak memory of one training step of `config` at its max_length.

    Args:
        config: the run's settings.
        model_config: the model's config (read from `config.model` when omitted).
        labelled_tokens: answer tokens per sample (default: an eighth of max_length, at most
            4096 — QA answers are short next to the context).
        device: (name, bytes) to compare with; defaults to this machine's GPU or RAM.
        advise: when it does not fit, work out the cheapest change that makes it fit.
    """
    if model_config is None:
        model_config = loader.load_config(loader.ModelSpec(name=config.model)).config
    d = _dims(model_config)
    name, capacity = device or device_capacity(config.num_gpus)
    on_gpu = name != "CPU RAM"
    quantized = config.quantization == "4bit" or (
        config.quantization == "auto" and on_gpu and d["hidden"] ** 2 * d["layers"] * 12 > 3e9
    )
    act = 2 if (on_gpu and config.precision != "fp32") else 4
    # peft's prepare_model_for_kbit_training upcasts the unquantized parameters (embeddings,
    # norms, lm_head) to fp32, so a 4-bit model carries an fp32 residual stream: the saved
    # layer inputs are fp32 too (measured: bench/bench_train_gpu.py, BENCHMARKS.md).
    residual = 4 if (quantized and not (config.bf16_residual and act == 2)) else act
    # Per GPU: FSDP2 shards what is stored (weights, trained parameters, their gradients and
    # Adam state) over the GPUs; sequence parallelism splits each sequence over its degree.
    shards = config.num_gpus if (on_gpu and config.sharding == "fsdp2") else 1
    split = config.sequence_parallel if on_gpu else 1
    seq = -(-config.max_length * config.per_device_batch_size // split)
    labelled = labelled_tokens or min(4096, max(1, config.max_length // 8))

    embed = d["vocab"] * d["hidden"]
    block = d["layers"] * (
        d["hidden"] * (d["q"] + 2 * d["kv"]) + d["q"] * d["hidden"] + 3 * d["hidden"] * d["inter"]
    )
    head = 0 if d["tied"] else embed
    weight_bytes = block * (0.5 + 0.03 if quantized else act) + (embed + head) * residual
    lora = _lora_params(d, list(config.lora_targets), config.lora_r)
    parts = {
        "base weights" + (" (4-bit)" if quantized else ""): weight_bytes / shards,
        "LoRA + grads + Adam": lora * (4 + 4 + _ADAM) / shards,
    }
    if config.train_embeddings:
        parts["trained embeddings + Adam"] = embed * (act + act + _ADAM) / shards
    if shards > 1:  # the layer being computed and the next one (prefetched) are gathered whole
        parts["gathered layers (FSDP2)"] = 2 * block / d["layers"] * (0.53 if quantized else act)
    boundaries = d["layers"] if config.gradient_checkpointing else d["layers"] * 12
    stored = seq * d["hidden"] * residual * boundaries
    parts["checkpointed activations" + (" (on CPU)" if config.offload_checkpoints else "")] = (
        0 if (config.offload_checkpoints and on_gpu) else stored
    )
    # One layer recomputed and differentiated: projections, MLP intermediates, their grads;
    # a tiled MLP keeps one tile's intermediates, a tiled layer one tile's of everything plus
    # the whole sequence's keys and values, their gradients (and a tile's share of them), and
    # the gradient into the layer; the one out of it takes the place of the layer's saved input
    # (core/train/tiling.py).
    layer_tokens = min(seq, config.layer_tile) if config.layer_tile else seq
    mlp_tokens = min(layer_tokens, config.mlp_tile) if config.mlp_tile else layer_tokens
    per_layer = (
        layer_tokens * (4 * d["hidden"] * residual + (d["q"] + 2 * d["kv"]) * act)
        + mlp_tokens * 4 * d["inter"] * act
    ) * 2
    if config.layer_tile:
        # keys and values, a tile's share of their gradients, their fp32 gradient sums
        per_layer += seq * (d["kv"] * (4 * act + 2 * 4) + d["hidden"] * residual)
    parts["largest layer working set"] = per_layer
    per_gpu_labelled = -(-labelled // split)
    parts["labelled logits (fp32)"] = (
        per_gpu_labelled * config.per_device_batch_size * d["vocab"] * 12
    )
    # CUDA context and kernels; on a CPU the libraries themselves (torch, transformers and peft
    # imported: about 0.43 GB resident, bench/bench_memory_floor.py).
    parts["runtime overhead"] = (1.0 if on_gpu else 0.45) * GB
    notes = [assumptions(config, on_gpu, quantized, act, labelled)]
    gpus = config.num_gpus if on_gpu else 1
    est = FitEstimate(parts=parts, capacity=capacity, device=name, notes=notes, gpus=gpus)
    if est.verdict == "too big" and advise:
        est.notes.append(advice(config, model_config, labelled_tokens, (name, capacity)))
    return est


def assumptions(config: TrainConfig, on_gpu: bool, quantized: bool, act: int, labelled: int) -> str:
    """The settings the estimate counted with, in a few words."""
    words = ["4-bit NF4 base" if quantized else f"{'bf16' if act == 2 else 'fp32'} base"]
    words.append(f"batch {config.per_device_batch_size} x {config.max_length:,} tokens")
    if on_gpu and config.num_gpus > 1:
        how = "sharded (fsdp2)" if config.sharding == "fsdp2" else "each with the whole model (ddp)"
        if config.sequence_parallel > 1:
            how += f", each sequence split over {config.sequence_parallel}"
        words.append(f"{config.num_gpus} GPUs {how}")
    if config.gradient_checkpointing:
        where = " on CPU" if config.offload_checkpoints and on_gpu else ""
        words.append("checkpointed layers" + where)
    if quantized:
        words.append(f"{'bf16' if config.bf16_residual and act == 2 else 'fp32'} residual stream")
    if config.layer_tile:
        words.append(f"layer tiles of {config.layer_tile:,}")
    if config.mlp_tile:
        words.append(f"MLP tiles of {config.mlp_tile:,}")
    words.append(f"{labelled:,} labelled tokens")
    return "assumes " + ", ".join(words)


# Changes a user can make to a config that is too big, cheapest first: what they cost in speed
# or quality grows down the list (MLP tiling recomputes a little; offloading moves the
# checkpoints over PCIe; layer tiling makes attention about 1.3x slower; 4-bit changes the
# weights; a smaller batch slows training down; a shorter
# max_length gives up the goal itself, so it comes last and on its own).
_CHANGES: tuple[tuple[str, str, Any], ...] = (
    ("mlp_tile", "set mlp_tile: 4096", 4096),
    ("offload_checkpoints", "turn on offload_checkpoints", True),
    ("bf16_residual", "turn on bf16_residual", True),
    ("layer_tile", "set layer_tile: 4096", 4096),
    ("quantization", "set quantization: 4bit", "4bit"),
    ("per_device_batch_size", "use per_device_batch_size 1", 1),
)


def advice(
    config: TrainConfig,
    model_config: Any,
    labelled_tokens: int | None,
    device: tuple[str, float],
) -> str:
    """The cheapest change (or changes, added in order of cost) that makes `config` fit on
    `device`, with the estimate it would give; else the longest max_length that fits."""
    import dataclasses

    def fits(candidate: TrainConfig) -> FitEstimate | None:
        est = estimate(candidate, model_config, labelled_tokens, device, advise=False)
        return est if est.verdict != "too big" else None

    on_gpu = device[0] != "CPU RAM"
    open_changes = [
        (name, words, value)
        for name, words, value in _CHANGES
        if getattr(config, name) != value
        and (on_gpu or name not in ("offload_checkpoints", "quantization", "bf16_residual"))
        # A bf16 stream is a 4-bit model's option (others carry their compute dtype already).
        and not (
            name == "bf16_residual"
            and (config.quantization == "none" or config.precision == "fp32")
        )
        and not (name == "quantization" and config.quantization == "auto" and on_gpu)
    ]
    # One change alone, cheapest first; then the cheapest ones together.
    for name, words, value in open_changes:
        est = fits(dataclasses.replace(config, **{name: value}))
        if est is not None:
            return f"to fit: {words} (about {est.total / GB:.1f} GB)"
    changed, said = config, []
    for name, words, value in open_changes:
        changed = dataclasses.replace(changed, **{name: value})
        said.append(words)
        est = fits(changed)
        if est is not None and len(said) > 1:
            return f"to fit: {', '.join(said)} (about {est.total / GB:.1f} GB)"
    # More GPUs, each sequence split over all of them (sharded, as context parallelism needs;
    # a tiled layer needs whole sequences, so the split goes without it).
    more = ""
    if on_gpu:
        kept = [words for name, words, _ in open_changes if name != "layer_tile" and words in said]
        for n in (2, 4, 8):
            if n <= config.num_gpus:
                continue
            spread = dataclasses.replace(
                changed, layer_tile=0, num_gpus=n, sharding="fsdp2", sequence_parallel=n
            )
            est = fits(spread)
            if est is not None:
                how = (", ".join(kept) + ", and ") if kept else ""
                more = (
                    f"to fit: {how}use {n} GPUs with sharding: fsdp2, sequence_parallel: {n} "
                    f"(about {est.total / GB:.1f} GB each; not measured yet)"
                )
                break
    # Else (or on this device): a shorter sequence, the longest max_length (a multiple of 1,024)
    # that fits with every change above made.
    low, high = 0, config.max_length // 1024
    while low < high:
        mid = (low + high + 1) // 2
        if fits(dataclasses.replace(changed, max_length=mid * 1024)):
            low = mid
        else:
            high = mid - 1
    if low == 0:
        return more or "to fit: a device with more memory (even 1,024 tokens do not fit here)"
    how = (", ".join(said) + ", and ") if said else ""
    shorter = f"lower max_length to {low * 1024:,} (now {config.max_length:,})"
    if more:
        return f"{more}; or on {config.num_gpus} GPU(s): {how}{shorter}"
    return f"to fit: {how}{shorter}"
