"""NIAH grid on the embedded model: our local backend vs. one `model.generate` per cell.

Baseline: for every cell, an independent greedy `model.generate` on the cell's prompt ids (what
an evaluation script without prefix reuse does). Ours: `core.evals.backends.LocalBackend`, which
keeps one KV cache across the grid (cells come deepest needle first, each reusing the longest
common prefix with the previous one) and verifies drafts looked up in the prompt while decoding
greedily. Both answer the very same token ids; the answers must be identical.

    python bench/bench_niah.py                      # lengths 500,1000,2000 x depths 0..100 by 25
    python bench/bench_niah.py --lengths 1000,4000 --depths 0,50,100 --json out.json

Prints both wall times (and CPU times: on a shared machine the wall time swings with other
jobs' load), the ratio, and (unless --no-ablation) each of our two tricks alone.
Exits 1 if an answer differs.

Recorded (default grid: 500,1000,2000 x 0,25,50,75,100 = 15 cells, 17378 prompt tokens):
- 2-core CPU shared with other jobs, float32, `--threads 1`: baseline 76.4 s wall / 69.6 s CPU,
  ours 35.5 s / 33.0 s: 2.15x wall, 2.11x CPU, 15/15 identical answers (prefix reuse alone
  1.30x CPU, lookup alone 1.44x CPU).
- H200, bf16 (an earlier revision drafting 10 tokens a step): 14.3 s vs 3.6 s, 3.92x, 15/15;
  on 1K..8K x 11 depths (44 cells): 43.0 s vs 17.1 s, 2.51x, 42/44 identical (two cells where
  the model fails to retrieve and bf16 rounding flips a near-tie); float32 there: 31.6 s vs
  11.6 s, 2.73x, 44/44.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Clock:
    """Wall time and this process's CPU time (user + system, all threads) of a block.

    On a machine shared with other jobs the wall time swings with their load; CPU time does
    not (with --threads 1 it equals the wall time an idle machine would show).
    """

    def __enter__(self) -> Clock:
        import torch

        self.gpu_mem = 0.0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        if torch.cuda.is_available():
            self.gpu_mem = torch.cuda.max_memory_allocated() / 2**30

    def gpu(self) -> str:
        return f"   peak GPU memory {self.gpu_mem:.2f} GiB" if self.gpu_mem else ""


def baseline(loaded, prompts, max_new_tokens: int, eos: list[int]) -> tuple[list[str], Clock]:
    import torch

    model, tok = loaded.model, loaded.tokenizer
    answers = []
    with Clock() as clock, torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt.ids], device=model.device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tok.pad_token_id,
            )
            answers.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers, clock


def ours(loaded, prompts, max_new_tokens: int, **options) -> tuple[list[str], Clock, dict]:
    from core.evals.backends import LocalBackend

    backend = LocalBackend(loaded, **options)
    with Clock() as clock:
        answers = [reply.text for _, reply in backend.answers(prompts, max_new_tokens)]
    return answers, clock, backend.stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="500,1000,2000")
    parser.add_argument("--depths", default="0,25,50,75,100")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--no-ablation", action="store_true", help="skip the one-trick runs")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bf16 on GPU), ...")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default torch's choice; 1 is steadier on a shared machine)",
    )
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from core.evals.niah import NiahConfig, parse_numbers
    from core.models.generation import eos_ids
    from core.models.loader import ModelSpec, load_model

    loaded = load_model(ModelSpec(device=args.device, dtype=args.dtype))
    task = NiahConfig(lengths=parse_numbers(args.lengths), depths=parse_numbers(args.depths))
    prompts = list(task.prompts(loaded.tokenizer))
    eos = sorted(eos_ids(loaded))
    print(
        f"grid: {len(task.lengths)} lengths x {len(task.depths)} depths = {len(prompts)} cells, "
        f"{sum(len(p.ids) for p in prompts)} prompt tokens; {loaded.device} {loaded.dtype}, "
        f"torch threads {torch.get_num_threads()}"
    )
    with torch.inference_mode():  # warm-up: the first forward pays one-off allocation costs
        loaded.model(input_ids=torch.tensor([prompts[-1].ids[:256]], device=loaded.model.device))

    base_answers, base = baseline(loaded, prompts, args.max_new_tokens, eos)
    our_answers, our, stats = ours(loaded, prompts, args.max_new_tokens)
    same = sum(a == b for a, b in zip(base_answers, our_answers, strict=True))
    print(
        f"baseline (model.generate per cell): {base.wall:8.1f} s wall {base.cpu:8.1f} s CPU"
        + base.gpu()
    )
    print(
        f"ours (prefix KV reuse + lookup):    {our.wall:8.1f} s wall {our.cpu:8.1f} s CPU   "
        f"computed {stats['computed_tokens']}/{stats['prompt_tokens']} prompt tokens, "
        f"{stats['forward_passes']} forward passes" + our.gpu()
    )
    print(
        f"ratio: {base.wall / our.wall:.2f}x wall, {base.cpu / our.cpu:.2f}x CPU   "
        f"identical answers: {same}/{len(prompts)}"
    )
    record = {
        "device": loaded.device,
        "dtype": loaded.dtype,
        "threads": torch.get_num_threads(),
        "lengths": task.lengths,
        "depths": task.depths,
        "cells": len(prompts),
        "baseline_s": round(base.wall, 2),
        "ours_s": round(our.wall, 2),
        "ratio": round(base.wall / our.wall, 3),
        "baseline_cpu_s": round(base.cpu, 2),
        "ours_cpu_s": round(our.cpu, 2),
        "cpu_ratio": round(base.cpu / our.cpu, 3),
        "identical": same,
        "stats": stats,
    }
    if not args.no_ablation:
        for name, options in (
            ("prefix reuse only", {"lookup_tokens": 0}),
            ("lookup only", {"reuse_prefix": False}),
        ):
            answers, clock, _ = ours(loaded, prompts, args.max_new_tokens, **options)
            ok = sum(a == b for a, b in zip(base_answers, answers, strict=True))
            print(
                f"  {name:<18} {clock.wall:8.1f} s wall {clock.cpu:8.1f} s CPU   ratio "
                f"{base.wall / clock.wall:.2f}x wall, {base.cpu / clock.cpu:.2f}x CPU   "
                f"identical {ok}/{len(prompts)}"
            )
            key = name.replace(" ", "_")
            record[key + "_s"], record[key + "_cpu_s"] = round(clock.wall, 2), round(clock.cpu, 2)
    for key, a, b in zip((p.key for p in prompts), base_answers, our_answers, strict=True):
        if a != b:
            print(f"DIFFERENT {key}:\n  baseline {a!r}\n  ours     {b!r}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0 if same == len(prompts) else 1


if __name__ == "__main__":
    sys.exit(main())
