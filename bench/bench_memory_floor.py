"""Peak memory of our CPU training step against its physical floor, today's engine vs. the
tiled MLP (`mlp_tile`), on the embedded model (SmolLM2-135M-Instruct, fp32, LoRA r=32 on q,k,v,o
plus trained embeddings, gradient checkpointing, one sample whose last 32 tokens are labelled).

The floor is what a step cannot do without: the weights; the trained parameters with their
gradients and two Adam moments; and one saved hidden state per layer per token (the
checkpoints). The baseline, measured in the same run, is our step as it is today (mlp_tile 0).
Each (setup, length) runs in its own process (tcmalloc preloaded, as `longctx train` does) so
its peak RSS is its own; the second of two steps is timed.

    python bench/bench_memory_floor.py                       # 8K, 16K, 32K (long on 2 cores)
    python bench/bench_memory_floor.py --lengths 2048 --tile 512
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GB = 2**30


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="8192,16384,32768")
    parser.add_argument("--tile", type=int, default=2048, help="mlp_tile of the tiled setup")
    parser.add_argument("--worker", nargs=2, metavar=("LENGTH", "TILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        from bench_train_memory import worker

        length, tile = (int(x) for x in args.worker)
        print(json.dumps(worker("ours", length, mlp_tile=tile)))
        return
    from core.train import allocator

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LD_PRELOAD", None)
    env = allocator.child_env(env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), str(ROOT)])
    print(
        f"allocator: {env.get('LD_PRELOAD') or 'glibc malloc'}; tiled setup: mlp_tile {args.tile}"
    )
    for length in [int(x) for x in args.lengths.split(",")]:
        floor, parts = floor_bytes(length)
        row = {}
        for name, tile in (("today", 0), ("tiled", args.tile)):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(length), str(tile)],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
            )
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{name} at {length} failed")
            row[name] = json.loads(out.stdout.strip().splitlines()[-1])
        today, tiled = row["today"], row["tiled"]
        shown = ", ".join(f"{k} {v / GB:.2f}" for k, v in parts.items())
        print(
            f"{length:>6} tokens | floor {floor / GB:.2f} GB ({shown})"
            f" | today {today['peak_rss_gb']:.2f} GB = {today['peak_rss_gb'] * GB / floor:.2f}x floor,"
            f" {today['s_per_step']:.1f} s/step"
            f" | tiled {tiled['peak_rss_gb']:.2f} GB = {tiled['peak_rss_gb'] * GB / floor:.2f}x floor,"
            f" {tiled['s_per_step']:.1f} s/step"
            f" | tiled/today memory {tiled['peak_rss_gb'] / today['peak_rss_gb']:.3f}x,"
            f" time {tiled['s_per_step'] / today['s_per_step']:.2f}x"
            f" | loss today {today['loss']:.5f} tiled {tiled['loss']:.5f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
