"""Faults, tested: a save killed mid-write, a server under load, and fuzzed requests.

Real parts throughout: the Data tab's save path in a child process that is SIGKILLed while it
writes; `longctx serve` in its own process hammered by 20 concurrent clients; and hypothesis
bodies fed to the server's request parsing, in-process and through the ASGI app, where a
scripted 503 (the fault-injection option) stands in front of the model for bodies that pass.
Waits poll observable state against deadlines; nothing sleeps and hopes.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from core import workspace
from core.data import io
from core.data.edit import EditSession
from core.errors import LongCtxError

ROOT = Path(__file__).resolve().parent.parent


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _wait_for(condition, within_s: float, what: str, every_s: float = 0.001):
    """Poll `condition()` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + within_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {within_s:g} s waiting for {what}"
        time.sleep(every_s)
    return value


# ---------------------------------------------------------------------------------------------
# 1. The app killed while saving a dataset leaves the old file intact.

# What the Data tab's Save button does (ui/data/sample.py `do_save`), without gradio: open the
# file, edit it, pick the target the way the tab does (in place, for a workspace JSONL) and save.
_SAVE_CHILD = """
import sys
from core.data import io
from core.data.edit import EditSession
from ui.data.common import save_target

session = EditSession(io.open_source(sys.argv[1]))
session.delete(0)
session.set_text(1, "edited by the save that gets killed")
target, _ = save_target(session.source, None)
print("saving", target, flush=True)
session.save(target)
print("saved", flush=True)
"""
_ROWS = 300_000  # ~36 MB: the child takes ~0.3 s to write it; it is caught ~1% in


def _write_dataset(path: Path, rows: int) -> None:
    filler = b"lorem ipsum dolor sit amet " * 3
    with open(path, "wb") as f:
        for start in range(0, rows, 10_000):
            f.write(
                b"".join(
                    b'{"id": %d, "text": "row %d %s"}\n' % (i, i, filler)
                    for i in range(start, min(rows, start + 10_000))
                )
            )


def _temp_files(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.tmp-")]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed into place between the listing and the stat
        return 0


@pytest.fixture
def big_dataset():
    """A ~36 MB JSONL file in its own folder under workspace/datasets, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="faults-", dir=workspace.subdir("datasets")))
    path = folder / "big.jsonl"
    _write_dataset(path, _ROWS)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def test_killed_save_leaves_the_old_file_intact(big_dataset):
    path, folder = big_dataset, big_dataset.parent
    before = _sha256(path)
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVE_CHILD, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()  # the child opened and edited the file; writing starts
        # "None": in place, as the tab saves a JSONL file that is already in the workspace.
        assert line == "saving None\n", f"child failed: {line!r} {child.stderr.read()}"

        # Kill once the temporary file is seen growing: the child is then mid-write.
        deadline, temp, last, size = time.monotonic() + 60, None, 0, 0
        while not (temp and last and size > last):
            assert child.poll() is None, "the save ended before it could be interrupted"
            assert time.monotonic() < deadline, "no temporary file grew within 60 s"
            last = size if temp else 0
            temps = _temp_files(folder, path.name)
            temp, size = (temps[0], _size(temps[0])) if temps else (None, 0)
            time.sleep(0.001)
        child.kill()
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    # The kill landed mid-write: the half-written temporary file is still there, never renamed.
    assert temp.exists(), "the save finished before SIGKILL landed; make _ROWS bigger"
    assert 0 < size <= temp.stat().st_size < path.stat().st_size
    assert _sha256(path) == before
    assert not io.backup_path(path).exists()  # the backup is only taken once the write is done
    check = io.validate(io.open_source(str(path)))
    assert check.rows == _ROWS and check.bad_rows == 0 and check.kinds["text"] == _ROWS

    # Nothing offers or reads the leftover as data: the Data tab's file list, and the folder.
    from ui.data.common import dataset_files

    listed = [p for _, p in dataset_files() if Path(p).parent == folder]
    assert listed == [str(path)]
    with pytest.raises(LongCtxError, match="not a datasets.save_to_disk folder"):
        io.open_source(str(folder))

    # A normal save afterwards works, in place, over the same file.
    session = EditSession(io.open_source(str(path)))
    session.set_text(0, "saved after the crash")
    result = session.save()
    assert result.rows == _ROWS and result.backup == io.backup_path(path)
    assert _sha256(result.backup) == before
    reopened = io.open_source(str(path))
    assert len(reopened) == _ROWS
    assert reopened.row(0).record == {"id": 0, "text": "saved after the crash"}
    assert reopened.row(_ROWS - 1).record["id"] == _ROWS - 1
    assert _temp_files(folder, path.name) == []  # the dead writer's leftover is swept away


# ---------------------------------------------------------------------------------------------
# 2. `longctx serve` under load: 20 clients for 30 s get answers or clean refusals, nothing else.

_CLIENTS, _SECONDS, _PER_REQUEST_S = 20, 30.0, 60.0
_WORDS = "sea tide moon river stone wind light page book night answer number city".split()


def _check_error(status: int, body: dict) -> str:
    """A clean refusal: 429 or 503 with OpenAI's error JSON. Returns the status as the outcome."""
    assert status in (429, 503), f"HTTP {status}: {body}"
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], body
    return str(status)


