"""Peak memory and time of one training step: LongCtx Studio's step vs. a plain transformers+peft step.

Both train the embedded model (SmolLM2-135M-Instruct) with LoRA r=32/alpha=16 on q,k,v,o plus
fully trained embed_tokens, gradient checkpointing on, on one sample of N tokens whose last 32
tokens are the labelled answer. Baseline: `model(input_ids, labels=labels)` (full logits over
the sequence) in a plain Python process. Ours: `core.train.engine` (logits only at labelled
positions) in a process set up the way `longctx train` sets up CPU training (tcmalloc or
jemalloc preloaded when installed, see core/train/allocator.py). A third column runs the plain
step on that same allocator, so the two effects can be told apart. Each (engine, length) runs
in its own process so peak RSS is its own; two steps are run and the second is timed.

    python bench/bench_train_memory.py                 # 2K, 4K, 8K
    python bench/bench_train_memory.py --lengths 2048
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ANSWER = 32


def _batch(length: int, vocab: int):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, vocab - 1, (1, length), generator=g)
    labels = torch.full_like(ids, -100)
    labels[0, -ANSWER:] = ids[0, -ANSWER:]
    return ids, labels


def _plain_model():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.models import names

    model = AutoModelForCausalLM.from_pretrained(names.resolve("embedded"))
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(
            r=32,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            modules_to_save=["embed_tokens"],
            task_type="CAUSAL_LM",
        ),
    )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _ours_model(mlp_tile: int = 0, layer_tile: int = 0):
    from core.train.config import DataSource, TrainConfig
    from core.train.engine import load_for_training

    config = TrainConfig(
        model="embedded",
        max_length=8192,
        quantization="none",
        precision="fp32",
        mlp_tile=mlp_tile,
        layer_tile=layer_tile,
        data=[DataSource(procedural="keys", n=1, length=64)],
    )
    return load_for_training(config).model


def _resident_bytes() -> int:
    """This process's resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _HeldAtPeak:
    """Under tcmalloc: how much of this process's resident peak is free memory the allocator
    holds (freed blocks too small or too scattered for the next large request), sampled every
    10 ms: the peak less the highest the resident memory would have been had the allocator
    held no free memory at each sample."""

    def __init__(self) -> None:
        import ctypes

        self._get = getattr(ctypes.CDLL(None), "MallocExtension_GetNumericProperty", None)
        self._size = ctypes.c_size_t
        self._byref = ctypes.byref
        self.peak, self.tight = 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _property(self, name: str) -> int:
        value = self._size(0)
        self._get(name.encode(), self._byref(value))
        return value.value

    def _sample(self) -> None:
        while not self._done.is_set():
            resident = _resident_bytes()
            free = (
                self._property("generic.heap_size")
                - self._property("tcmalloc.pageheap_unmapped_bytes")
                - self._property("generic.current_allocated_bytes")
            )
            self.peak, self.tight = max(self.peak, resident), max(self.tight, resident - free)
            time.sleep(0.01)

    @property
    def held(self) -> int | None:
        return self.peak - self.tight if self._get is not None else None

    def __enter__(self) -> _HeldAtPeak:
        if self._get is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()


def run_worker(args: list[str], env: dict[str, str], what: str) -> dict:
    """This benchmark's `args` run in a process of their own; the JSON line it prints last."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"{what} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(
    engine: str, length: int, mlp_tile: int = 0, layer_tile: int = 0, warm_length: int = 0
) -> dict:
    """Two steps, the second timed; with `warm_length` the first step (which allocates Adam's
    state and warms the kernels) runs on a sample of that many tokens, so a long length costs
    one long step instead of two and its peak still includes the optimizer state."""
    import peft  # noqa: F401  (imports transformers' modelling code, and bitsandbytes)
    import torch

    if engine == "ours":
        import core.train.engine  # noqa: F401
    libraries = _resident_bytes()
    torch.manual_seed(0)
    if engine == "ours":
        from core.train import allocator

        allocator.tune_glibc()  # as `longctx train` does when no allocator could be preloaded
    model = _plain_model() if engine == "plain" else _ours_model(mlp_tile, layer_tile)
    model.train()
    batches = [_batch(n, model.config.vocab_size) for n in (warm_length or length, length)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    if engine == "ours":
        from core.train.engine import labelled_positions

    times = []
    with _HeldAtPeak() as held:
        for ids, labels in batches:
            mask = torch.ones_like(ids)
            start = time.perf_counter()
            if engine == "plain":
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            else:
                positions, targets = labelled_positions(labels)
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=positions).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    targets.reshape(-1),
                    ignore_index=-100,
                )
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
    return {
        "engine": engine,
        "length": length,
        "loss": float(loss),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "libraries_gb": libraries / 2**30,
        "allocator_held_gb": None if held.held is None else held.held / 2**30,
        "s_per_step": times[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2048,4096,8192")
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    from core.train import allocator

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LD_PRELOAD", None)
    lean = allocator.child_env(dict(env))
    print(f"allocator of `longctx train` on CPU: {lean.get('LD_PRELOAD') or 'glibc malloc'}")
    setups = {"plain": env, "plain+alloc": lean, "ours": lean}
    results = {}
    for length in [int(x) for x in args.lengths.split(",")]:
        for name, setup in setups.items():
            engine = name.split("+")[0]
            results[(name, length)] = run_worker(
                [__file__, "--worker", engine, str(length)], setup, f"{name} at {length}"
            )
        plain, same, ours = (results[(name, length)] for name in setups)
        print(
            f"{length:>6} tokens | plain: {plain['peak_rss_gb']:.2f} GB, {plain['s_per_step']:.2f} s/step"
            f" | plain+alloc: {same['peak_rss_gb']:.2f} GB, {same['s_per_step']:.2f} s/step"
            f" | ours: {ours['peak_rss_gb']:.2f} GB, {ours['s_per_step']:.2f} s/step"
            f" | memory ratio ours/plain {ours['peak_rss_gb'] / plain['peak_rss_gb']:.3f}x"
            f" (ours/plain+alloc {ours['peak_rss_gb'] / same['peak_rss_gb']:.3f}x)"
            f" | speed ratio plain/ours {plain['s_per_step'] / ours['s_per_step']:.2f}x"
            f" | loss plain {plain['loss']:.4f} ours {ours['loss']:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
