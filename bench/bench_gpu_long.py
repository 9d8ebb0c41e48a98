"""How long a sequence one GPU trains: the paper's recipe at 80K, 160K and 320K tokens with the
memory settings of issue 19, against today's settings, and the longest length that fits.

A random model of Llama-3-8B-Instruct's shape (bench_train_gpu.py makes it; no download) is
loaded once through our engine with the `paper` preset (4-bit NF4, LoRA r=32 on q,k,v,o,
embed_tokens trained, checkpoints offloaded to CPU, bf16, RoPE base 2e8). Baseline: that preset
as it is today, one 80K step. Then the same loaded model with the residual stream in bf16
(`bf16_residual`), the whole layer tiled (`layer_tile`) and the MLP tiled inside it
(`mlp_tile`), as the engine applies them, at each length; a length whose step the time left cannot cover (projected from the steps before it,
quadratic in length) is skipped and said so. Last, the longest length that fits: a line through
the measured peaks gives the length at 95% of the GPU's memory (a multiple of 8,192), which is
then run once if time is left. Each step is one sample with a 512-token answer; where two steps
fit the time, the second is timed.

Goals (issue 19): an 80K step within 24 GB at no less than 85% of today's tokens/s; the longest
length that fits 80 GB at least 350K.

    python bench/bench_gpu_long.py [--lengths 81920,163840,327680] [--budget-s 420] [--out DIR]
    python bench/bench_gpu_long.py --smoke        # the same path on a CPU with a tiny model
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
GB = 2**30


def step(loaded, config, length: int, steps: int, out: Path) -> dict:
    """Train `steps` optimizer steps on one `length`-token sample; the last one's figures."""
    import torch
    from bench_train_gpu import answer_rows, make_timer

    from core.train.callbacks import TokenCounter
    from core.train.engine import build_trainer

    cuda = torch.cuda.is_available()
    timer = make_timer()
    rows = answer_rows(length, loaded.model.config.vocab_size, steps)
    config.max_length, config.max_steps = length, steps
    trainer = build_trainer(config, loaded, rows, out / f"run-{length}", [timer], TokenCounter())
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        trainer.train()
    except torch.OutOfMemoryError:
        return {"length": length, "oom": True}
    finally:
        del trainer
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    reserved = torch.cuda.max_memory_reserved() if cuda else 0
    return {
        "length": length,
        "steps": steps,
        "s_per_step": round(timer.times[-1], 2),
        "tokens_per_s": round(length / timer.times[-1]),
        "peak_gpu_gb": round(peak / GB, 2),
        "peak_reserved_gb": round(reserved / GB, 2),
    }


def projected_s(done: list[dict], length: int) -> float:
    """Step time at `length` from the steps measured so far: a*L + b*L^2 through the last two
    (attention grows with the square of the length), or the square law from one."""
    timed = [r for r in done if "s_per_step" in r]
    if not timed:
        return 0.0
    if len(timed) == 1:
        r = timed[0]
        return r["s_per_step"] * (length / r["length"]) ** 2
    (l1, t1), (l2, t2) = [(r["length"], r["s_per_step"]) for r in timed[-2:]]
    b = (t2 / l2 - t1 / l1) / (l2 - l1) if l2 != l1 else 0.0
    a = t1 / l1 - b * l1
    return max(a * length + b * length**2, t2 * length / l2)