def _check_answer(content: object, finish: object, usage: dict | None, max_tokens: int) -> str:
    assert isinstance(content, str) and finish in ("stop", "length"), (content, finish)
    if usage is not None:
        assert usage["prompt_tokens"] > 0 and 0 <= usage["completion_tokens"] <= max_tokens
    return "ok"


def _by_httpx(http: httpx.Client, url: str, body: dict) -> str:
    if not body["stream"]:
        reply = http.post(url, json=body)
        if reply.status_code != 200:
            return _check_error(reply.status_code, reply.json())
        data = reply.json()
        choice = data["choices"][0]
        return _check_answer(
            choice["message"]["content"], choice["finish_reason"], data["usage"], body["max_tokens"]
        )
    with http.stream("POST", url, json=body) as reply:
        if reply.status_code != 200:
            return _check_error(reply.status_code, json.loads(reply.read()))
        lines = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]", lines
    events = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1]
    return _check_answer(text, finish, events[-1]["usage"], body["max_tokens"])


def _by_openai(client: openai.OpenAI, body: dict) -> str:
    try:
        if not body["stream"]:
            reply = client.chat.completions.create(**body)
            choice = reply.choices[0]
            usage = reply.usage.model_dump()
            return _check_answer(
                choice.message.content, choice.finish_reason, usage, body["max_tokens"]
            )
        chunks = list(client.chat.completions.create(**body))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        return _check_answer(text, finish, chunks[-1].usage.model_dump(), body["max_tokens"])
    except openai.APIStatusError as exc:
        return _check_error(exc.status_code, exc.response.json())


def _hammer(index: int, base_url: str, until: float, outcomes: Counter, failures: list) -> None:
    """One client: requests back to back until `until`, through httpx or the OpenAI client.

    `outcomes` and `failures` are this client's own: `Counter` updates are not atomic.
    """
    rng = random.Random(index)
    http = httpx.Client(timeout=_PER_REQUEST_S)
    client = openai.OpenAI(
        base_url=base_url, api_key="local", max_retries=0, timeout=_PER_REQUEST_S
    )
    with http, client:
        while time.monotonic() < until:
            words = " ".join(rng.choices(_WORDS, k=rng.randint(1, 200)))
            body = {
                "model": "tiny",
                "messages": [{"role": "user", "content": f"Tell me about: {words}"}],
                "max_tokens": rng.randint(1, 8),
                "temperature": rng.choice([0.0, 0.8]),
                "seed": rng.randrange(1 << 31),
                "stream": rng.random() < 0.5,
            }
            if body["stream"]:
                body["stream_options"] = {"include_usage": True}
            by = "httpx" if index % 2 else "openai"
            try:
                if by == "httpx":
                    outcome = _by_httpx(http, base_url + "/chat/completions", body)
                else:
                    outcome = _by_openai(client, body)
            except Exception as exc:  # a reset, a hang (timeout), a 500, a malformed answer
                failures.append(f"{by} stream={body['stream']}: {type(exc).__name__}: {exc}")
                outcome = "failed"
            outcomes[outcome] += 1


