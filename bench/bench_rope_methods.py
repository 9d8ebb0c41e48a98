"""Context-extension methods on the embedded model, no training: how far past its 8K window each
one holds, against the model as it is (the baseline, measured in the same run).

For every method (the advisor's setting for 4x the window: a new base NTK-aware, linear,
dynamic, YaRN, llama3) and the model as it is, at 4K (inside the window), 16K and 32K: the
perplexity of the last 2,048 positions of one window of the built-in corpus and, unless
--no-niah, a NIAH grid. Prints the comparison's table and each method's perplexity as a ratio
of the baseline's at the same length. The folder resumes: a killed run continues where it was.

    python bench/bench_rope_methods.py                      # 4K, 16K, 32K, with NIAH
    python bench/bench_rope_methods.py --lengths 4096,16384 --no-niah
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def advised(factor: int = 4) -> list[str]:
    """The model as it is, and the advisor's setting of every method for `factor` x its window."""
    from core.models import loader
    from core.rope import advisor, methods

    shape = advisor.rope_shape(loader.load_config(loader.ModelSpec(name="embedded")).config)
    suggested = methods.suggest(shape, factor * shape.window)
    return ["none", *(m.setting.spelled() for m in suggested if m.setting is not None)]


def main() -> None:
    from core.evals import methods

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="4096,16384,32768")
    parser.add_argument("--depths", default="10,50,90")
    parser.add_argument("--methods", nargs="+", help="default: the advisor's for 4x the window")
    parser.add_argument("--no-niah", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "workspace" / "evals" / "bench-rope-methods"))
    args = parser.parse_args()
    config = methods.MethodsConfig(
        model="embedded",
        methods=args.methods or advised(),
        lengths=args.lengths,
        depths=args.depths,
        niah=not args.no_niah,
    )
    comparison = methods.Comparison(config, args.out)
    start = time.perf_counter()
    comparison.run(lambda what, done, total: print(f"  {what}: {done}/{total}", flush=True))
    print(f"\n{time.perf_counter() - start:.0f} s (resumed cells not counted)\n")
    print(comparison.table_markdown())
    rows = {r["label"]: r for r in comparison.rows()}
    baseline = rows.get("as is")
    if baseline:
        print("\ntail perplexity / the model as it is, at the same length:")
        for label, row in rows.items():
            ratios = [
                f"{n}: {row['ppl'][n] / baseline['ppl'][n]:.2f}x"
                for n in config.lengths
                if n in row["ppl"] and n in baseline["ppl"]
            ]
            print(f"  {label:<24} " + "  ".join(ratios))
    for path in methods.export_figures(comparison):
        print(f"written: {path}")


if __name__ == "__main__":
    main()