def longest_fit(done: list[dict], capacity: float) -> int | None:
    """The length whose peak reaches 95% of `capacity`, on the line through the measured peaks."""
    fitted = [r for r in done if r.get("peak_gpu_gb")]
    if len(fitted) < 2:
        return None
    (l1, p1), (l2, p2) = [(r["length"], r["peak_gpu_gb"] * GB) for r in fitted[-2:]]
    slope = (p2 - p1) / (l2 - l1)
    if slope <= 0:
        return None
    return int((0.95 * capacity - p1) / slope + l1) // 8192 * 8192


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="81920,163840,327680")
    parser.add_argument("--layer-tile", type=int, default=8192)
    parser.add_argument("--mlp-tile", type=int, default=4096)
    parser.add_argument("--budget-s", type=float, default=420, help="time for the steps, in s")
    parser.add_argument("--out", default=None, help="where to write results.json")
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU: check the script")
    args = parser.parse_args()
    import torch
    from bench_train_gpu import ANSWER, LLAMA3_8B, SMOKE, make_random_model

    from core.train import memory
    from core.train.config import DataSource, load_preset
    from core.train.engine import load_for_training
    from core.train.tiling import keep_residual_in, tile_layers, tile_mlps

    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("needs a CUDA GPU (or --smoke for a CPU check of the script)")
    lengths = [1024, 2048] if args.smoke else [int(x) for x in args.lengths.split(",")]
    layer_tile, mlp_tile = (256, 128) if args.smoke else (args.layer_tile, args.mlp_tile)
    capacity = torch.cuda.get_device_properties(0).total_memory if not args.smoke else 80 * GB
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llama3-8b-random"
        made = make_random_model(folder, SMOKE if args.smoke else LLAMA3_8B)
        config = load_preset("paper")
        config.model, config.data = str(folder), [DataSource(path="unused.jsonl")]
        config.global_batch_size, config.save_steps = 1, 10**6
        config.max_length = max(lengths)
        if args.smoke:
            config.quantization, config.precision = "none", "fp32"
        loaded = load_for_training(config)
        print(f"model made in {made:.0f} s, loaded in {time.perf_counter() - started - made:.0f} s")
        budget_end = time.perf_counter() + args.budget_s
        base = step(loaded, config, lengths[0], 2, Path(tmp))
        base["setup"] = "today (paper preset)"
        print(json.dumps(base), flush=True)
        # The new settings, applied to the loaded model the way the engine applies them.
        if loaded.quantized:
            keep_residual_in(loaded.model, torch.bfloat16)
            config.bf16_residual = True
        tile_layers(loaded.model, layer_tile)
        tile_mlps(loaded.model, mlp_tile)
        config.layer_tile, config.mlp_tile = layer_tile, mlp_tile
        done: list[dict] = []
        for length in [*lengths, None]:
            if length is None:  # the longest that fits, from the peaks measured
                length = longest_fit(done, capacity)
                if length is None or any(r["length"] == length for r in done):
                    break
            left = budget_end - time.perf_counter()
            need = projected_s(done, length)
            steps = 2 if 2 * need < left else 1
            if need > left:
                done.append(
                    {"length": length, "skipped": f"needs ~{need:.0f} s, {left:.0f} s left"}
                )
            else:
                done.append(step(loaded, config, length, steps, Path(tmp)))
            est = memory.estimate(config, loaded.model.config, ANSWER, ("GPU", capacity))
            residual = ", bf16 residual" if config.bf16_residual else ""
            done[-1].update(setup=f"layer_tile {layer_tile}, mlp_tile {mlp_tile}{residual}")
            done[-1]["fit_estimate_gb"] = round(est.total / GB, 2)
            print(json.dumps(done[-1]), flush=True)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (smoke)"
    print(f"GPU: {gpu}, {capacity / GB:.0f} GB")
    print(
        f"today at {base['length']:,}: {base.get('tokens_per_s')} tokens/s, "
        f"peak {base.get('peak_gpu_gb')} GB"
    )
    for r in done:
        if "s_per_step" in r:
            ratio = r["tokens_per_s"] / base["tokens_per_s"] if "tokens_per_s" in base else 0
            print(
                f"new at {r['length']:,}: {r['tokens_per_s']} tokens/s ({ratio:.2f}x today's at "
                f"{base['length']:,}), peak {r['peak_gpu_gb']} GB (estimate {r['fit_estimate_gb']} GB)"
            )
        else:
            print(f"new at {r['length']:,}: {'out of memory' if r.get('oom') else r['skipped']}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "long.json").write_text(json.dumps([base, *done], indent=1))


if __name__ == "__main__":
    main()