@pytest.fixture
def serve_process(tiny_llama_dir, tmp_path):
    """`longctx serve` on the tiny Llama in its own process: (base_url, process, log path)."""
    from conftest import free_port, serve_process

    log = tmp_path / "serve.log"
    args = [
        "--model",
        str(tiny_llama_dir),
        "--port",
        str(free_port()),
        "--served-name",
        "tiny",
        "--max-queue",
        "4",
        "--fault-injection",
    ]  # fault injection for /_stats: status counts
    with open(log, "w") as stderr, serve_process(*args, stderr=stderr) as (base_url, process):
        yield base_url, process, log


@pytest.mark.integration
def test_server_under_load_answers_or_refuses_cleanly(serve_process):
    base_url, process, log = serve_process
    root = base_url.removesuffix("/v1")
    counts = [Counter() for _ in range(_CLIENTS)]
    errors: list[list[str]] = [[] for _ in range(_CLIENTS)]
    until = time.monotonic() + _SECONDS
    threads = [
        threading.Thread(
            target=_hammer, args=(i, base_url, until, counts[i], errors[i]), daemon=True
        )
        for i in range(_CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(until - time.monotonic(), 0) + _PER_REQUEST_S + 30)
    assert not any(thread.is_alive() for thread in threads), "a client hung past its timeout"
    outcomes = sum(counts, Counter())
    failures = [failure for client in errors for failure in client]

    server_log = log.read_text()
    assert not failures, f"{len(failures)} failed, e.g. {failures[:5]}\n{server_log[-3000:]}"
    assert outcomes["ok"] > 0 and set(outcomes) <= {"ok", "429", "503"}, outcomes
    assert outcomes["429"] > 0, f"20 clients never filled a queue of 4: {outcomes}"

    # Still alive and well: every slot came back, the models list and a last chat answer.
    assert process.poll() is None, server_log[-3000:]
    _wait_for(
        lambda: httpx.get(root + "/health").json()["in_flight"] == 0,
        30,
        "the server to finish every request",
        every_s=0.05,
    )
    models = httpx.get(base_url + "/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    with openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=30) as final:
        reply = final.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Still there?"}], max_tokens=4
        )
    assert reply.choices[0].finish_reason in ("stop", "length")
    # The server counted what the clients saw: no request it could not answer or refuse.
    stats = httpx.get(root + "/_stats").json()
    assert "500" not in stats["by_status"], stats["by_status"]
    assert stats["requests"] == sum(outcomes.values()) + 1, (stats, outcomes)
    assert stats["by_status"].get("200", 0) == outcomes["ok"] + 1


# ---------------------------------------------------------------------------------------------
# 3. Fuzzed request bodies: a parsed request or a typed 4xx in OpenAI's shape, never a 500.
# (tests/test_data_fuzz.py fuzzes the dataset loader; these are the server's bodies.)

_ODD_TEXT = ["", " ", "\ud800", "\x00", "é🦙", "<|im_end|>", "{{ raise_exception('no') }}", "\n\n"]
_TEXT = st.text(max_size=30) | st.sampled_from(_ODD_TEXT)
_NUMBERS = (
    st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -1, 2**63, 2**64, -(2**63) - 1, 10**400])
    | st.floats()  # NaN and ±Infinity included: json writes them, and json.loads reads them back
)
_JSONISH = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=10,
)
_ROLES = st.sampled_from(["system", "user", "assistant"])
_VALID_MESSAGE = st.fixed_dictionaries({"role": _ROLES, "content": _TEXT})
_PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url"]) | _JSONISH}, optional={"text": _TEXT | _JSONISH}
)
_MESSAGE = st.one_of(
    _VALID_MESSAGE,
    st.fixed_dictionaries(
        {"role": _ROLES, "content": st.lists(_PART, max_size=3)}, optional={"name": _TEXT}
    ),
    st.fixed_dictionaries({"role": _ROLES | _JSONISH, "content": _TEXT | _JSONISH}),
)
# Every field with the right type but any value (out of range ones included); then up to two
# fields replaced by junk or dropped. Most bodies get past JSON and reach the deeper checks.
_TYPED_FIELDS = {
    "max_tokens": st.integers(1, 10**6) | st.integers() | st.sampled_from([10**30, 2**63]),
    "max_completion_tokens": st.integers(1, 10**6) | st.integers(),
    "temperature": st.floats(0, 2) | st.floats() | st.integers(-1, 3),
    "top_p": st.floats(0, 1) | st.floats() | st.integers(-1, 2),
    "stop": _TEXT | st.lists(_TEXT, max_size=6),
    "seed": _NUMBERS,
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "n": st.integers(-1, 3),
    "user": _TEXT,
}
_BODY = st.fixed_dictionaries(
    {"model": st.just("tiny"), "messages": st.lists(_MESSAGE, min_size=1, max_size=3)},
    optional=_TYPED_FIELDS,
)


