"""The generator against our own OpenAI-compatible server (embedded model) on 127.0.0.1.

End-to-end runs of the three tasks produce samples that `core.data.schema` accepts; a run
stopped half way (cancel event) or killed (SIGKILL of `longctx synth`) and started again sends
only the requests it had no reply for, counted on the server (`/_stats` message hashes); 429s,
5xx, refusals and broken JSON injected by the server are retried, re-asked or recorded, never a
crash. The embedded model writes poor JSON on its own, so the prompts here ask it to copy a
given answer: what is tested is the engine, not the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import reset_faults

from core.cli.main import build_parser, main
from core.cli.synth import config_from_args
from core.data import io, schema
from core.errors import LongCtxError
from core.serve.background import BackgroundServer
from core.synth import prompts
from core.synth.cache import ReplyCache
from core.synth.client import EndpointConfig, Generator
from core.synth.job import SynthConfig, SynthJob

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]
ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-SECRET-4242"
COPY_QA = (
    'Copy this JSON exactly, with nothing else: [{"question": "Who kept the lamp?", '
    '"answer": "Ann"}]\n\nText: {passage}'
)
PROMPTS = {
    "single_detail": COPY_QA,
    "multi_detail": "Ignore this text:\n{passages}\n\n" + COPY_QA.split("\n\n")[0],
    "compare": "Ignore this text:\n{passages}\n\n" + COPY_QA.split("\n\n")[0],
    "names": 'Copy this JSON exactly, with nothing else: ["Ann Miller", "Tom Baker"]\n\nText: {passage}',
    "biography": "{passages}\n\nWrite one sentence about {name}.",
}


@pytest.fixture(scope="module")
def server(embedded):
    with BackgroundServer(embedded, fault_injection=True) as running:
        yield running


@pytest.fixture
def fresh(server):
    return reset_faults(server)


@pytest.fixture(scope="module")
def corpus(workspace_home) -> Path:
    """Two short stories with named characters, and two notes on another subject."""
    folder = workspace_home / "synth-corpus"
    folder.mkdir(exist_ok=True)
    people = ["Ann Miller", "Tom Baker", "Rosa Diaz"]
    for k, name in enumerate(("a-gull.txt", "b-harbour.md")):
        paras = []
        for i in range(10):
            a, b = people[(i + k) % 3], people[(i + k + 1) % 3]
            paras.append(
                f"In the spring of {1900 + i + 20 * k}, {a} walked to the harbour with {b}. They "
                f"counted {i + 3} boats and talked about the lighthouse on Gull Island. {a} said "
                f"the lamp needed oil, and {b} promised to bring some from the market."
            )
        (folder / name).write_text("\n\n".join(paras))
    notes = [
        {
            "title": f"orbit-{i}",
            "text": "\n\n".join(
                f"Rocket {i}-{j} reached orbit around the moon; astronauts measured comets, planets "
                f"and the solar wind for {j + 2} days before the capsule returned."
                for j in range(6)
            ),
        }
        for i in range(2)
    ]
    (folder / "c-space.jsonl").write_text("\n".join(json.dumps(n) for n in notes) + "\n")
    return folder


def _config(server, tmp_path: Path, task: str, corpus: Path, **kwargs) -> SynthConfig:
    endpoint = {
        "base_url": server.base_url,
        "model": "embedded",
        "api_key": SECRET,
        "answer_tokens": 24,
        "temperature": 0.0,
        "concurrency": 1,
        "backoff_s": 0.05,
        "max_backoff_s": 0.5,
        "timeout_s": 60.0,
        **kwargs.pop("endpoint", {}),
    }
    settings = {
        "task": task,
        "source": str(corpus),
        "n_docs": 2,
        "min_tokens": 60,
        "max_tokens": 600,
        "chunk_tokens": 200,
        "qa_per_chunk": 1,
        "characters": 1,
        "cache_dir": str(tmp_path / "cache"),
        "out": str(tmp_path / "out.jsonl"),
        "prompts": PROMPTS,
        **kwargs,
    }
    return SynthConfig(**settings, endpoint=EndpointConfig(**endpoint))


def _stats(server) -> dict:
    return httpx.get(server.url + "/_stats").json()


def _server_hash(messages: list[dict]) -> str:
    """What the server records for a request (see core.serve.app._parse)."""
    digest = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(digest.encode()).hexdigest()[:16]


def _valid_file(path: Path) -> list[dict]:
    rows = list(io.iter_raw(io.open_source(path)))
    assert [r.problems for r in rows] == [[]] * len(rows)
    return [r.record for r in rows]


def _no_secret_under(*folders: Path) -> None:
    for folder in folders:
        for file in folder.rglob("*") if folder.is_dir() else [folder]:
            if file.is_file():
                assert SECRET not in file.read_text(errors="replace"), file


# ---------------------------------------------------------------------------------------------
# End to end.


def test_single_detail_end_to_end_then_a_rerun_sends_nothing(fresh, tmp_path, corpus, embedded):
    config = _config(
        fresh,
        tmp_path,
        "single-detail",
        corpus,
        chunks_per_doc=2,
        endpoint={"price_in": 2.0, "price_out": 8.0},
    )
    job = SynthJob(config, tokenizer=embedded.tokenizer)
    estimate = job.estimate()
    assert estimate.contexts == 2 and estimate.to_send == 4 and estimate.cost_usd > 0
    assert _stats(fresh)["requests"] == 0  # the dry run sent nothing

    seen, ticks = [], []
    result = job.run(on_sample=seen.append, progress=lambda d, t: ticks.append((d, t)))
    assert result.usage.sent == estimate.to_send and result.failures == []
    assert ticks[-1] == (estimate.to_send, estimate.to_send)
    assert result.cost_usd == pytest.approx(
        (result.usage.prompt_tokens * 2.0 + result.usage.completion_tokens * 8.0) / 1e6
    )
    samples = _valid_file(result.output)
    assert len(samples) == 2 and sorted(s["id"] for s in seen) == sorted(s["id"] for s in samples)
    assert {s["titles"][0] for s in samples} == {"a-gull.txt", "b-harbour.md"}
    for sample in samples:
        assert schema.check(sample) == [] and sample["task"] == "single-detail"
        assert sample["source"].startswith(str(corpus))
        first = sample["conversations"][0]["content"]
        assert "the lighthouse on Gull Island" in first and first.endswith("Who kept the lamp?")
        assert sample["generator"]["model"] == "embedded"
        assert sample["generator"]["base_url"] == fresh.base_url
        assert 60 <= sample["context_tokens"] <= 600
    stats = _stats(fresh)
    assert stats["by_status"] == {"200": estimate.to_send}
    assert len(set(stats["message_hashes"])) == estimate.to_send

    # The same run again: every reply comes from the cache, the file is the same.
    before = result.output.read_bytes()
    again = SynthJob(config, tokenizer=embedded.tokenizer).run()
    assert again.usage.sent == 0 and again.usage.cached == estimate.to_send
    assert _stats(fresh)["requests"] == estimate.to_send
    assert again.output.read_bytes() == before
    assert again.saved_usd == pytest.approx(result.cost_usd)
    _no_secret_under(tmp_path)


def test_biography_end_to_end(fresh, tmp_path, corpus, embedded):
    config = _config(fresh, tmp_path, "biography", corpus, chunks_per_doc=1, characters=2)
    result = SynthJob(config, tokenizer=embedded.tokenizer).run()
    assert result.failures == [] and result.usage.sent == 2 + 2 * 2
    samples = _valid_file(result.output)
    assert len(samples) == 2
    for sample in samples:
        assert sample["task"] == "biography"
        first, second = sample["characters"]  # the most mentioned first
        assert {first, second} == {"Ann Miller", "Tom Baker"}
        questions = [t["content"] for t in sample["conversations"][::2]]
        assert questions[0].endswith(f"\n\nWrite a biography of {first} based on the text above.")
        assert questions[1] == f"Write a biography of {second} based on the text above."
        assert all(t["content"].strip() for t in sample["conversations"][1::2])


def test_multi_detail_homogeneous_and_heterogeneous(fresh, tmp_path, corpus, embedded):
    config = _config(
        fresh, tmp_path, "multi-detail", corpus, multi_requests=1, passages=2, chunk_tokens=64
    )
    job = SynthJob(config, tokenizer=embedded.tokenizer)
    contexts = job.prepare()
    assert [c.kind for c in contexts] == ["document", "cluster"]
    cluster = contexts[1]
    # k-means put the two stories together, or the two space notes: never one of each.
    assert len({t.endswith(".jsonl") or "orbit" in t for t in cluster.titles}) == 1
    asks = [job.first_asks(c) for c in contexts]
    assert 'from "' in asks[1][0].messages[-1]["content"]  # passages named by document
    result = job.run()
    samples = _valid_file(result.output)
    assert [s["context_kind"] for s in samples] == ["document", "cluster"]
    assert samples[1]["conversations"][0]["content"].startswith("Document 1: ")


# The paper's prompt set: its notebooks' request structure, seen from the server.
# The embedded model copies reliably when the instruction comes last.
COPY = "\n\nCopy this JSON exactly, with nothing else: "
PAPER_PROMPTS = {
    "paper_single_detail": "Ignore this text ({n} questions):\n{passage}"
    + COPY
    + '[{"question": "Who kept the lamp?", "answer": "Ann"}]',
    "paper_multi_detail": "Ignore this text ({n} questions):\n{context}"
    + COPY
    + '[{"question": "Who kept the lamp?", "answer": "Ann"}]',
    "paper_biographies": "Ignore this text ({k} characters):\n{context}"
    + COPY
    + '[{"name": "Ann Miller", "summary": "Ann Miller walks to the harbour."}]',
}


def _paper(server, tmp_path, task, corpus, tokenizer, **kwargs) -> SynthJob:
    suggested = SynthConfig.suggested("paper", task)
    config = _config(
        server,
        tmp_path,
        task,
        corpus,
        prompt_set="paper",
        prompts=PAPER_PROMPTS,
        qa_per_chunk=suggested["qa_per_chunk"],
        multi_mode=suggested["multi_mode"],
        endpoint={"temperature": suggested["temperature"], "answer_tokens": 40},
        **kwargs,
    )
    return SynthJob(config, tokenizer=tokenizer)


def _sent_as_planned(server, asks: list) -> list[dict]:
    """The server got exactly these requests, each at temperature 0: what it recorded."""
    stats = _stats(server)
    assert sorted(stats["message_hashes"]) == sorted(_server_hash(a.messages) for a in asks)
    assert {s["temperature"] for s in stats["sampling"]} == {0.0}
    return stats["sampling"]


def test_paper_set_single_detail_asks_over_every_chunk_at_temperature_0(
    fresh, tmp_path, corpus, embedded
):
    job = _paper(fresh, tmp_path, "single-detail", corpus, embedded.tokenizer, n_docs=1)
    contexts = job.prepare()
    asks = [a for ctx in contexts for a in job.first_asks(ctx)]
    for ctx in contexts:
        mine = job.first_asks(ctx)
        # Every chunk of the context, each within chunk_tokens, one user message (no system).
        assert len(mine) >= 2 and all(job.count(a.evidence) <= 200 for a in mine)
        assert sum(job.count(a.evidence) for a in mine) >= 0.9 * ctx.tokens
        for a in mine:
            assert [m["role"] for m in a.messages] == ["user"]
            assert a.messages[0]["content"].startswith("Ignore this text (4 questions):")
    result = job.run()
    assert result.failures == [] and result.usage.sent == len(asks)
    _sent_as_planned(fresh, asks)
    samples = _valid_file(result.output)
    assert len(samples) == 1
    for sample in samples:
        assert sample["generator"]["prompt_set"] == "paper"
        assert sample["generator"]["temperature"] == 0.0
        assert sample["conversations"][0]["content"].endswith("Who kept the lamp?")


def test_paper_set_multi_detail_is_one_whole_context_request_for_10_questions(
    fresh, tmp_path, corpus, embedded
):
    job = _paper(fresh, tmp_path, "multi-detail", corpus, embedded.tokenizer)
    contexts = job.prepare()
    assert [c.kind for c in contexts] == ["document", "document"]
    plans = [job.first_asks(ctx) for ctx in contexts]
    for ctx, asks in zip(contexts, plans, strict=True):
        assert len(asks) == 1 and [m["role"] for m in asks[0].messages] == ["user"]
        content = asks[0].messages[0]["content"]
        assert content.startswith("Ignore this text (10 questions):") and ctx.text in content
    result = job.run()
    _sent_as_planned(fresh, [a for asks in plans for a in asks])
    samples = _valid_file(result.output)
    assert [s["generator"]["requests"] for s in samples] == [1, 1]
    assert all(len(s["conversations"]) >= 2 for s in samples), [
        s["conversations"][1:] for s in samples
    ]


def test_paper_set_biographies_come_from_one_whole_context_request(
    fresh, tmp_path, corpus, embedded
):
    job = _paper(fresh, tmp_path, "biography", corpus, embedded.tokenizer, characters=2)
    contexts = job.prepare()
    plans = [job.first_asks(ctx) for ctx in contexts]
    assert [len(p) for p in plans] == [1, 1]
    assert all(c.text in p[0].messages[0]["content"] for c, p in zip(contexts, plans, strict=True))
    assert "(2 characters)" in plans[0][0].messages[0]["content"]
    assert job.estimate().later_requests == 0  # nothing is asked per character afterwards
    result = job.run()
    assert result.usage.sent == 2
    _sent_as_planned(fresh, [a for asks in plans for a in asks])
    samples = _valid_file(result.output)
    assert len(samples) == 2
    for sample in samples:
        # The model copies loosely; what is checked is the engine: names found in the context,
        # one turn each, from the one request.
        first = sample["characters"][0]
        assert set(sample["characters"]) <= {"Ann Miller", "Tom Baker", "Rosa Diaz"}
        assert sample["conversations"][0]["content"].endswith(
            f"\n\nWrite a biography of {first} based on the text above."
        )
        assert sample["conversations"][1]["content"].strip()
        assert sample["generator"]["requests"] == 1


# ---------------------------------------------------------------------------------------------
# Stopping and resuming.


def test_a_cancelled_run_resumes_with_only_the_missing_requests(fresh, tmp_path, corpus, embedded):
    config = _config(
        fresh, tmp_path, "single-detail", corpus, n_docs=1, chunk_tokens=100, chunks_per_doc=3
    )
    job = SynthJob(config, tokenizer=embedded.tokenizer)
    planned = [a.messages for a in job.first_asks(job.prepare()[0])]
    assert len(planned) == 3
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 1:
            stop.set()

    first = job.run(progress=progress, cancel=stop)
    assert first.cancelled and first.usage.sent == 1 and first.samples == []
    second = SynthJob(config, tokenizer=embedded.tokenizer).run()
    assert second.usage.sent == len(planned) - 1 and second.usage.cached == 1
    hashes = _stats(fresh)["message_hashes"]
    assert sorted(hashes) == sorted(_server_hash(m) for m in planned)  # each sent exactly once
    assert len(second.samples) == 1


def test_a_killed_cli_run_resumes_with_only_the_missing_requests(fresh, tmp_path, corpus, embedded):
    prompt_file = tmp_path / "copy.txt"
    prompt_file.write_text(COPY_QA)
    argv = [
        "synth",
        "single-detail",
        "--source",
        str(corpus),
        "--n-docs",
        "1",
        "--min-tokens",
        "60",
        "--max-tokens",
        "400",
        "--chunk-tokens",
        "100",
        "--chunks-per-doc",
        "3",
        "--qa-per-chunk",
        "1",
        "--base-url",
        fresh.base_url,
        "--model",
        "embedded",
        "--answer-tokens",
        "24",
        "--temperature",
        "0",
        "--concurrency",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "out.jsonl"),
        "--prompt",
        f"single_detail={prompt_file}",
    ]
    config = config_from_args(build_parser().parse_args(argv))
    job = SynthJob(config, tokenizer=embedded.tokenizer)
    planned = [a.messages for a in job.first_asks(job.prepare()[0])]
    cache = ReplyCache(tmp_path / "cache")
    # The first request is answered, the second held for 15 s: the kill lands between them.
    _faults(fresh, {}, {"delay_s": 15})
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    child = subprocess.Popen(
        [sys.executable, "-m", "core.cli", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        # Killed once the server holds the second request (the first is answered by then).
        while (
            len(_stats(fresh)["message_hashes"]) < 2
            and child.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        out = child.communicate(timeout=30)[0].decode(errors="replace")
    assert child.returncode == -signal.SIGKILL, out
    gen = Generator(config.endpoint, cache=cache)
    cached = [m for m in planned if gen.is_cached(m)]
    assert len(planned) == 3 and cached == planned[:1], f"{len(cached)} cached\n{out}"
    killed_run = _stats(fresh)["message_hashes"]
    assert len(killed_run) == 2  # the answered request and the held one (concurrency 1)

    result = SynthJob(config, tokenizer=embedded.tokenizer).run()
    assert result.usage.cached == len(cached)
    assert result.usage.sent == len(planned) - len(cached)
    resumed = _stats(fresh)["message_hashes"][len(killed_run) :]
    assert not set(resumed) & {_server_hash(m) for m in cached}  # nothing paid twice
    assert sorted(set(killed_run + resumed)) == sorted(_server_hash(m) for m in planned)
    assert len(_valid_file(result.output)) == 1
    _no_secret_under(tmp_path / "cache")
    deadline = time.monotonic() + 60  # the held request of the killed client ends too
    while _stats(fresh)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _stats(fresh)["in_flight"] == 0


# ---------------------------------------------------------------------------------------------
# Faults.


def _faults(server, *faults: dict) -> None:
    httpx.post(server.url + "/_faults", json=list(faults)).raise_for_status()


def test_429_and_5xx_are_retried(fresh, tmp_path, corpus, embedded):
    config = _config(fresh, tmp_path, "single-detail", corpus, n_docs=1, chunks_per_doc=2)
    _faults(fresh, {"status": 429}, {"status": 500}, {"status": 503})
    result = SynthJob(config, tokenizer=embedded.tokenizer).run()
    assert result.failures == [] and result.usage.retries == 3 and result.usage.sent == 2
    assert _stats(fresh)["by_status"] == {"429": 1, "500": 1, "503": 1, "200": 2}
    assert len(_valid_file(result.output)) == 1


def test_exhausted_retries_and_refusals_are_recorded_not_raised(fresh, tmp_path, corpus, embedded):
    config = _config(
        fresh,
        tmp_path,
        "single-detail",
        corpus,
        n_docs=1,
        chunks_per_doc=2,
        endpoint={"max_retries": 1},
    )
    _faults(fresh, {"status": 500}, {"status": 502}, {"status": 400})
    result = SynthJob(config, tokenizer=embedded.tokenizer).run()
    reasons = sorted(f["reason"] for f in result.failures)
    assert len(reasons) == 2
    assert reasons[0].startswith("HTTP 400") and reasons[1].startswith("HTTP 502")
    assert sorted(f["attempts"] for f in result.failures) == [1, 2]
    logged = [json.loads(x) for x in result.failures_path.read_text().splitlines()]
    assert sorted(x["reason"] for x in logged) == reasons
    assert result.samples == [] and result.skipped and _valid_file(result.output) == []
    assert _stats(fresh)["by_status"] == {"500": 1, "502": 1, "400": 1}


def test_broken_json_is_asked_again_once(fresh, tmp_path, corpus, embedded):
    config = _config(fresh, tmp_path, "single-detail", corpus, n_docs=1, chunks_per_doc=2)
    job = SynthJob(config, tokenizer=embedded.tokenizer)
    planned = [a.messages for a in job.first_asks(job.prepare()[0])]
    _faults(fresh, {"broken_json": True})
    result = job.run()
    assert result.failures == [] and result.usage.sent == len(planned) + 1
    hashes = _stats(fresh)["message_hashes"]
    reask = [*planned[0][:-1], {**planned[0][-1]}]
    reask[-1]["content"] += prompts.REASK
    assert hashes == [_server_hash(planned[0]), _server_hash(reask), _server_hash(planned[1])]
    sample = _valid_file(result.output)[0]
    assert sample["generator"]["requests"] == len(planned) + 1


def test_a_refused_key_stops_the_run_with_a_fix(fresh, tmp_path, corpus, embedded):
    config = _config(fresh, tmp_path, "single-detail", corpus, n_docs=1, chunks_per_doc=2)
    _faults(fresh, {"status": 401})
    stop = threading.Event()
    with pytest.raises(LongCtxError, match="API key"):
        SynthJob(config, tokenizer=embedded.tokenizer).run(cancel=stop)
    assert _stats(fresh)["requests"] == 1  # stopped at once, not once per request
    assert stop.is_set()
    assert _valid_file(tmp_path / "out.jsonl") == []


# ---------------------------------------------------------------------------------------------
# The command line.


def test_cli_dry_run_prints_the_plan_and_sends_nothing(fresh, corpus, capsys):
    code = main(
        [
            "synth",
            "biography",
            "--source",
            str(corpus),
            "--n-docs",
            "2",
            "--min-tokens",
            "60",
            "--max-tokens",
            "400",
            "--chunk-tokens",
            "200",
            "--base-url",
            fresh.base_url,
            "--price-in",
            "2.5",
            "--price-out",
            "10",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "names 1/" in out and "first request:" in out and "cost at most $" in out
    assert "biography requests after them" in out and "dry run: nothing was sent" in out
    assert _stats(fresh)["requests"] == 0
