"""Peak memory of our CPU training step against its physical floor: today's engine vs. the tiled
MLP (`mlp_tile`) and the tiled layer (`layer_tile`), on the embedded model (SmolLM2-135M-Instruct,
fp32, LoRA r=32 on q,k,v,o plus trained embeddings, gradient checkpointing, one sample whose last
32 tokens are labelled).

The floor is what a step cannot do without: the weights; the trained parameters with their
gradients and two Adam moments; and one saved hidden state per layer per token (the
checkpoints). The process's peak also holds the libraries (torch, transformers and peft,
resident before any weight is read); each row says how much, and the ratio without them, and
(under tcmalloc) how much of the peak is free memory the allocator held. The
baseline, measured in the same run, is our step as it is today (no tiling).
Each (setup, length) runs in its own process (tcmalloc preloaded, as `longctx train` does) so
its peak RSS is its own. A first step on a short sample allocates Adam's state and warms up;
the second, at the full length, is timed (one long step per setup, not two: a 32K step takes
many minutes on 2 cores).

    python bench/bench_memory_floor.py                       # 8K, 16K, 32K (long on 2 cores)
    python bench/bench_memory_floor.py --lengths 2048 --tile 512
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GB = 2**30
SETUPS = ("today", "mlp_tile", "layer_tile")


def floor_bytes(length: int) -> tuple[float, dict[str, float]]:
    """The step's floor for the embedded model at `length` tokens, and its parts."""
    from core.models import loader, names
    from core.train.config import TrainConfig
    from core.train.memory import _dims, _lora_params

    config = loader.load_config(loader.ModelSpec(name=names.EMBEDDED)).config
    d = _dims(config)
    total = sum(
        [
            d["vocab"] * d["hidden"] * (1 if d["tied"] else 2),
            d["layers"] * (d["hidden"] * (d["q"] + 2 * d["kv"]) + d["q"] * d["hidden"]),
            d["layers"] * 3 * d["hidden"] * d["inter"],
            d["layers"] * 2 * d["hidden"] + d["hidden"],  # norms
        ]
    )
    trained = _lora_params(d, list(TrainConfig().lora_targets), 32) + d["vocab"] * d["hidden"]
    parts = {
        "weights": total * 4.0,
        "trained + grads + Adam": trained * (4 + 4 + 8.0),
        "checkpoints": d["layers"] * length * d["hidden"] * 4.0,
    }
    return sum(parts.values()), parts


def _estimate(length: int, tiles: dict[str, int]) -> float:
    """What the Train tab's fit estimate says of this step (core/train/memory.py)."""
    from core.train import memory
    from core.train.config import DataSource, TrainConfig

    config = TrainConfig(
        max_length=length,
        quantization="none",
        precision="fp32",
        data=[DataSource(procedural="keys", n=1, length=64)],
        **tiles,
    )
    return memory.estimate(config, labelled_tokens=32, device=("CPU RAM", 64 * GB)).total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="8192,16384,32768")
    parser.add_argument("--tile", type=int, default=2048, help="tokens per tile (both setups)")
    parser.add_argument("--warm", type=int, default=512, help="tokens of the first, untimed step")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"any of {SETUPS}")
    parser.add_argument(
        "--worker", nargs=3, metavar=("SETUP", "LENGTH", "TILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        from bench_train_memory import worker

        setup, length, tile = args.worker[0], int(args.worker[1]), int(args.worker[2])
        tiles = {setup: tile} if setup != "today" else {}
        print(json.dumps(worker("ours", length, warm_length=args.warm, **tiles)))
        return
    from bench_train_memory import run_worker

    from core.train import allocator

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LD_PRELOAD", None)
    env = allocator.child_env(env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), str(ROOT)])
    setups = args.setups.split(",")
    from importlib.metadata import version

    # Printed so that rows from other environments can be told apart: a library's change of
    # behaviour can move a row (transformers 5.25's hub kernels did, BENCHMARKS.md).
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", "transformers", "peft"))
    print(
        f"allocator: {env.get('LD_PRELOAD') or 'glibc malloc'}; tiles of {args.tile} tokens;"
        f" {versions}"
    )
    for length in [int(x) for x in args.lengths.split(",")]:
        floor, parts = floor_bytes(length)
        shown = ", ".join(f"{k} {v / GB:.2f}" for k, v in parts.items())
        print(f"{length:>6} tokens | floor {floor / GB:.2f} GB ({shown})", flush=True)
        row = {}
        for setup in setups:
            est = _estimate(length, {setup: args.tile} if setup != "today" else {})
            row[setup] = got = run_worker(
                [
                    __file__,
                    "--warm",
                    str(args.warm),
                    "--worker",
                    setup,
                    str(length),
                    str(args.tile),
                ],
                env,
                f"{setup} at {length}",
            )
            base = row[setups[0]]
            print(
                f"{length:>6} tokens | {setup:>10}: {got['peak_rss_gb']:.2f} GB"
                f" = {got['peak_rss_gb'] * GB / floor:.2f}x floor, {got['s_per_step']:.1f} s/step"
                f" | vs {setups[0]}: memory {got['peak_rss_gb'] / base['peak_rss_gb']:.3f}x,"
                f" time {got['s_per_step'] / base['s_per_step']:.2f}x"
                f" | loss {got['loss']:.5f} ({got['loss'] - base['loss']:+.1e})"
                f" | fit estimate {est / GB:.2f} GB ({est / GB / got['peak_rss_gb'] - 1:+.0%})"
                f" | libraries {got['libraries_gb']:.2f} GB, without them"
                f" {(got['peak_rss_gb'] - got['libraries_gb']) * GB / floor:.2f}x floor"
                + (
                    f" | of it, free memory tcmalloc held: {got['allocator_held_gb']:.2f} GB"
                    if got.get("allocator_held_gb") is not None
                    else ""
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
