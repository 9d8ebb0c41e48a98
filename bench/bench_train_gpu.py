"""GPU benchmark of the paper's training step: Llama-3-8B shape, 4-bit NF4, 32K and 80K tokens.

A randomly initialised model with Llama-3-8B-Instruct's shape (no download) is saved once, then
loaded through LongCtx Studio's own training path (`core.train.engine`: 4-bit NF4 base with
double quantization, LoRA r=32/alpha=16 on q,k,v,o, embed_tokens fully trained, gradient
checkpointing, bf16, RoPE base 2e8) and trained for two optimizer steps on one sample per
length whose last 512 tokens are the answer. Prints, per length, the second step's time,
tokens/s and peak GPU memory, next to the fit estimate (`core.train.memory`) for the same config.
Goal (issue 5): 80K tokens in under 80 GB (the paper's A800) at more than 2K tokens/s.

`--engine both` measures the unsloth engine against the transformers engine (the baseline) on
the same saved model, each in its own process (unsloth patches transformers when it imports),
and prints the ratios.

    python bench/bench_train_gpu.py [--lengths 32768,81920] [--offload]
                                    [--engine transformers|unsloth|both] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ANSWER = 512
LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)


SMOKE = dict(
    LLAMA3_8B,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1000,
)


def make_random_model(folder: Path, shape: dict) -> float:
    """Save a random bf16 Llama-3-8B-shaped model and a stand-in tokenizer; returns seconds."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    start = time.perf_counter()
    torch.manual_seed(0)
    config = LlamaConfig(**shape)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    vocab = {"<unk>": 0, "<eos>": 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>"
    ).save_pretrained(folder)
    return time.perf_counter() - start


def make_timer():
    """A Trainer callback that records each optimizer step's wall time in `.times` (the GPU
    synchronised at both ends)."""
    import torch
    from transformers import TrainerCallback

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    class Timer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.t0 = 0.0

        def on_step_begin(self, args, state, control, **kw):
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()
            self.times.append(time.perf_counter() - self.t0)

    return Timer()


def answer_rows(length: int, vocab: int, n: int) -> list[dict]:
    """`n` random samples of `length` tokens whose last ANSWER tokens are labelled."""
    import torch

    g = torch.Generator().manual_seed(length)
    ids = torch.randint(2, vocab, (n, length), generator=g).tolist()
    return [
        {"input_ids": r, "labels": [-100] * (length - ANSWER) + r[-ANSWER:], "length": length}
        for r in ids
    ]