@st.composite
def _bodies(draw) -> dict:
    body = draw(_BODY)
    for key in draw(st.lists(st.sampled_from(["model", "messages", *_TYPED_FIELDS]), max_size=2)):
        if draw(st.booleans()):
            body[key] = draw(_JSONISH)
        else:
            body.pop(key, None)
    return body


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # ASCII: a lone surrogate travels as its \u escape


_RAW_BODIES = st.one_of(
    _bodies().map(_dumps),
    _bodies().map(_dumps),
    _bodies().map(_dumps),
    _JSONISH.map(_dumps),
    st.binary(max_size=100),
    _bodies().map(_dumps).flatmap(lambda raw: st.integers(0, len(raw)).map(lambda n: raw[:n])),
)
_OK_PREFIX = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]'
_NASTY = [
    b"[" * 100_000,  # deeper than json's decoder can recurse
    b'{"model": "tiny", "messages": ' + b"[" * 900 + b"]" * 900 + b"}",
    _OK_PREFIX + b', "max_tokens": 1' + b"0" * 5000 + b"}",  # over Python's int digits limit
    _OK_PREFIX + b', "seed": 18446744073709551616}',  # 2**64: beyond torch's generator
    _OK_PREFIX + b', "temperature": NaN, "top_p": Infinity}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b"\xff\xfe{}",
    b"",
]


def _assert_typed_4xx(status: int, body: dict, allowed: tuple[int, ...] = (400, 404)) -> dict:
    assert status in allowed, f"HTTP {status}: {body}"
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] is None or isinstance(error["param"], str)
    return error


def _raw_examples(test):
    for raw in _NASTY:
        test = example(raw=raw)(test)
    return test


@settings(max_examples=300, deadline=None)
@given(raw=_RAW_BODIES)
@_raw_examples
def test_parse_gives_a_request_or_a_typed_4xx(raw):
    from core.serve.app import _parse
    from core.serve.turns import ServerState

    # `_parse` reads only the served name and the fault flag (on: it also hashes the messages).
    state = ServerState(None, "tiny", max_queue=0, faults=True)
    try:
        request, messages = _parse(raw, state)
    except Exception as exc:
        from core.serve.protocol import APIError

        event(f"refused: {getattr(exc, 'code', None)}")
        assert isinstance(exc, APIError), f"{type(exc).__name__}: {exc}"
        response = exc.response()  # renders: a message that cannot be encoded would fail here
        _assert_typed_4xx(response.status_code, json.loads(response.body))
        return
    event("parsed")
    assert request.model == "tiny" and len(messages) == len(request.messages) >= 1
    assert all(isinstance(m["content"], str) for m in messages)
    assert request.seed is None or -(2**63) <= request.seed < 2**64
    assert request.temperature is None or 0 <= request.temperature <= 2


