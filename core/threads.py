"""The thread budget: how many torch/OpenMP threads each process of the app may use.

Every torch process sizes its thread pool to the whole machine by default. Two of them on the
same cores (a training run and a server answering long prompts) then oversubscribe the CPU, and
each runs many times slower than its fair share would: measured on 2 cores, training fell from
150 to 9.5 tokens/s next to `longctx serve`. So every process the app starts asks here instead:

- a CPU training run gets all cores when nothing else computes, and all but a reserve (a quarter
  of the cores, at least one) while a server, an evaluation or the app's chat computes, or did
  in the last `IDLE_S` seconds (an idle server or app does not halve a run on 2 cores);
- those others get the reserve while a CPU training run is active, and all cores once it ends.

A process that computes says so with `Governor(kind)` (a claim file under
`$LONGCTX_HOME/cache/threads/`, marked busy inside `computing()` and stamped at each re-plan,
gone when it exits); training runs are found from their
`status.json` (an active CPU run with a live pid). Each process re-plans every few seconds from
its own compute thread (`Governor.tick`), so a training run gives cores back when a server
starts and the server takes them when the run ends. A setting overrides the plan: YAML
`threads:` for training, `longctx serve --threads`, or `LONGCTX_THREADS` for every process.

Knows nothing about what the processes compute; reads run folders as plain files.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core import workspace
from core.errors import ConfigError

ENV = "LONGCTX_THREADS"
KINDS = ("train", "serve", "eval", "app")
# Environment variables that size a child's thread pools before torch starts (OpenMP, MKL,
# OpenBLAS, and torch's own inter-op pool reads OMP_NUM_THREADS).
CHILD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_ACTIVE_RUN = ("starting", "running", "stopping")
# A claim counts against a training run while its process computed this recently. Longer than a
# re-plan (5 s) so a chat that pauses between replies keeps its share.
IDLE_S = 30.0


def cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def reserve(n: int) -> int:
    """Cores kept for everything else while a training run is active."""
    return max(1, n // 4) if n > 1 else 1


@dataclass(frozen=True)
class Budget:
    threads: int
    reason: str
    """Why this many, in words: shown in `runs show`, the Train tab and the serve log."""


def parse_setting(value: object, where: str) -> int | None:
    """A thread count from a setting: None (or 0, or empty) leaves it to the budget."""
    if value in (None, "", 0, "0"):
        return None
    try:
        n = int(str(value))
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{where} must be a whole number of threads, 1 or more; got {value!r}")
    return n


def plan(kind: str, setting: int | None = None) -> Budget:
    """How many threads a process of `kind` should use now.

    Args:
        kind: `train`, `serve`, `eval` or `app` (the UI process: chat and its evaluation jobs).
        setting: an explicit count (YAML `threads:`, `--threads`); wins over everything.
    """
    if setting:
        return Budget(setting, f"{setting} (set in its configuration)")
    forced = parse_setting(os.environ.get(ENV), ENV)
    if forced:
        return Budget(forced, f"{forced} (set by {ENV})")
    n, me = cores(), os.getpid()
    if kind == "train":
        busy = [c for c in claims() if c.get("busy") or time.time() - c.get("active", 0) < IDLE_S]
        others = sorted({c["kind"] for c in busy if c["pid"] != me and c["kind"] != "train"})
        if not others:
            return Budget(n, f"all {n} cores (nothing else is computing)")
        share = max(1, n - reserve(n))
        return Budget(share, f"{share} of {n} cores ({reserve(n)} kept for {', '.join(others)})")
    run = next((r for r in training_runs() if r["pid"] != me), None)
    if run is None:
        return Budget(n, f"all {n} cores (no training run on this CPU)")
    keep = reserve(n)
    return Budget(keep, f"{keep} of {n} cores (training run {run['id']} has the rest)")


# -- who is computing --------------------------------------------------------------------------


def _claims_dir() -> Path:
    return workspace.subdir("cache") / "threads"


def process_alive(pid: object) -> bool:
    """Whether `pid` names a running process (a zombie, finished but not reaped, is not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (a finished child not yet reaped) computes nothing
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def claims() -> list[dict]:
    """The live processes that said they compute (stale files of dead ones are removed)."""
    folder = _claims_dir()
    out = []
    for file in folder.glob("*.json") if folder.exists() else []:
        try:
            claim = json.loads(file.read_text())
        except (OSError, ValueError):
            continue  # being written; read again at the next tick
        if process_alive(claim.get("pid")):
            out.append(claim)
        else:
            file.unlink(missing_ok=True)
    return out


def training_runs() -> list[dict]:
    """Active CPU training runs: {id, pid} from each run folder's status.json."""
    folder = workspace.subdir("runs")
    out = []
    for status_file in folder.glob("*/status.json"):
        try:
            status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            continue
        pid = status.get("pid")
        if (
            status.get("state") in _ACTIVE_RUN
            and status.get("device") == "cpu"
            and process_alive(pid)
        ):
            out.append({"id": status_file.parent.name, "pid": pid})
    return out


# -- applying it ---------------------------------------------------------------------------------


def apply(threads: int) -> None:
    """Size torch's pool for the calling thread (and threads started after this call)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def child_env(env: dict[str, str], threads: int) -> dict[str, str]:
    """`env` for a child process that should start with `threads` threads."""
    return {**env, **{var: str(threads) for var in CHILD_VARS}}


class Governor:
    """Keeps this process on its budget: claims its kind, re-plans every `every_s` seconds.

    torch's OpenMP pool size is per calling thread, so `tick()` belongs on the thread that
    computes (the trainer's step callback, a server's generation thread).
    """

    def __init__(
        self, kind: str, setting: int | None = None, every_s: float = 5.0, processes: int = 1
    ):
        """
        Args:
            kind: what this process is (see `plan`).
            setting: an explicit thread count that overrides the plan.
            every_s: how often `tick` plans again.
            processes: processes sharing this budget (CPU training with torchrun): each gets
                its part.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.setting, self.every_s = kind, setting, every_s
        self.processes = max(1, processes)
        self.budget: Budget | None = None
        self._planned = 0.0
        self._file = _claims_dir() / f"{os.getpid()}-{kind}.json"
        self._file.parent.mkdir(parents=True, exist_ok=True)
        self._since = time.time()
        self._busy = 0  # computations in progress (two chat replies side by side make two)
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _stamp(self) -> None:
        """Say that this process computes now (replaced whole: readers never see half)."""
        claim = {
            "pid": os.getpid(),
            "kind": self.kind,
            "since": self._since,
            "active": time.time(),
            "busy": self._busy > 0,
        }
        tmp = self._file.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(claim))
        os.replace(tmp, self._file)

    @contextlib.contextmanager
    def computing(self) -> Iterator[Budget]:
        """Busy for as long as the block runs, however long one forward pass takes (a 2K-token
        prompt on a loaded CPU can take minutes without a tick); yields the budget applied."""
        with self._lock:
            self._busy += 1
            if self._busy == 1:
                self._stamp()
        try:
            yield self.tick()
        finally:
            with self._lock:
                self._busy -= 1
                if self._busy == 0:
                    self._stamp()

    def tick(self) -> Budget:
        """The current budget, re-planned and applied when `every_s` has passed."""
        now = time.monotonic()
        if self.budget is None or now - self._planned >= self.every_s:
            self._planned = now
            self._stamp()
            budget = plan(self.kind, self.setting)
            if self.processes > 1:
                part = max(1, budget.threads // self.processes)
                budget = Budget(part, f"{part} per process: {budget.reason}")
            apply(budget.threads)
            self.budget = budget
        return self.budget

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.unlink(missing_ok=True)


_governors: dict[str, Governor] = {}


def owns_process(args: object) -> bool:
    """Whether a `longctx` command runs as its own process (not called in-process by a test or
    a library user, whose thread settings stay theirs)."""
    return getattr(args, "process_argv", None) is not None


def governor(kind: str, setting: int | None = None) -> Governor:
    """This process's one governor of `kind` (made, claimed and applied at first use)."""
    if kind not in _governors:
        _governors[kind] = Governor(kind, setting)
    _governors[kind].tick()
    return _governors[kind]


@contextlib.contextmanager
def computing() -> Iterator[None]:
    """Mark this process busy for the block, if its entry point set up a budget (see `tick`)."""
    with contextlib.ExitStack() as stack:
        for gov in list(_governors.values()):
            stack.enter_context(gov.computing())
        yield


def tick() -> Budget | None:
    """Keep the calling thread on this process's budget, if its entry point set one up.

    Compute loops shared by several entry points (chat, evaluation) call this: in the app or a
    `longctx` command it applies their budget; in a library user's process it does nothing.
    """
    budget = None
    for gov in list(_governors.values()):
        budget = gov.tick()
    return budget
