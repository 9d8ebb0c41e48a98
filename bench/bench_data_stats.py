"""Token statistics of a large JSONL file: our path vs. the obvious loop, in one run.

Baseline (named): for every line, `json.loads` then
`len(tokenizer.apply_chat_template(conv, tokenize=True)["input_ids"])`.
Ours: `core.data.stats.measure` (exact pre-token counting, worker processes, on-disk cache),
first with a cold cache, then again on the unchanged file (served from the cache).

The file is built procedurally under a temporary folder: long chat samples in the paper's format
(a context of pseudo-words drawn from a fixed, seeded, Zipf-weighted vocabulary, with
punctuation, numbers and some non-ASCII text, then 1-4 question/answer turns). No text is copied
from anywhere.

    python bench/bench_data_stats.py            # ~200 MB, a few minutes on 2 cores
    python bench/bench_data_stats.py --mb 20    # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

_CONSONANTS = "b c d f g h j k l m n p r s t v w z br ch cl dr gr pl sh st th tr".split()
_VOWELS = "a e i o u ai ea ou io".split()
_EXTRA = ["café", "naïve", "—", "“", "”", "’s", "über", "1984", "3.14", "(", ")", ";", ":"]


def make_vocabulary(rng: random.Random, size: int = 30000) -> tuple[list[str], list[float]]:
    words = set()
    while len(words) < size:
        n = rng.choice((1, 2, 2, 3, 3, 4))
        words.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(n)))
    vocab = sorted(words)
    rng.shuffle(vocab)
    vocab += _EXTRA
    weights = [1.0 / (rank + 10) for rank in range(len(vocab))]  # Zipf-like
    return vocab, list(__import__("itertools").accumulate(weights))


def paragraph(rng: random.Random, vocab: list[str], cum: list[float], n_words: int) -> str:
    words = rng.choices(vocab, cum_weights=cum, k=n_words)
    out, since = [], 0
    for w in words:
        since += 1
        if since == 1:
            w = w.capitalize()
        out.append(w)
        if since > 6 and rng.random() < 0.12:
            out[-1] += rng.choice(".,.?!")
            if out[-1][-1] != ",":
                since = 0
                if rng.random() < 0.08:
                    out[-1] += "\n\n"
    return " ".join(out).replace("\n\n ", "\n\n")


def make_sample(rng: random.Random, vocab: list[str], cum: list[float], i: int) -> dict:
    context = paragraph(rng, vocab, cum, rng.randint(20000, 25000))
    conv = []
    for k in range(rng.randint(1, 4)):
        question = paragraph(rng, vocab, cum, rng.randint(8, 25)).rstrip(".,!") + "?"
        answer = paragraph(rng, vocab, cum, rng.randint(20, 250))
        conv.append({"role": "user", "content": f"{context}\n\n{question}" if k == 0 else question})
        conv.append({"role": "assistant", "content": answer})
    task = rng.choice(["one_detail_qa", "multi_detail_qa", "book_summary"])
    return {"id": f"s{i:05d}", "task": task, "conversations": conv}


def build_file(path: Path, megabytes: float, seed: int) -> int:
    rng = random.Random(seed)
    vocab, cum = make_vocabulary(rng)
    target, size, n = int(megabytes * 1e6), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            line = json.dumps(make_sample(rng, vocab, cum, n), ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
            n += 1
    return n


def baseline(path: Path, tokenizer) -> list[int]:
    counts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            conv = json.loads(line)["conversations"]
            counts.append(len(tokenizer.apply_chat_template(conv, tokenize=True)["input_ids"]))
    return counts


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the machine may be shared)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200.0, help="size of the generated file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="default: all cores (<= 8)")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--single", action="store_true", help="also time our path on 1 process")
    args = parser.parse_args()

    from core import workspace

    # A private workspace (cold cache, nothing left behind) that still shares converted models.
    os.environ.setdefault("LONGCTX_MODELS", str(workspace.subdir("models")))
    tmp = Path(tempfile.mkdtemp(prefix="bench-data-"))
    os.environ["LONGCTX_HOME"] = str(tmp / "home")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    from core.data import stats
    from core.models.tokenizers import load_tokenizer

    path = tmp / "long_chat.jsonl"
    t = time.perf_counter()
    n = build_file(path, args.mb, args.seed)
    mb = path.stat().st_size / 1e6
    print(f"file: {n} samples, {mb:.1f} MB, built in {time.perf_counter() - t:.1f} s ({path})")
    tokenizer = load_tokenizer(args.model)

    def timed(fn):
        t, c = time.perf_counter(), cpu_seconds()
        out = fn()
        return out, time.perf_counter() - t, cpu_seconds() - c

    def line(label: str, wall: float, cpu: float, extra: str = "") -> None:
        print(f"{label:<44}{wall:8.2f} s  {tokens / wall:>12,.0f} tok/s  cpu {cpu:7.1f} s{extra}")

    base, t_base, c_base = timed(lambda: baseline(path, tokenizer))
    tokens = sum(base)
    line("baseline (apply_chat_template per sample)", t_base, c_base)

    workers = args.workers or stats.default_workers()
    first, t_ours, c_ours = timed(lambda: stats.measure(str(path), tokenizer, workers=workers))
    ours = [s.total_tokens for s in first.samples]
    line(f"ours, cold cache, {workers} worker(s)", t_ours, c_ours)

    again, t_cached, c_cached = timed(lambda: stats.measure(str(path), tokenizer, workers=workers))
    line("ours, second run (from the cache)", t_cached, c_cached, f"  cached={again.cached}")

    if args.single:
        one, t_one, c_one = timed(
            lambda: stats.measure(str(path), tokenizer, workers=1, use_cache=False)
        )
        same = [s.total_tokens for s in one.samples] == base
        line(
            "ours, 1 process, no cache", t_one, c_one, f"  {t_base / t_one:.1f}x, identical={same}"
        )

    identical = ours == base and [s.total_tokens for s in again.samples] == base
    print(f"tokens: {tokens:,} in {n} samples ({tokens / n:,.0f} per sample)")
    print(
        f"speed-up vs baseline: {t_base / t_ours:.1f}x wall, {c_base / c_ours:.1f}x cpu   "
        f"identical counts: {identical}"
    )
    print(f"cached second run: {t_cached:.2f} s (goal < 2 s)")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
