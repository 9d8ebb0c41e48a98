"""Answering RULER samples on the embedded model: our local backend vs. one `model.generate` per
sample.

RULER's samples of a task and length share their haystack up to their first needle (the needle
tasks and variable tracking), and every prompt shares the chat frame's head. Ours:
`core.evals.backends.LocalBackend`, which keeps one KV cache and reuses the longest common
prefix with the previous prompt (plus prompt-lookup drafts while decoding greedily). Baseline:
an independent greedy `model.generate` per sample (bench/bench_niah.py's). Both answer the very
same token ids; the answers must be identical.

    python bench/bench_ruler_answers.py                 # 3 tasks x 6 samples at 2,000 tokens
    python bench/bench_ruler_answers.py --length 4000 --samples 10

Prints both times, the ratio, the prompt tokens reused, and exits 1 if an answer differs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="niah_single_2,niah_multikey_1,vt")
    p.add_argument("--length", type=int, default=2000)
    p.add_argument("--samples", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    args = p.parse_args()

    import torch
    from bench_niah import baseline, ours

    from core.evals.ruler import RulerConfig
    from core.models.generation import eos_ids
    from core.models.loader import ModelSpec, default_cache

    torch.set_num_threads(args.threads)
    loaded = default_cache.get(ModelSpec())
    config = RulerConfig(
        tasks=args.tasks,
        lengths=[args.length],
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
    )
    prompts = list(config.prompts(loaded.tokenizer))
    tokens = sum(len(p.ids) for p in prompts)
    base, base_clock = baseline(loaded, prompts, args.max_new_tokens, sorted(eos_ids(loaded)))
    mine, my_clock, stats = ours(loaded, prompts, args.max_new_tokens)
    same = sum(a == b for a, b in zip(base, mine, strict=True))
    print(
        f"{len(prompts)} prompts ({config.tasks}, {args.length:,} tokens), {tokens:,} prompt "
        f"tokens, {args.max_new_tokens} new tokens at most"
    )
    print(
        f"baseline (generate per sample): {base_clock.wall:.1f} s wall, {base_clock.cpu:.1f} s CPU"
    )
    print(
        f"ours (prefix KV reuse + lookup): {my_clock.wall:.1f} s wall, {my_clock.cpu:.1f} s CPU; "
        f"computed {stats['computed_tokens']:,} of {stats['prompt_tokens']:,} prompt tokens"
    )
    print(
        f"ratio: {base_clock.wall / my_clock.wall:.2f}x wall, {base_clock.cpu / my_clock.cpu:.2f}x "
        f"CPU; identical answers {same}/{len(prompts)}"
    )
    return 0 if same == len(prompts) else 1


if __name__ == "__main__":
    sys.exit(main())
