"""What one decoder layer holds while it is differentiated: the tiled layer (`layer_tile`) vs. the
layer as transformers runs it under gradient checkpointing, on one layer of the embedded model
(SmolLM2-135M-Instruct, fp32, LoRA r=32 on q,k,v,o as our engine sets it up).

A whole training step at 32K tokens takes half an hour on 2 cores; one layer's forward and
backward take a minute, and the layer's backward is where a step peaks (bench_memory_floor.py).
The figure is the live heap's peak above what existed before the layer ran (its input and the
output's gradient), sampled from glibc's allocator statistics, in units of one hidden state of
the sequence (tokens x 576 fp32 values); the gradients of the input are compared as a check.
Each setup runs in its own process on glibc malloc (mallinfo2 sees only glibc's heap).

    python bench/bench_tiled_layer.py                         # 8K and 32K, tiles of 2048
    python bench/bench_tiled_layer.py --lengths 4096 --tile 512
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HIDDEN = 576


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def _live_heap():
    """A function returning the bytes glibc's allocator has handed out and not got back."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2

    def live() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return live


def worker(setup: str, length: int, tile: int) -> dict:
    import torch
    from bench_train_memory import _ours_model

    live = _live_heap()
    model = _ours_model(layer_tile=tile if setup == "layer_tile" else 0)
    model.train()
    decoder = model.get_base_model().model
    layer = decoder.layers[3]
    torch.manual_seed(0)
    hidden = torch.randn(1, length, HIDDEN, requires_grad=True)
    grad = torch.randn(1, length, HIDDEN)
    cos, sin = decoder.rotary_emb(hidden, torch.arange(length)[None])

    peak, done = [0], threading.Event()

    def sample() -> None:  # the GIL is released inside torch's kernels, so this sees them
        while not done.is_set():
            peak[0] = max(peak[0], live())
            time.sleep(0.002)

    base = peak[0] = live()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    out = layer(hidden, position_embeddings=(cos, sin))
    out = out[0] if isinstance(out, tuple) else out
    forward_peak = peak[0]
    out.backward(grad)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    unit = length * HIDDEN * 4
    return {
        "forward": (forward_peak - base) / unit,
        "backward": (peak[0] - base) / unit,
        "mb": (peak[0] - base) / 2**20,
        "seconds": seconds,
        "grad": hidden.grad.double().norm().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="8192,32768")
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        setup, length, tile = args.worker[0], int(args.worker[1]), int(args.worker[2])
        print(json.dumps(worker(setup, length, tile)))
        return
    from bench_train_memory import run_worker

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LD_PRELOAD", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), str(ROOT)])
    for length in [int(x) for x in args.lengths.split(",")]:
        rows = {}
        for setup in ("whole", "layer_tile"):
            rows[setup] = got = run_worker(
                [__file__, "--worker", setup, str(length), str(args.tile)],
                env,
                f"{setup} at {length}",
            )
            whole = rows["whole"]
            print(
                f"{length:>6} tokens | {setup:>10}"
                f"{f' ({args.tile})' if setup == 'layer_tile' else ''}:"
                f" forward peak +{got['forward']:.2f}, backward peak +{got['backward']:.2f}"
                f" hidden states ({got['mb']:.0f} MB), {got['seconds']:.1f} s"
                f" | vs whole: memory {got['backward'] / whole['backward']:.2f}x,"
                f" time {got['seconds'] / whole['seconds']:.2f}x,"
                f" input gradient {got['grad'] / whole['grad'] - 1:+.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
