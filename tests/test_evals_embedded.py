"""Evaluations on the real embedded model (SmolLM2-135M-Instruct): the NIAH grid retrieves the
needle, KV reuse answers exactly what independent `generate` answers, topics and passkey run,
the endpoint backend and the judge talk to our own server, and the CLI survives a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import reset_faults

from core.errors import LongCtxError
from core.evals.backends import Endpoint, LocalBackend, Target, full_answer
from core.evals.niah import NiahConfig
from core.evals.retrieval import PasskeyConfig, TopicsConfig
from core.evals.runner import Evaluation
from core.evals.scoring import Scorer
from core.models.loader import ModelSpec

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
LOCAL = Target(ModelSpec())


@pytest.fixture(scope="module")
def niah_run(embedded, tmp_path_factory):
    out = tmp_path_factory.mktemp("niah") / "grid"
    task = NiahConfig(lengths=[500, 1000, 2000], depths=[0, 50, 100])
    evaluation = Evaluation(task, LOCAL, out=out, backend=LocalBackend(embedded))
    return evaluation, evaluation.run_all()


def test_grid_up_to_2k_retrieves_the_needle(niah_run):
    evaluation, cells = niah_run
    assert len(cells) == 9
    mean = sum(c["score"] for c in cells) / len(cells)
    assert mean >= 0.9, [(c["key"], c["answer"]) for c in cells]
    for cell in cells:
        assert cell["prompt_tokens"] <= cell["length"]
    # Every prompt after the first reused the KV of the haystack before its needle.
    assert sum(c["reused_tokens"] > 0 for c in cells) == 8
    files = {p.name for p in evaluation.path.iterdir()}
    assert {"config.json", "cells.jsonl", "heatmap.html"} <= files
    config = json.loads((evaluation.path / "config.json").read_text())
    assert config["kind"] == "niah" and config["window"] == 8192 and config["total"] == 9


def test_kv_reuse_answers_exactly_like_independent_generate(embedded, niah_run):
    import torch

    from core.models.generation import eos_ids

    evaluation, cells = niah_run
    answers = {c["key"]: c["answer"] for c in cells}
    wanted = {"L500-D50", "L1000-D100"}  # both reuse a prefix; generate recomputes it
    prompts = [p for p in evaluation.task.prompts(embedded.tokenizer) if p.key in wanted]
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt.ids])
            out = embedded.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=evaluation.task.max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(eos_ids(embedded)),
                pad_token_id=embedded.tokenizer.pad_token_id,
            )
            text = embedded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            assert full_answer(prompt.answer_prefix, text) == answers[prompt.key], prompt.key


def test_topics_and_passkey_fill_their_folders(embedded, tmp_path):
    backend = LocalBackend(embedded)
    topics = Evaluation(
        TopicsConfig(n_topics=[1, 2], trials=1, turn_tokens=80, max_new_tokens=12),
        LOCAL,
        out=tmp_path / "topics",
        backend=backend,
    )
    cells = topics.run_all()
    assert [c["n_topics"] for c in cells] == [1, 2]
    assert cells[0]["expected"] == cells[1]["expected"]  # the same first topic
    assert cells[1]["reused_tokens"] > 0.5 * cells[0]["prompt_tokens"]  # the shared first turn
    assert all(c["depth"] == 0.0 and c["score"] in (0.0, 1.0) for c in cells)
    assert topics.figure().data[0].name == "embedded"

    passkey = Evaluation(
        PasskeyConfig(lengths=[300], depths=[0, 100], max_new_tokens=12),
        LOCAL,
        out=tmp_path / "passkey",
        backend=backend,
    )
    cells = passkey.run_all()
    assert sorted(c["key"] for c in cells) == ["L300-D0-T0", "L300-D100-T0"]
    assert all(c["expected"].isdigit() and len(c["expected"]) == 5 for c in cells)
    assert (tmp_path / "passkey" / "heatmap.html").exists()


@pytest.fixture(scope="module")
def server(embedded):
    from core.serve.background import BackgroundServer

    with BackgroundServer(embedded, fault_injection=True) as running:
        yield running


def test_endpoint_backend_and_judge_through_our_server(server, tmp_path):
    target = Target(endpoint=Endpoint(server.base_url, "embedded", "local"))
    judge = Scorer("judge", Endpoint(server.base_url, "embedded", "local"))
    evaluation = Evaluation(
        NiahConfig(lengths=[400], depths=[50]), target, judge, out=tmp_path / "ep"
    )
    cells = evaluation.run_all()
    assert [c["key"] for c in cells] == ["L400-D50"]
    for cell in cells:
        assert "Dolores Park" in cell["answer"] and cell["completion_tokens"] > 5
        # A 135M model cannot grade: the reply is kept, the score left blank, the run goes on.
        assert cell["score"] is None and cell["judge_reply"]
    saved = (tmp_path / "ep" / "config.json").read_text()
    assert "local" not in json.loads(saved)["target"]["endpoint"].values()  # no key on disk
    assert json.loads(saved)["window"] == 8192  # read from the tokenizer's model config


def test_the_answer_prefix_is_continued_alike_locally_and_through_the_endpoint(
    embedded, server, tmp_path
):
    task = PasskeyConfig(lengths=[400], depths=[0, 50, 100], max_new_tokens=8)
    local = Evaluation(task, LOCAL, out=tmp_path / "local", backend=LocalBackend(embedded))
    target = Target(endpoint=Endpoint(server.base_url, "embedded", "local"))
    remote = {c["key"]: c for c in Evaluation(task, target, out=tmp_path / "ep").run_all()}
    for cell in local.run_all():
        # The server rendered the prefix as the start of the answer (continue_final_message),
        # not as a closed turn followed by a new one (a few tokens more), and the
        # model went on from there. (One token apart: the local backend tokenizes the template's
        # "\n\n" before the filler on its own, the server together with the filler.)
        assert abs(cell["prompt_tokens"] - remote[cell["key"]]["prompt_tokens"]) <= 1
        for answer in (cell["answer"], remote[cell["key"]]["answer"]):
            assert answer.startswith("The pass key is " + cell["expected"]), (cell, answer)


def test_endpoint_refusal_is_a_clear_error(server, tmp_path):
    httpx.post(server.url + "/_faults", json=[{"status": 400}]).raise_for_status()
    target = Target(endpoint=Endpoint(server.base_url, "embedded", "local"))
    evaluation = Evaluation(NiahConfig(lengths=[300], depths=[0]), target, out=tmp_path / "x")
    with pytest.raises(LongCtxError, match=r"refused the prompt L300-D0 \(HTTP 400\)"):
        evaluation.run_all()
    assert evaluation.cells() == []


def test_cli_run_killed_half_way_resumes_without_recomputing(server, tmp_path):
    # Through the endpoint, whose server can hold one request: its 4 cells go out together, the
    # second request to arrive is held for 20 s, and the kill lands once the other three are in.
    reset_faults(server)
    httpx.post(server.url + "/_faults", json=[{}, {"delay_s": 20}]).raise_for_status()
    out = tmp_path / "cli-run"
    cmd = [
        sys.executable,
        "-m",
        "core.cli",
        "niah",
        "--model",
        "embedded",
        "--base-url",
        server.base_url,
        "--api-key",
        "local",
    ]
    cmd += ["--lengths", "300,600", "--depths", "0,100", "--out", str(out)]
    cells_file = out / "cells.jsonl"
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (cells_file.exists() and cells_file.read_text().count("\n") >= 3):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "three cells did not finish within 120 s"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    kept = cells_file.read_text().splitlines()
    assert len(kept) == 3

    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"{4 - len(kept)} cells to run, {len(kept)} already done" in second.stdout
    lines = cells_file.read_text().splitlines()
    assert lines[: len(kept)] == kept and len(lines) == 4
    cells = [json.loads(line) for line in lines]
    assert len({c["key"] for c in cells}) == 4
    for cell in cells:
        assert {"length", "depth", "answer", "score"} <= set(cell)
    # Only the cells the kill left undone were computed again.
    rerun = [line.split()[0] for line in second.stdout.splitlines() if line.startswith("L")]
    assert sorted(rerun) == sorted({c["key"] for c in cells} - {json.loads(k)["key"] for k in kept})
    assert "mean score" in second.stdout and (out / "heatmap.html").exists()
    deadline = time.monotonic() + 60  # the held request of the killed client ends too
    while httpx.get(server.url + "/_stats").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(server.url + "/_stats").json()["in_flight"] == 0
