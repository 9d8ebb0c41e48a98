"""CPU training next to a local server: training tokens/s and server requests/minute, shared.

The CPU preset (assets/presets/cpu-keys.yaml, shortened to --steps steps) trains alone, then
again while `longctx serve` (the embedded model) answers a steady stream of ~2K-token prompts
from a client in this script, one request after another. Three setups, each in the same run:

- solo:      training alone; the server alone with its client (before training starts);
- budget:    both at once, each process on its thread budget (core/threads.py): training gets
             all cores but a reserve, the server the reserve;
- all-cores: both at once with LONGCTX_THREADS set to every core for both processes, which is
             what every torch process did before the budget (the baseline: they oversubscribe).

Prints training tokens/s (median over the logged steps after the first), the server's
requests/minute while training ran, and the ratios to solo. Runs in a fresh workspace.

    python bench/bench_sharing.py                 # ~5 minutes on 2 cores
    python bench/bench_sharing.py --steps 6 --cap-s 90
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORDS = "the tide moon river stone wind light page book night answer number city sea".split()


def _env(home: Path, threads: int | None) -> dict[str, str]:
    env = {**os.environ, "LONGCTX_HOME": str(home), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("LONGCTX_THREADS", None)
    if threads:
        env["LONGCTX_THREADS"] = str(threads)
    return env


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
    """`longctx serve` on a free port: (process, base_url, its ready line)."""
    cmd = [sys.executable, "-m", "core.cli", "serve", "--port", "0", "--queue-timeout", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "ready at" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split("ready at ")[1].strip(), line.strip()


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Client(threading.Thread):
    """Sends ~2K-token prompts one after another; records (finish time, prompt tokens)."""

    def __init__(self, base_url: str, words: int):
        super().__init__(daemon=True)
        self.base_url, self.words = base_url, words
        self.done: list[tuple[float, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        import openai

        client = openai.OpenAI(base_url=self.base_url, api_key="local", timeout=600)
        k = 0
        while not self.stop_event.is_set():
            k += 1
            text = " ".join(WORDS[(k * 7 + i) % len(WORDS)] for i in range(self.words))
            try:
                reply = client.chat.completions.create(
                    model="embedded",
                    messages=[{"role": "user", "content": f"{k}. {text}\n\nWhich first?"}],
                    max_tokens=8,
                    temperature=0,
                )
            except openai.APIConnectionError:
                if self.stop_event.is_set():  # the server was stopped under the last request
                    return
                raise
            self.done.append((time.time(), reply.usage.prompt_tokens))

    def per_minute(self, start: float, end: float) -> float:
        n = sum(1 for t, _ in self.done if start <= t <= end)
        return 60.0 * n / max(end - start, 1e-9)


def train(config: Path, env: dict[str, str], cap_s: float, label: str) -> dict:
    """Run `longctx train` (stopped cleanly after cap_s); its speed from metrics.jsonl."""
    from core.train import runs

    home = Path(env["LONGCTX_HOME"])
    before = set((home / "runs").glob("*")) if (home / "runs").exists() else set()
    out = home / f"train-{label}.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "train", str(config)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    # The cap counts from the first logged step: loading the model is not training.
    run_dir, deadline = None, None
    while proc.poll() is None:
        if run_dir is None:
            run_dir = next(iter(set((home / "runs").glob("*")) - before), None)
        elif deadline is None and runs.read_metrics(run_dir):
            deadline = time.monotonic() + cap_s
        elif deadline is not None and time.monotonic() > deadline:
            proc.send_signal(signal.SIGTERM)  # a clean stop: the steps logged so far count
            proc.wait(600)
        time.sleep(0.5)
    made = set((home / "runs").glob("*")) - before
    if len(made) != 1:
        tail = out.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(
            f"[{label}] the training made no run (exit {proc.returncode}):\n" + "\n".join(tail)
        )
    (run_dir,) = made
    rows = [r for r in runs.read_metrics(run_dir) if "loss" in r]
    status = json.loads((run_dir / "status.json").read_text())
    speeds = [r["tokens_per_s"] for r in rows[1:]] or [r["tokens_per_s"] for r in rows]
    return {
        "tokens_per_s": statistics.median(speeds) if speeds else 0.0,
        "steps": len(rows),
        "start": rows[0]["time"] if rows else time.time(),
        "end": rows[-1]["time"] if rows else time.time(),
        "threads": status.get("threads_reason", "?"),
    }


def shared(config: Path, env: dict[str, str], args: argparse.Namespace, label: str) -> dict:
    server, url, ready = start_server(env)
    print(f"[{label}] {ready}", flush=True)
    client = Client(url, args.words)
    client.start()
    try:
        solo_start = time.time()
        if label == "budget":  # the server alone first, on the same process and client
            time.sleep(args.serve_s)
        solo_rpm = client.per_minute(solo_start, time.time()) if label == "budget" else None
        result = train(config, env, args.cap_s, label)
        result["rpm"] = client.per_minute(result["start"], result["end"])
        result["solo_rpm"] = solo_rpm
    finally:
        client.stop_event.set()
        stop(server)
    tokens = [p for _, p in client.done]
    result["prompt_tokens"] = statistics.mean(tokens) if tokens else 0
    return result


def main() -> None:
    from core import threads
    from core.train.config import load_preset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="training steps per setup")
    parser.add_argument("--words", type=int, default=1900, help="prompt words (~1 token each)")
    parser.add_argument("--serve-s", type=float, default=40, help="seconds of the server alone")
    parser.add_argument(
        "--cap-s", type=float, default=90, help="stop a training this long after its first step"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="longctx-bench-sharing-"))
    config = load_preset("cpu-keys")
    config.max_steps, config.save_steps, config.name = args.steps, 10_000, "bench-sharing"
    config_file = home / "cpu-keys-short.yaml"
    config_file.write_text(config.to_yaml())
    n = threads.cores()
    print(f"{n} cores; cpu-keys preset, {args.steps} steps; prompts of ~{args.words} words")

    solo = train(config_file, _env(home, None), args.cap_s, "solo")
    print(f"[solo] training {solo['tokens_per_s']:.1f} tokens/s ({solo['threads']})", flush=True)
    budget = shared(config_file, _env(home, None), args, "budget")
    over = shared(config_file, _env(home, n), args, "all-cores")

    print(
        f"\nserver alone: {budget['solo_rpm']:.1f} requests/min "
        f"(prompts of {budget['prompt_tokens']:.0f} tokens)"
    )
    print("| setup | training threads | training tokens/s | vs solo | server req/min |")
    print("|---|---|---:|---:|---:|")
    print(
        f"| solo | {solo['threads']} | {solo['tokens_per_s']:.1f} | 1.00x | "
        f"{budget['solo_rpm']:.1f} (alone) |"
    )
    for label, r in (("budget", budget), ("all-cores (before)", over)):
        ratio = r["tokens_per_s"] / solo["tokens_per_s"] if solo["tokens_per_s"] else 0.0
        print(
            f"| {label} | {r['threads']} | {r['tokens_per_s']:.1f} ({r['steps']} steps) | "
            f"**{ratio:.2f}x** | {r['rpm']:.1f} |"
        )


if __name__ == "__main__":
    main()
