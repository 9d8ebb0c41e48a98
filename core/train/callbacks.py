"""Trainer callbacks that make a run observable and stoppable through its folder.

`RunMonitor` appends one JSON line per logging step to `metrics.jsonl` (loss, lr, grad norm,
tokens/s, memory, ETA), and one per measure of the held-out loss (eval_loss), and keeps
`status.json` current; a resumed run first drops the rows its killed attempt wrote past the
checkpoint, so the file holds one row per step; a SIGTERM/SIGINT becomes a clean stop
(checkpoint, adapter, status `stopped`). Knows nothing about the UI: it only writes files.
"""

from __future__ import annotations

import json
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from core import threads
from core.train import runs


def memory_now() -> dict[str, int]:
    """Current and peak memory of this process (RSS) and of the GPU when there is one."""
    import psutil
    import torch

    out = {
        "mem_bytes": psutil.Process().memory_info().rss,
        # ru_maxrss is in KiB on Linux.
        "peak_mem_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if torch.cuda.is_available():
        out["gpu_mem_bytes"] = torch.cuda.memory_allocated()
        out["gpu_peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    return out


class TokenCounter:
    """Counts the tokens the model consumed; the loss function adds to it every micro-batch."""

    def __init__(self) -> None:
        self.total = 0
        self.labelled = 0


class RunMonitor(TrainerCallback):
    """Writes metrics.jsonl / status.json and turns a stop signal into a clean stop."""

    def __init__(
        self,
        run_dir: Path,
        tokens: TokenCounter,
        is_main: bool = True,
        governor: threads.Governor | None = None,
    ):
        self.run_dir = run_dir
        self.tokens = tokens
        self.is_main = is_main
        self.governor = governor  # CPU runs: the thread budget, re-planned as steps go by
        self.stop_requested = threading.Event()
        self._last_time = time.monotonic()
        self._last_tokens = 0
        self._start_time = time.monotonic()
        self._start_step = 0

    def install_signal_handlers(self) -> None:
        def request_stop(signum: int, frame: Any) -> None:
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def on_train_begin(self, args, state, control, **kwargs):
        self._start_time = self._last_time = time.monotonic()
        self._start_step = state.global_step
        if self.is_main:
            # Before the first new row: the trainer re-evaluates on start when it evaluates at all.
            runs.trim_metrics(self.run_dir, state.global_step, args.eval_on_start)
            runs.update_status(
                self.run_dir, state="running", step=state.global_step, max_steps=state.max_steps
            )

    def thread_fields(self) -> dict[str, Any]:
        """The threads this run uses now, for status.json (applied on the calling thread)."""
        if self.governor is None:
            return {}
        budget = self.governor.tick()
        return {"threads": budget.threads, "threads_reason": budget.reason}

    def on_step_end(self, args, state, control, **kwargs):
        if self.governor is not None:
            before = self.governor.budget
            fields = self.thread_fields()  # a server started or stopped: resize the pool
            if self.is_main and self.governor.budget != before:
                runs.update_status(self.run_dir, **fields)
        if args.eval_strategy != "no" and state.global_step >= state.max_steps:
            control.should_evaluate = True  # the held-out loss of the final adapter, always
        if self._stop_agreed(args):
            control.should_save = True
            control.should_training_stop = True
            if self.is_main:
                runs.update_status(self.run_dir, state="stopping", step=state.global_step)
        return control

    def _stop_agreed(self, args) -> bool:
        """Whether any process was asked to stop. A stop signal reaches the process whose pid
        the run's status holds (the first); with several, all must stop at the same step, or
        the others would wait for it in their next gradient exchange."""
        import torch
        import torch.distributed as dist

        stop = self.stop_requested.is_set()
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return stop
        flag = torch.tensor([int(stop)], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.is_main and logs and "eval_loss" in logs:
            self._log_held_out(state, logs)
        if not self.is_main or not logs or "loss" not in logs:
            return
        now = time.monotonic()
        new_tokens = self.tokens.total - self._last_tokens
        elapsed = max(now - self._last_time, 1e-9)
        done = state.global_step - self._start_step
        per_step = (now - self._start_time) / max(done, 1)
        record = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "loss": logs.get("loss"),
            "lr": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens": self.tokens.total,
            "tokens_per_s": round(new_tokens / elapsed, 2),
            "eta_s": round(per_step * max(state.max_steps - state.global_step, 0), 1),
            "time": time.time(),
            **memory_now(),
        }
        self._last_time, self._last_tokens = now, self.tokens.total
        self._append(record)
        runs.update_status(
            self.run_dir,
            step=state.global_step,
            max_steps=state.max_steps,
            eta_s=record["eta_s"],
            loss=record["loss"],
        )

    def _log_held_out(self, state, logs: dict[str, Any]) -> None:
        """A metrics line of its own for the held-out loss (no lr, no tokens: nothing trained)."""
        record = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "eval_loss": logs["eval_loss"],
            "eval_seconds": logs.get("eval_runtime"),
            "time": time.time(),
        }
        self._append(record)
        runs.update_status(self.run_dir, eval_loss=record["eval_loss"], eval_step=record["step"])
        # The training throughput logged next must not count the time spent measuring.
        self._last_time += float(logs.get("eval_runtime") or 0.0)

    def _append(self, record: dict[str, Any]) -> None:
        with (self.run_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_save(self, args, state, control, **kwargs):
        if self.is_main:
            runs.update_status(self.run_dir, last_checkpoint=f"checkpoint-{state.global_step}")
