"""The server sheds load: a full queue answers 429, a request that waits past the queue deadline
answers 503, both with `Retry-After` in OpenAI's error shape, and the openai client's own retries
then get through.

A busy model is made real by holding the model's lock from the test, as a Chat tab generating in
the same process would: the request whose turn it is waits on it, the others wait in line.
Everything talks HTTP to a server on 127.0.0.1 over the tiny random Llama.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter

import httpx
import openai
import pytest

from core.errors import ConfigError
from core.models.loader import ModelSpec, default_cache
from core.serve.app import create_app
from core.serve.background import BackgroundServer

pytestmark = pytest.mark.integration
HELLO = [{"role": "user", "content": "Hello there, how are you?"}]
BODY = {"model": "tiny", "messages": HELLO, "max_tokens": 3, "temperature": 0}


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return default_cache.get(ModelSpec(str(tiny_llama_dir)))


def _server(tiny, **options) -> BackgroundServer:
    return BackgroundServer(tiny, served_name="tiny", fault_injection=True, **options)


def _wait_for(condition, within_s: float, what: str):
    deadline = time.monotonic() + within_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {within_s:g} s waiting for {what}"
        time.sleep(0.01)
    return value


def _in_flight(server: BackgroundServer) -> int:
    return httpx.get(server.url + "/health").json()["in_flight"]


def _assert_busy(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert int(reply.headers["retry-after"]) >= 1
    assert float(reply.headers["retry-after-ms"]) > 0


def test_queue_timeout_must_be_positive(tiny):
    with pytest.raises(ConfigError, match="queue_timeout must be more than 0"):
        create_app(tiny, queue_timeout=0)


def test_a_request_past_the_deadline_gets_503_and_a_full_queue_429(tiny):
    with _server(tiny, max_queue=1, queue_timeout=0.5) as server, httpx.Client(timeout=30) as http:
        url = server.base_url + "/chat/completions"
        first: list[httpx.Response] = []
        with tiny.lock:  # the model is busy
            holder = threading.Thread(target=lambda: first.append(http.post(url, json=BODY)))
            holder.start()  # its turn: it waits on the model, with no deadline any more
            _wait_for(lambda: _in_flight(server) == 1, 10, "the first request to get in")
            started = time.monotonic()
            waiting: list[httpx.Response] = []
            # Streamed: refused the same way, before any event is sent.
            streamed = {**BODY, "stream": True}
            queued = threading.Thread(target=lambda: waiting.append(http.post(url, json=streamed)))
            queued.start()
            _wait_for(lambda: _in_flight(server) == 2, 10, "a second request in the queue")
            _assert_busy(http.post(url, json=BODY), 429, "rate_limit_exceeded")  # queue full
            queued.join(10)
            waited = time.monotonic() - started
            _assert_busy(waiting[0], 503, "queue_timeout")
            assert 0.4 < waited < 5, waited
        holder.join(30)
        assert first[0].status_code == 200  # the one whose turn it was is answered
        _wait_for(lambda: _in_flight(server) == 0, 10, "every slot to come back")
        stats = httpx.get(server.url + "/_stats").json()
        assert stats["by_status"] == {"200": 1, "429": 1, "503": 1}


def test_the_openai_client_retries_a_503_after_the_advised_wait(tiny):
    with _server(tiny, max_queue=4, queue_timeout=0.3) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=3)
        tiny.lock.acquire()
        released = threading.Timer(1.5, tiny.lock.release)
        try:
            holder = threading.Thread(target=lambda: client.chat.completions.create(**BODY))
            holder.start()
            _wait_for(lambda: _in_flight(server) == 1, 10, "the first request to get in")
            released.start()
            started = time.monotonic()
            reply = client.chat.completions.create(**BODY)  # 503 first, then retried: answered
            took = time.monotonic() - started
        finally:
            released.join()
        holder.join(30)
        assert reply.choices[0].finish_reason in ("stop", "length")
        stats = httpx.get(server.url + "/_stats").json()
        assert stats["by_status"]["200"] == 2 and stats["by_status"]["503"] >= 1
        # It waited what the server advised (about one service time per request in line: the
        # 1 s starting guess, as nothing was served yet), not a blind immediate retry.
        assert took >= 0.3 + 1.0, took


def test_an_endpoint_evaluation_waits_out_a_busy_server_with_fewer_requests(tiny):
    """Our evaluations against a shedding server (ours, a gateway's 429s) slow down and finish
    instead of stopping at the first refusal the openai client's two retries did not cover."""
    from core.evals.backends import Endpoint, EndpointBackend, Prompt

    with _server(tiny, max_queue=4, queue_timeout=0.3) as server:
        backend = EndpointBackend(Endpoint(server.base_url, "tiny", "local"), None, concurrency=4)
        prompts = [Prompt(f"p{i}", [], HELLO) for i in range(6)]
        tiny.lock.acquire()  # busy for longer than the client's own retries wait
        released = threading.Timer(6.0, tiny.lock.release)
        released.start()
        try:
            answered = {p.key: reply for p, reply in backend.answers(prompts, max_new_tokens=3)}
        finally:
            released.join()
        assert sorted(answered) == [p.key for p in prompts]
        assert backend.busy_answers >= 1  # it was refused, backed off, and got through
        stats = httpx.get(server.url + "/_stats").json()["by_status"]
        assert stats["200"] == 6 and stats.get("503", 0) + stats.get("429", 0) >= 1


def _one_client(index: int, base_url: str, until: float, outcomes: Counter, errors: list) -> None:
    """Back-to-back requests until `until`; every fifth client sends broken bodies.

    Half of the good requests stream; half go through the openai client (no retries: every
    answer is counted as it came), half through httpx."""
    rng = random.Random(index)
    broken = index % 5 == 0
    http = httpx.Client(timeout=20)
    client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=20)
    with http, client:
        while time.monotonic() < until:
            body = {**BODY, "max_tokens": rng.randint(1, 6), "stream": rng.random() < 0.5}
            try:
                if broken:
                    raw = rng.choice([b"{not json", b'{"model": "tiny"}', b"[1, 2]"])
                    reply = http.post(base_url + "/chat/completions", content=raw)
                    outcomes[reply.status_code] += 1
                elif index % 2:
                    with http.stream("POST", base_url + "/chat/completions", json=body) as reply:
                        reply.read()
                    outcomes[reply.status_code] += 1
                elif body["stream"]:
                    outcomes[200] += bool(list(client.chat.completions.create(**body)))
                else:
                    outcomes[200] += bool(client.chat.completions.create(**body).choices)
            except openai.APIStatusError as exc:
                outcomes[exc.status_code] += 1
            except Exception as exc:  # a timeout, a reset: what load shedding must prevent
                errors.append(f"{type(exc).__name__}: {exc}")


def test_twenty_clients_get_answers_or_clean_refusals_never_a_hang(tiny):
    with _server(tiny, max_queue=6, queue_timeout=0.3) as server:
        until = time.monotonic() + 4.0
        outcomes = [Counter() for _ in range(20)]
        errors: list[list[str]] = [[] for _ in range(20)]
        clients = [
            threading.Thread(target=_one_client, args=(i, server.base_url, until, *state))
            for i, state in enumerate(zip(outcomes, errors, strict=True))
        ]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        with tiny.lock:  # the model stalls for a second mid-test: the line must not just grow
            time.sleep(1.0)
        for thread in clients:
            thread.join(40)
        assert not any(thread.is_alive() for thread in clients), "a client hung"
        total = sum(outcomes, Counter())
        assert [e for client in errors for e in client] == []
        assert set(total) <= {200, 400, 429, 503}, total
        assert total[200] and total[400] and total[503], total
        _wait_for(lambda: _in_flight(server) == 0, 20, "every slot to come back")
        with contextlib.closing(openai.OpenAI(base_url=server.base_url, api_key="x")) as client:
            assert client.chat.completions.create(**BODY).choices  # still serving