@pytest.fixture(scope="module")
def asgi(tiny_llama_dir):
    """A test client of the app over the tiny Llama, in-process: max_queue=0, faults on."""
    from fastapi.testclient import TestClient

    from core.models.loader import ModelSpec, default_cache
    from core.serve.app import create_app

    tiny = default_cache.get(ModelSpec(str(tiny_llama_dir)))
    app = create_app(tiny, served_name="tiny", fault_injection=True, max_queue=0)
    with TestClient(app) as client:  # raises the server's uncaught exceptions in the test
        yield client


@pytest.mark.integration
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=_RAW_BODIES)
@_raw_examples
def test_app_refuses_fuzzed_bodies_with_typed_errors(asgi, raw):
    # A scripted 503 waits in front of the model: a body that passes parsing, the chat template
    # and the window check gets it instead of an answer, so no example spends time decoding.
    asgi.post("/_faults", json=[{"status": 503}]).raise_for_status()
    try:
        reply = asgi.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
    finally:
        asgi.delete("/_faults").raise_for_status()
    event(f"HTTP {reply.status_code}")  # --hypothesis-show-statistics: how deep bodies got
    error = _assert_typed_4xx(reply.status_code, reply.json(), allowed=(400, 404, 503))
    if reply.status_code == 503:
        assert error["code"] == "injected_fault"


_VALID_BODY = st.fixed_dictionaries(
    {
        "model": st.just("tiny"),
        "messages": st.lists(_VALID_MESSAGE, min_size=1, max_size=3),
        "max_tokens": st.integers(1, 3),
    },
    optional={
        "temperature": st.just(0.0) | st.floats(5e-324, 2),
        "top_p": st.floats(5e-324, 1),
        "stop": _TEXT | st.lists(_TEXT, max_size=4),
        "seed": st.integers(-(2**63), 2**64 - 1) | st.integers(),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "n": st.just(1),
        "user": _TEXT,
    },
)


@pytest.mark.integration
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_VALID_BODY)
@example(
    body={
        "model": "tiny",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 2,
        "temperature": 2.0,
        "top_p": 1e-30,
        "seed": -(2**63),
        "stop": ["", " "],
    }
)
def test_extreme_but_valid_bodies_are_answered(asgi, body):
    headers = {"content-type": "application/json"}
    reply = asgi.post("/v1/chat/completions", content=_dumps(body), headers=headers)
    event(f"HTTP {reply.status_code}")
    if reply.status_code != 200:  # e.g. a seed beyond 64 bits, a lone surrogate in a message
        _assert_typed_4xx(reply.status_code, reply.json())
        return
    if not body.get("stream"):
        choice = reply.json()["choices"][0]
        assert isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in ("stop", "length")
        return
    lines = [line for line in reply.text.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    finishes = [chunk["choices"][0]["finish_reason"] for chunk in chunks if chunk["choices"]]
    assert finishes[-1] in ("stop", "length")


@pytest.mark.integration
def test_back_to_back_requests_are_never_refused(asgi):
    # The app has max_queue=0: one request at a time. A client that sends its next request the
    # moment an answer ends must find the slot free (it used to be released a moment after the
    # last chunk was handed over, and about 1 request in 100 got a 429).
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    statuses = Counter(
        asgi.post("/v1/chat/completions", json={**body, "stream": i % 2 == 0}).status_code
        for i in range(100)
    )
    assert statuses == {200: 100}


@pytest.mark.integration
@pytest.mark.parametrize("sampling", [{"temperature": 1e-40}, {"temperature": 1, "top_p": 5e-324}])
def test_vanishing_temperature_or_top_p_is_answered(asgi, sampling):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    reply = asgi.post("/v1/chat/completions", json={**body, **sampling})
    assert reply.status_code == 200, reply.text