def run(
    folder: Path,
    lengths: list[int],
    out: Path,
    smoke: bool = False,
    offload: bool = False,
    engine: str = "transformers",
) -> list[dict]:
    import torch

    from core.train import memory
    from core.train.callbacks import TokenCounter
    from core.train.config import DataSource, load_preset
    from core.train.engine import build_trainer, load_for_training

    config = load_preset("paper")
    config.model = str(folder)
    config.data = [DataSource(path="unused.jsonl")]
    config.global_batch_size = 1  # one sample per optimizer step: a step is one long sequence
    config.max_steps = 2
    config.save_steps = 10**6
    config.max_length = max(lengths)
    config.offload_checkpoints = offload
    config.engine = engine
    if smoke:  # the same code path on a CPU, to check the script before spending GPU time
        config.quantization, config.precision = "none", "fp32"

    start = time.perf_counter()
    loaded = load_for_training(config)
    load_s = time.perf_counter() - start
    print(
        f"loaded 4-bit model in {load_s:.0f} s; GPU memory {_gpu(torch.cuda.memory_allocated) / 2**30:.1f} GB",
        flush=True,
    )

    results = []
    for length in lengths:
        rows = answer_rows(length, loaded.model.config.vocab_size, 2)
        config.max_length = length
        timer = make_timer()
        trainer = build_trainer(
            config, loaded, rows, out / f"run-{length}", [timer], TokenCounter()
        )
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        peak, reserved = _gpu(torch.cuda.max_memory_allocated), _gpu(torch.cuda.max_memory_reserved)
        est = memory.estimate(
            config, loaded.model.config, labelled_tokens=ANSWER, device=("GPU", 80 * 2**30)
        )
        step = timer.times[-1]
        result = {
            "engine": engine,
            "length": length,
            "s_per_step": round(step, 2),
            "tokens_per_s": round(length / step),
            "peak_gpu_gb": round(peak / 2**30, 1),
            "peak_reserved_gb": round(reserved / 2**30, 1),
            "fit_estimate_gb": round(est.total / 2**30, 1),
            "first_step_s": round(timer.times[0], 2),
            "loss": trainer.state.log_history[-1].get("train_loss"),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
        del trainer
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


def _gpu(fn) -> int:
    import torch

    return fn() if torch.cuda.is_available() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="32768,81920")
    parser.add_argument("--out", default=None, help="where to write results.json")
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU: check the script")
    parser.add_argument("--offload", action="store_true", help="offload_checkpoints: true")
    parser.add_argument(
        "--engine", choices=["transformers", "unsloth", "both"], default="transformers"
    )
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)  # `both`: the child's saved model
    parser.add_argument("--results", help=argparse.SUPPRESS)  # `both`: where the child writes
    args = parser.parse_args()
    if args.engine == "unsloth":
        import unsloth  # noqa: F401  (before transformers, which it patches)
    import torch

    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("needs a CUDA GPU (or --smoke for a CPU check of the script)")
    lengths = [256] if args.smoke else [int(x) for x in args.lengths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model_dir) if args.model_dir else Path(tmp) / "llama3-8b-random"
        if not args.model_dir:
            made = make_random_model(folder, SMOKE if args.smoke else LLAMA3_8B)
            print(f"random Llama-3-8B-shaped model saved in {made:.0f} s", flush=True)
        if args.engine == "both":
            results = []
            for engine in ("transformers", "unsloth"):
                results += _in_child(engine, folder, args, Path(tmp))
        else:
            results = run(
                folder,
                lengths,
                Path(tmp),
                smoke=args.smoke,
                offload=args.offload,
                engine=args.engine,
            )
    if args.results:  # a child of `--engine both`
        Path(args.results).write_text(json.dumps(results))
        return
    print(f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none (smoke)'}")
    for r in results:
        goal = " (goal: < 80 GB, > 2000 tokens/s)" if r["length"] >= 80000 else ""
        print(
            f"{r['engine']:>12} {r['length']:>6} tokens: {r['s_per_step']} s/step, "
            f"{r['tokens_per_s']} tokens/s, peak {r['peak_gpu_gb']} GB allocated "
            f"({r['peak_reserved_gb']} GB reserved), fit estimate {r['fit_estimate_gb']} GB{goal}"
        )
    base = {r["length"]: r for r in results if r["engine"] == "transformers"}
    for r in results:
        if r["engine"] == "unsloth" and r["length"] in base:
            b = base[r["length"]]
            print(
                f"unsloth / transformers at {r['length']}: "
                f"{r['tokens_per_s'] / b['tokens_per_s']:.2f}x tokens/s, "
                f"{r['peak_gpu_gb'] / b['peak_gpu_gb']:.2f}x peak GPU memory"
            )
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))


def _in_child(engine: str, folder: Path, args: argparse.Namespace, tmp: Path) -> list[dict]:
    """One engine measured in a fresh process on the already saved model."""
    out = tmp / f"{engine}.json"
    cmd = [
        sys.executable,
        __file__,
        "--engine",
        engine,
        "--model-dir",
        str(folder),
        "--lengths",
        args.lengths,
        "--results",
        str(out),
    ]
    cmd += ["--smoke"] * args.smoke + ["--offload"] * args.offload
    if subprocess.run(cmd).returncode != 0:
        print(f"{engine}: failed (see above)", flush=True)
        return []
    return json.loads(out.read_text())


if __name__ == "__main__":
    main()
