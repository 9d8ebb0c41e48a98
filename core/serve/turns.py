"""The server's queue and its workers: requests take turns at the one model in arrival order, a
bounded queue turns overload into 429s and a wait past the deadline into 503s (both with a
`Retry-After` from the measured service time), and each admitted request decodes on a worker
thread of its own that a client going away cancels.

`core.serve.app` turns HTTP requests into these; this module knows nothing about HTTP routes or
the request format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter, deque
from typing import Any

from fastapi import Request

from core.models.generation import Chunk, SamplingParams, stream_chat
from core.models.loader import LoadedModel
from core.serve.protocol import (
    Fault,
)
from core.threads import Governor

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Server state: the queue bound, the generations in flight, faults and statistics.


class ServerState:
    def __init__(
        self,
        loaded: LoadedModel,
        served_name: str,
        max_queue: int,
        faults: bool,
        queue_timeout: float | None = None,
        governor: Governor | None = None,
    ):
        self.loaded, self.served_name, self.max_queue = loaded, served_name, max_queue
        self.queue_timeout, self.governor = queue_timeout, governor
        self.fault_injection = faults
        self.refuse_max_tokens = False
        self.created = int(time.time())
        self.faults: deque[Fault] = deque()
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.message_hashes: list[str] = []
        self.sampling: list[dict[str, Any]] = []  # per request: what a client asked for
        self.finish_reasons: Counter[str] = Counter()  # "cancelled" shows a client hung up
        self.jobs: set[Generation] = set()
        self._in_flight = 0
        self._lock = threading.Lock()  # the counter is released from generation threads
        # HF fast tokenizers are Rust objects that refuse concurrent mutable use ("Already
        # borrowed"); rendering prompts one at a time costs nothing next to decoding.
        self.tokenize_lock = threading.Lock()
        # The model's turn, handed out first come first served (asyncio.Lock is fair, where the
        # model's threading.Lock is not): a deadline on the wait is only fair in a fair queue.
        self._turn: asyncio.Lock | None = None
        self._turn_loop: asyncio.AbstractEventLoop | None = None
        self.service_s = 1.0  # a moving average of how long one request holds the model

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def turn(self) -> asyncio.Lock:
        # One per event loop: an asyncio.Lock is bound to the loop that first waits on it, and
        # in-process test clients run the app on a loop of their own.
        loop = asyncio.get_running_loop()
        if self._turn is None or self._turn_loop is not loop:
            self._turn, self._turn_loop = asyncio.Lock(), loop
        return self._turn

    def end_turn(self, loop: asyncio.AbstractEventLoop, held_s: float) -> None:
        """Hand the model to the next request in line (from any thread)."""
        self.service_s = 0.7 * self.service_s + 0.3 * held_s
        turn = self._turn
        if turn is None:
            return
        try:
            loop.call_soon_threadsafe(turn.release)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass

    def retry_after_s(self) -> float:
        """How long a refused client should wait: about the time the queue ahead needs."""
        return min(max(self.service_s * max(self._in_flight, 1), 0.1), 60.0)

    def busy_headers(self) -> dict[str, str]:
        # OpenAI clients honour retry-after-ms (then Retry-After) up to 60 s, else back off.
        wait = self.retry_after_s()
        return {"retry-after-ms": f"{wait * 1000:.0f}", "Retry-After": str(math.ceil(wait))}

    def try_admit(self) -> Slot | None:
        # One request generates while up to max_queue wait on the model's lock.
        with self._lock:
            if self._in_flight > self.max_queue:
                return None
            self._in_flight += 1
        return Slot(self)

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def add_job(self, job: Generation) -> None:
        with self._lock:
            self.jobs.add(job)

    def drop_job(self, job: Generation, finish_reason: str | None) -> None:
        with self._lock:
            self.jobs.discard(job)
            self.finish_reasons[finish_reason or "error"] += 1

    def cancel_all(self) -> None:
        with self._lock:
            jobs = list(self.jobs)
        for job in jobs:
            job.cancel.set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no generation thread runs (after `cancel_all`: they stop at their next
        token, or when the forward pass they are in ends). True if none is left."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if not self.jobs:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


class Slot:
    """A place in the queue, released exactly once by whoever finishes with the request last."""

    def __init__(self, state: ServerState):
        self._state, self._released = state, False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._state._release()


class Generation:
    """One request's decoding on its own thread; chunks come back through an asyncio queue.

    A dedicated thread rather than the shared pool: it may wait minutes for the model's lock,
    and `stream_chat` holds that lock across its yields, so one thread must run it throughout.
    """

    def __init__(
        self,
        state: ServerState,
        messages: list[dict[str, str]],
        ids: list[int],
        params: SamplingParams,
    ):
        self.cancel = threading.Event()
        self._state: ServerState = state
        self._slot: Slot | None = None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self._watcher: asyncio.Future | None = None
        self._args = (messages, params, ids)

    def start(self, slot: Slot) -> None:
        """Generate on a thread of its own, which from now on owns `slot` and the model's turn."""
        self._slot = slot
        self._state.add_job(self)
        threading.Thread(target=self._run, daemon=True, name="longctx-serve-generate").start()

    def _run(self) -> None:
        finish, started = None, time.monotonic()
        try:
            governor = self._state.governor
            busy = governor.computing() if governor is not None else contextlib.nullcontext()
            with busy:  # on this thread: torch's pool size is per thread
                finish = self._generate(governor)
        except Exception as exc:  # handed to the request, which turns it into a response
            self._put(exc)
        finally:
            if self._slot is not None:
                self._slot.release()
            self._state.end_turn(self._loop, time.monotonic() - started)
            self._state.drop_job(self, finish)

    def _generate(self, governor: Governor | None) -> str | None:
        messages, params, ids = self._args
        finish = None
        for chunk in stream_chat(self._state.loaded, messages, params, self.cancel, ids=ids):
            if governor is not None:
                governor.tick()  # cheap between re-plans; a server that ends training re-plans
            finish = chunk.finish_reason
            if finish is not None and self._slot is not None:
                # Free the slot before the client can see its answer end: released after,
                # a client sending its next request at once could race it and get a 429
                # with nothing else in flight (seen with max_queue=0).
                self._slot.release()
            self._put(chunk)
        return finish

    def _put(self, item: Chunk | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            # The event loop is closed (server stopped): nobody will read the rest.
            self.cancel.set()

    async def next(self) -> Chunk:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def watch(self, request: Request) -> None:
        """Cancel the generation if `request`'s client hangs up (until `unwatch`)."""

        async def listen() -> None:
            # The body is read, so the next message uvicorn has for us is the disconnect: waiting
            # for it wakes us the moment the client leaves, without polling.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            self.cancel.set()

        self._watcher = asyncio.ensure_future(listen())

    def unwatch(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def close(self) -> None:
        self.cancel.set()
        self.unwatch()


# ---------------------------------------------------------------------------------------------
# The app.
