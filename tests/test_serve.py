"""The OpenAI-compatible server, driven over real HTTP by the official `openai` client.

Everything runs against the embedded model on 127.0.0.1: answers, streaming, usage, stop,
limits, seeds, malformed requests, concurrency, the bounded queue, client disconnects, injected
faults (with the client's own retries) and the `longctx serve` command itself.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import reset_faults

from core.serve.app import _break
from core.serve.background import BackgroundServer
from core.serve.protocol import Fault

ROOT = Path(__file__).resolve().parent.parent
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
POEM = [{"role": "user", "content": "Write a long poem about the sea."}]
COUNT = [{"role": "user", "content": "Count from 1 to 500, one number per line."}]


def _client(server: BackgroundServer, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="local", **kwargs)


@pytest.fixture(scope="module")
def server(embedded):
    with BackgroundServer(embedded) as running:
        yield running


@pytest.fixture(scope="module")
def fault_server(embedded):
    """A second server on the same weights: one request generates, one may wait, faults on."""
    with BackgroundServer(embedded, max_queue=1, fault_injection=True) as running:
        yield running


@pytest.fixture
def faults(fault_server):
    """The fault server with no pending faults and fresh statistics."""
    return reset_faults(fault_server)


def _assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


# ---------------------------------------------------------------------------------------------
# Unit: no model.


def test_broken_json_is_never_valid_json():
    for answer in ["", "}", '{"a": 1}', "[1, 2]", "The capital of France is Paris."]:
        broken = _break(answer)
        with pytest.raises(ValueError):
            json.loads(broken)


def test_faults_are_validated():
    assert Fault(status=429).retry_after_s > 0
    for bad in ({"status": 200}, {"delay_s": -1}, {"explode": True}, {"broken_json": "yes"}):
        with pytest.raises(ValueError):
            Fault.model_validate(bad)


# ---------------------------------------------------------------------------------------------
# Answers.


@pytest.mark.integration
def test_models_and_health(server):
    assert [m.id for m in _client(server).models.list()] == ["embedded"]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "embedded"
    # Fault endpoints exist only when asked for.
    _assert_openai_error(httpx.get(server.url + "/_stats"), 404)
    _assert_openai_error(httpx.post(server.url + "/_faults", json=[{"status": 500}]), 404)


@pytest.mark.integration
def test_factual_answer_with_true_usage(server, embedded_tokenizer):
    reply = _client(server).chat.completions.create(
        model="embedded", messages=FRANCE, temperature=0, max_tokens=20
    )
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    rendered = embedded_tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True)
    assert reply.usage.prompt_tokens == len(rendered["input_ids"])
    assert 0 < reply.usage.completion_tokens <= 20
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.integration
def test_streamed_answer_ends_with_usage_and_done(server):
    stream = _client(server).chat.completions.create(
        model="embedded",
        messages=FRANCE,
        temperature=0,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    assert len([p for p in pieces if p]) > 3  # really streamed, not one blob
    assert "Paris" in "".join(p or "" for p in pieces)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.prompt_tokens > 0 and usage.completion_tokens > 0

    # The wire format itself: SSE `data:` events, the last one `[DONE]`.
    body = {"model": "embedded", "messages": FRANCE, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "length"


@pytest.mark.integration
def test_stop_strings_max_tokens_and_content_parts(server):
    client = _client(server)
    parts = [{"role": "user", "content": [{"type": "text", "text": FRANCE[0]["content"]}]}]
    stopped = client.chat.completions.create(
        model="embedded", messages=parts, temperature=0, max_tokens=20, stop="Paris"
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content.startswith("The capital")
    assert "Paris" not in stopped.choices[0].message.content

    cut = client.chat.completions.create(
        model="embedded", messages=POEM, temperature=0, max_completion_tokens=5
    )
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5


@pytest.mark.integration
def test_seed_makes_sampling_repeatable(server):
    client = _client(server)

    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model="embedded", messages=POEM, temperature=1.0, max_tokens=10, seed=seed
        )
        return reply.choices[0].message.content

    first = sample(7)
    assert sample(7) == first
    assert any(sample(seed) != first for seed in (8, 9))


# An answer whose start the caller wrote: the server must continue it, not open a new turn.
PREFILLED = [*FRANCE, {"role": "assistant", "content": "The capital of France is"}]
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}


@pytest.mark.integration
def test_continue_final_message_continues_the_assistant_message(server, embedded_tokenizer):
    client = _client(server)

    def ask(extra: dict | None, **kwargs):
        return client.chat.completions.create(
            model="embedded",
            messages=PREFILLED,
            temperature=0,
            max_tokens=8,
            extra_body=extra,
            **kwargs,
        )

    reply = ask(CONTINUE)
    text = reply.choices[0].message.content
    # The continuation alone, after "... is": no restated start, no new turn's greeting.
    assert text.startswith(" Paris"), text
    continued = embedded_tokenizer.apply_chat_template(PREFILLED, continue_final_message=True)
    assert reply.usage.prompt_tokens == len(continued["input_ids"])
    assert embedded_tokenizer.decode(continued["input_ids"]).endswith("The capital of France is")
    # vLLM wants add_generation_prompt false by hand; leaving it out means the same here.
    assert ask({"continue_final_message": True}).choices[0].message.content == text
    streamed = ask(CONTINUE, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text
    # Without the flag the assistant's turn is closed and a new one opened, as before.
    closed = ask(None)
    new_turn = embedded_tokenizer.apply_chat_template(PREFILLED, add_generation_prompt=True)
    assert closed.usage.prompt_tokens == len(new_turn["input_ids"]) > len(continued["input_ids"])
    # add_generation_prompt false alone renders the conversation with no new turn at all.
    bare = ask({"add_generation_prompt": False})
    assert bare.usage.prompt_tokens == len(
        embedded_tokenizer.apply_chat_template(PREFILLED)["input_ids"]
    )


CONTRADICTIONS = [
    ("both true", {**CONTINUE, "add_generation_prompt": True}, PREFILLED),
    ("last message the user's", CONTINUE, FRANCE),
]


@pytest.mark.integration
@pytest.mark.parametrize(
    "extra,messages", [c[1:] for c in CONTRADICTIONS], ids=[c[0] for c in CONTRADICTIONS]
)
def test_contradictory_template_flags_are_refused(server, extra, messages):
    client = _client(server, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="embedded", messages=messages, max_tokens=2, extra_body=extra
        )
    message = caught.value.message
    assert caught.value.param == "continue_final_message" and caught.value.code == "invalid_value"
    assert "continue_final_message" in message and "add_generation_prompt" in message
    response = httpx.post(
        server.base_url + "/chat/completions",
        json={"model": "embedded", "messages": messages, "max_tokens": 2, **extra},
    )
    _assert_openai_error(response, 400, "invalid_value")


# ---------------------------------------------------------------------------------------------
# Refusals.

GOOD = {"model": "embedded", "messages": FRANCE, "max_tokens": 2}
MALFORMED = [
    ("invalid JSON", b'{"model": "embedded", "messages": [', 400, "invalid_json"),
    ("not an object", [GOOD], 400, None),
    ("no messages", {"model": "embedded"}, 400, None),
    ("empty messages", {**GOOD, "messages": []}, 400, None),
    ("messages not a list", {**GOOD, "messages": "hello"}, 400, None),
    ("unknown role", {**GOOD, "messages": [{"role": "tool", "content": "x"}]}, 400, None),
    ("content a number", {**GOOD, "messages": [{"role": "user", "content": 3}]}, 400, None),
    (
        "image part",
        {**GOOD, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        None,
    ),
    ("temperature a word", {**GOOD, "temperature": "hot"}, 400, None),
    ("temperature too high", {**GOOD, "temperature": 3}, 400, None),
    ("max_tokens zero", {**GOOD, "max_tokens": 0}, 400, None),
    ("stream not a bool", {**GOOD, "stream": "yes"}, 400, None),
    ("n above 1", {**GOOD, "n": 2}, 400, None),
    ("continue_final_message a word", {**GOOD, "continue_final_message": "yes"}, 400, None),
    ("five stop strings", {**GOOD, "stop": list("abcde")}, 400, None),
    ("unknown model", {**GOOD, "model": "gpt-9"}, 404, "model_not_found"),
    (
        "prompt over the window",
        {**GOOD, "messages": [{"role": "user", "content": "lorem ipsum " * 5000}]},
        400,
        "context_length_exceeded",
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(
    "body,status,code", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_requests_get_openai_errors(server, body, status, code):
    url = server.base_url + "/chat/completions"
    if isinstance(body, bytes):
        response = httpx.post(url, content=body, headers={"content-type": "application/json"})
    else:
        response = httpx.post(url, json=body)
    _assert_openai_error(response, status, code)


@pytest.mark.integration
def test_openai_client_sees_typed_errors(server):
    client = _client(server, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=FRANCE)
    long = [{"role": "user", "content": "lorem ipsum " * 5000}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="embedded", messages=long, max_tokens=2)
    assert caught.value.code == "context_length_exceeded"
    assert "window is 8192" in caught.value.message


# ---------------------------------------------------------------------------------------------
# Several clients.


@pytest.mark.integration
def test_concurrent_clients_all_get_answers(server):
    questions = ["France", "Italy", "Spain", "Germany"]
    answers: dict[str, str] = {}

    def ask(country: str) -> None:
        reply = _client(server).chat.completions.create(
            model="embedded",
            messages=[{"role": "user", "content": f"What is the capital of {country}?"}],
            temperature=0,
            max_tokens=8,
        )
        answers[country] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answers) == sorted(questions)
    assert all(answers.values())
    assert "Paris" in answers["France"]


@pytest.mark.integration
def test_full_queue_answers_429_instead_of_hanging(faults):
    # Two delayed requests fill the queue (one "generating", one waiting, max_queue=1).
    httpx.post(faults.url + "/_faults", json=[{"delay_s": 2}, {"delay_s": 2}])
    replies: list[str] = []

    def ask() -> None:
        reply = _client(faults, max_retries=0).chat.completions.create(
            model="embedded", messages=FRANCE, temperature=0, max_tokens=3
        )
        replies.append(reply.choices[0].message.content)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while httpx.get(faults.url + "/health").json()["in_flight"] < 2:
        assert time.monotonic() < deadline, "the delayed requests never got in"
        time.sleep(0.02)

    refused = httpx.post(faults.base_url + "/chat/completions", json=GOOD, timeout=5)
    _assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    for thread in threads:
        thread.join(30)
    assert len(replies) == 2
    assert httpx.get(faults.url + "/_stats").json()["by_status"] == {"200": 2, "429": 1}


@pytest.mark.integration
def test_disconnected_stream_cancels_its_generation(faults):
    stream = _client(faults).chat.completions.create(
        model="embedded", messages=COUNT, temperature=0, max_tokens=400, stream=True
    )
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()  # hang up after 3 of the ~120 tokens this answer takes
    _wait_cancelled(faults)
    reply = _client(faults).chat.completions.create(
        model="embedded", messages=FRANCE, temperature=0, max_tokens=8
    )
    assert "Paris" in reply.choices[0].message.content


@pytest.mark.integration
def test_client_timeout_cancels_its_generation(faults):
    # A non-streamed request whose client gives up (the synthetic-data generator's timeouts).
    impatient = _client(faults, timeout=1.0, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(
            model="embedded", messages=COUNT, temperature=0, max_tokens=400
        )
    _wait_cancelled(faults)


def _wait_cancelled(server: BackgroundServer, within_s: float = 30.0) -> None:
    """Wait until the server says a generation ended because its client left, and none runs."""
    deadline = time.monotonic() + within_s
    while True:
        stats = httpx.get(server.url + "/_stats").json()
        if stats["finish_reasons"] == {"cancelled": 1} and stats["in_flight"] == 0:
            return
        assert time.monotonic() < deadline, f"the generation outlived its client: {stats}"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Injected faults, as the synthetic-data generator's retry tests will use them.


@pytest.mark.integration
def test_injected_429_is_retried_by_the_client(faults):
    httpx.post(faults.url + "/_faults", json=[{"status": 429}]).raise_for_status()
    reply = _client(faults, max_retries=2).chat.completions.create(
        model="embedded", messages=FRANCE, temperature=0, max_tokens=8
    )
    assert "Paris" in reply.choices[0].message.content
    stats = httpx.get(faults.url + "/_stats").json()
    assert stats["requests"] == 2 and stats["by_status"] == {"429": 1, "200": 1}
    # The same request twice: the retry. A caller that caches must not add a third.
    assert len(stats["message_hashes"]) == 2 and len(set(stats["message_hashes"])) == 1
    assert stats["faults_pending"] == 0


@pytest.mark.integration
def test_injected_500_delay_and_broken_json(faults):
    client = _client(faults, max_retries=0)
    plan = [{"status": 500}, {"delay_s": 0.5}, {"broken_json": True}]
    assert httpx.post(faults.url + "/_faults", json=plan).json() == {"pending": 3}

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="embedded", messages=FRANCE, max_tokens=8)

    started = time.monotonic()
    client.chat.completions.create(model="embedded", messages=POEM, max_tokens=2)
    assert time.monotonic() - started >= 0.5

    broken = client.chat.completions.create(
        model="embedded", messages=FRANCE, temperature=0, max_tokens=20
    )
    content = broken.choices[0].message.content
    assert content.endswith("{") and content.startswith("The capital")
    with pytest.raises(ValueError):
        json.loads(content)

    stats = httpx.get(faults.url + "/_stats").json()
    assert stats["by_status"] == {"500": 1, "200": 2}
    assert len(set(stats["message_hashes"])) == 2  # FRANCE twice, POEM once
    _assert_openai_error(httpx.post(faults.url + "/_faults", json=[{"status": 200}]), 400)
    _assert_openai_error(httpx.post(faults.url + "/_faults", content=b"[{"), 400)


# ---------------------------------------------------------------------------------------------
# The command line.


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_longctx_serve_command(embedded):
    from conftest import serve_process

    port = _free_port()
    args = ["--model", "embedded", "--port", str(port), "--served-name", "smol"]
    err = tempfile.TemporaryFile("w+")
    with serve_process(*args, stderr=err) as (base_url, process):
        assert base_url == f"http://127.0.0.1:{port}/v1"
        models = httpx.get(base_url + "/models").json()
        assert [m["id"] for m in models["data"]] == ["smol"]
        # SIGTERM is a clean stop, even in the middle of a long prompt's forward pass (the
        # generation thread must end before the process does, or the C++ runtime aborts it).
        long = [{"role": "user", "content": "The sea is calm tonight. " * 600 + "Summarize."}]
        body = {"model": "smol", "messages": long, "max_tokens": 50}
        asking = threading.Thread(target=_post_quietly, args=(base_url + "/chat/completions", body))
        asking.start()
        deadline = time.monotonic() + 30
        while httpx.get(base_url.removesuffix("/v1") + "/health").json()["in_flight"] < 1:
            assert time.monotonic() < deadline, "the long request never got in"
            time.sleep(0.02)
        process.terminate()
        assert process.wait(120) == 0
        asking.join(30)
    err.seek(0)
    assert "terminate called" not in err.read()


def _post_quietly(url: str, body: dict) -> None:
    """A request whose server goes away under it: whatever comes back is not the point."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, json=body, timeout=120)


@pytest.mark.integration
def test_serve_on_a_busy_port_is_one_line_error(embedded, capsys):
    from core.cli.main import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        # A model not loaded yet: the busy port is found before any weights load.
        port = str(busy.getsockname()[1])
        assert main(["serve", "--port", port, "--rope-theta", "12345"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("longctx serve: error: cannot listen on 127.0.0.1:")
    assert len(err.splitlines()) == 1
