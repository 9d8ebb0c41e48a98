"""Peak memory and time of measuring one window's token losses: ours vs. the plain loss call.

Both run the embedded model (SmolLM2-135M-Instruct, 49K vocabulary) in float32 under
`torch.inference_mode()` on one window of N tokens of the built-in corpus. Baseline:
`model(input_ids, labels=input_ids)`, which builds the full N x vocabulary logit table (and
gives only the mean loss). Ours: `core.models.nll.token_nlls`, which projects the
decoder's hidden states to the vocabulary 1,024 positions at a time and returns every token's
loss. Each (method, length) runs in its own process so its peak RSS is its own; the check that
both agree on the mean loss is printed with the figures.

    python bench/bench_perplexity.py                  # 2K, 4K, 8K
    python bench/bench_perplexity.py --lengths 4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(method: str, length: int) -> dict:
    import torch

    from core.evals.perplexity import PerplexityConfig
    from core.models.loader import ModelSpec, load_model
    from core.models.nll import token_nlls

    loaded = load_model(ModelSpec("embedded", dtype="float32"))
    [prompt] = PerplexityConfig(lengths=[length], windows=1).prompts(loaded.tokenizer)
    ids = prompt.ids
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if method == "plain":
        with torch.inference_mode():
            x = torch.tensor([ids])
            loss = loaded.model(input_ids=x, labels=x).loss.item()
    else:
        nlls = token_nlls(loaded.model, ids)
        loss = sum(nlls) / len(nlls)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"loss": loss, "seconds": seconds, "peak": peak, "before": base_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2048,4096,8192")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    print(
        f"{'length':>7} {'plain peak':>11} {'ours peak':>10} {'memory':>8} "
        f"{'plain s':>8} {'ours s':>7} {'speed':>6}  mean loss plain / ours"
    )
    for length in [int(x) for x in args.lengths.split(",")]:
        got = {}
        for method in ("plain", "ours"):
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", method, str(length)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            got[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        plain, ours = got["plain"], got["ours"]
        print(
            f"{length:>7,} {plain['peak'] / 1e9:>9.2f}GB {ours['peak'] / 1e9:>8.2f}GB "
            f"{ours['peak'] / plain['peak']:>7.2f}x {plain['seconds']:>8.2f} {ours['seconds']:>7.2f} "
            f"{plain['seconds'] / ours['seconds']:>5.2f}x  {plain['loss']:.5f} / {ours['loss']:.5f}",
            flush=True,
        )
    print(
        "memory: ours / plain peak RSS of the whole process (model weights included); "
        "speed: plain seconds / ours"
    )


if __name__ == "__main__":
    main()
