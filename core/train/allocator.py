"""A memory allocator that hands freed memory back, for training long sequences on a CPU.

A long-sequence step allocates and frees many large, short-lived tensors of varying sizes
(recomputed layer activations, attention and MLP buffers). glibc's malloc keeps the freed
blocks in fragmented heaps, so the process's resident memory climbs far above what is alive:
on the embedded model at 2K tokens it peaks at 3.2 GB where 1.7 GB suffice. tcmalloc and
jemalloc reuse and release such blocks; preloaded into the training process they bring the 8K
step to 2.5 GB (0.19x a plain transformers+peft step; 0.71x before) at no loss of speed
(bench/bench_train_memory.py, BENCHMARKS.md).

No Python package does this, hence this module. An allocator can only be swapped before the
process starts (`LD_PRELOAD`), so `child_env` prepares the environment of a training child and
`reexec_with_allocator` restarts a `longctx train` typed by hand. Without either library,
`tune_glibc` makes glibc map every block over 64 KB on its own, which returns it to the system
on free (as lean, but slower: fresh pages are zeroed again).

`LONGCTX_ALLOCATOR=system` turns all of this off. GPU training is left alone: its large
buffers live on the device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# Preference order: tcmalloc was both leanest-and-fastest in the bench, jemalloc a close second.
LIBRARIES = ("tcmalloc_minimal", "tcmalloc", "jemalloc")
_ACTIVE = "LONGCTX_ALLOCATOR_ACTIVE"
_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def wanted() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("LONGCTX_ALLOCATOR") != "system"


def find() -> str | None:
    """The soname of the first allocator library installed (the loader finds it by name)."""
    for name in LIBRARIES:
        soname = ctypes.util.find_library(name)
        if soname:
            return soname
    return None


def active() -> str | None:
    """The allocator this process was started with by this module, if any."""
    return os.environ.get(_ACTIVE) or None


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` plus what makes a CPU training child run on tcmalloc or jemalloc, when installed."""
    soname = find() if wanted() else None
    if soname is None or env.get(_ACTIVE):
        return env
    preload = " ".join(filter(None, [soname, env.get("LD_PRELOAD")]))
    return {
        **env,
        "LD_PRELOAD": preload,
        _ACTIVE: soname,
        # tcmalloc reports every allocation over 1 GB on stderr; a long sequence makes several.
        "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40),
    }


def reexec_with_allocator(argv: list[str]) -> None:
    """Restart this process as `longctx ARGV` with the allocator preloaded; returns only when
    there is none to switch to."""
    if active():
        return
    env = child_env(dict(os.environ))
    if not env.get(_ACTIVE):
        return
    log.info("restarting on %s (set LONGCTX_ALLOCATOR=system to keep glibc malloc)", env[_ACTIVE])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "core.cli", *argv], env)


def tune_glibc() -> bool:
    """Without a preloaded allocator, make glibc return large freed blocks. True if it did."""
    if not wanted() or active():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
