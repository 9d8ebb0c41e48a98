"""Evaluation folders: cells.jsonl survives a torn line, a rerun skips finished cells, a folder
refuses a different evaluation; the runner on a tiny random Llama (fast, real forward passes)."""

from __future__ import annotations

import json
import threading

import pytest

from core.errors import LongCtxError
from core.evals import results
from core.evals.backends import Endpoint, LocalBackend, Target
from core.evals.niah import NiahConfig
from core.evals.retrieval import PASSKEY_TEMPLATE_V1, PasskeyConfig
from core.evals.runner import Evaluation
from core.models.loader import ModelSpec


def test_cell_log_appends_and_repairs_a_torn_last_line(tmp_path):
    log = results.CellLog(tmp_path)
    log.append({"key": "a", "score": 1.0})
    with log.path.open("a") as f:
        f.write('{"key": "b", "sco')  # killed mid-write
    assert [c["key"] for c in results.read_cells(tmp_path)] == ["a"]
    log = results.CellLog(tmp_path)
    assert log.keys == {"a"}
    log.append({"key": "c", "score": 0.5})
    assert [json.loads(line)["key"] for line in log.path.read_text().splitlines()] == ["a", "c"]


def test_eval_ids_name_kind_and_model():
    assert results.new_eval_id("niah", "org/My Model_v2").startswith("niah-my-model-v2-")
    # Folder names say what was evaluated: the run an adapter came from, the RoPE base written
    # the way it is meant (1e6, never a '1e-06' made of '1e+06'), an endpoint's model.
    tuned = ModelSpec(adapter="/w/runs/20261129-004208-cpu-keys/adapter", rope_theta=1e6)
    assert Target(model=tuned).slug == "embedded-cpu-keys-rope-1e6"
    hub = ModelSpec(
        name="meta-llama/Meta-Llama-3-8B-Instruct",
        rope_theta=2e8,
        adapter="namespace-Pt/Llama-3-8B-Instruct-80K-QLoRA",
    )
    assert Target(model=hub).slug == (
        "Meta-Llama-3-8B-Instruct-Llama-3-8B-Instruct-80K-QLoRA-rope-2e8"
    )
    assert Target(model=ModelSpec(rope_theta=500000.0)).slug == "embedded-rope-500000"
    endpoint = Target(endpoint=Endpoint("http://127.0.0.1:8000/v1", "gpt-4o"))
    assert results.new_eval_id("niah", endpoint.slug).startswith("niah-gpt-4o-2")
    assert results.new_eval_id("passkey", Target(model=tuned).slug).startswith(
        "passkey-embedded-cpu-keys-rope-1e6-2"
    )


@pytest.fixture(scope="module")
def tiny_backend(tiny_llama_dir):
    from core.models.loader import load_model

    return LocalBackend(load_model(ModelSpec(name=str(tiny_llama_dir))))


def _task(**kw):
    return NiahConfig(**{"lengths": [200, 300], "depths": [0, 100], "max_new_tokens": 4, **kw})


@pytest.mark.integration
def test_cancelled_run_resumes_without_recomputing(tmp_path, tiny_backend, tiny_llama_dir):
    target = Target(ModelSpec(name=str(tiny_llama_dir)))
    out = tmp_path / "ev"
    cancel = threading.Event()
    seen = []

    def progress(done, total, cell):
        seen.append((done, total))
        if done == 2:
            cancel.set()

    first = Evaluation(_task(), target, out=out, backend=tiny_backend)
    assert first.pending() == ["L200-D0", "L200-D100", "L300-D0", "L300-D100"]
    done_first = [c["key"] for c in first.run(progress, cancel)]
    assert len(done_first) == 2 and seen == [(0, 4), (1, 4), (2, 4)]
    lines = (out / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 2 and (out / "heatmap.html").exists()

    computed_before = tiny_backend.stats["prompt_tokens"]
    again = Evaluation.open(out, backend=tiny_backend)
    pending = again.pending()
    assert sorted(pending) == sorted(set(first.task.cell_keys()) - set(done_first))
    new = list(again.run())
    assert sorted(c["key"] for c in new) == sorted(pending)
    # Only the two new prompts were fed to the model.
    assert tiny_backend.stats["prompt_tokens"] - computed_before == sum(
        c["prompt_tokens"] for c in new
    )
    cells = again.cells()
    assert len(cells) == 4 and (out / "cells.jsonl").read_text().splitlines()[:2] == lines
    for cell in cells:
        assert {"length", "depth", "answer", "score", "prompt_tokens"} <= set(cell)
    assert list(Evaluation.open(out, backend=tiny_backend).run()) == []  # nothing left


@pytest.mark.integration
def test_a_folder_refuses_a_different_evaluation_but_grid_may_grow(
    tmp_path, tiny_backend, tiny_llama_dir
):
    target = Target(ModelSpec(name=str(tiny_llama_dir)))
    out = tmp_path / "ev"
    Evaluation(_task(lengths=[200], depths=[0]), target, out=out, backend=tiny_backend).run_all()
    with pytest.raises(LongCtxError, match="differs in needle"):
        Evaluation(_task(needle="Another needle."), target, out=out)
    grown = Evaluation(_task(lengths=[200], depths=[0, 100]), target, out=out, backend=tiny_backend)
    assert grown.pending() == ["L200-D100"]
    assert results.read_config(out)["total"] == 2
    assert results.list_evals(tmp_path)[0]["id"] == "ev"


@pytest.mark.integration
def test_a_folder_from_before_answer_prefixes_resumes_without_one(
    tmp_path, tiny_backend, tiny_llama_dir
):
    target = Target(ModelSpec(name=str(tiny_llama_dir)))
    out = tmp_path / "old"
    old_task = PasskeyConfig(
        lengths=[200],
        depths=[0, 100],
        max_new_tokens=4,
        answer_prefix="",
        template=PASSKEY_TEMPLATE_V1,
    )
    Evaluation(old_task, target, out=out, backend=tiny_backend).run_all()
    # As an older version wrote it: no answer prefix, no passkey template, one cell to go.
    config = json.loads((out / "config.json").read_text())
    del config["task"]["answer_prefix"], config["task"]["template"]
    (out / "config.json").write_text(json.dumps(config))
    lines = (out / "cells.jsonl").read_text().splitlines()
    (out / "cells.jsonl").write_text(lines[0] + "\n")

    resumed = Evaluation.open(out, backend=tiny_backend)
    assert resumed.task == old_task and len(resumed.pending()) == 1
    (prompt,) = resumed.task.prompts(tiny_backend.tokenizer, skip=resumed.log.keys)
    assert prompt.messages[-1]["role"] == "user" and prompt.answer_prefix == ""
    assert prompt.messages[-1]["content"].startswith("There is an important piece")
    assert len(list(resumed.run())) == 1 and len(resumed.cells()) == 2
    assert results.read_config(out)["task"]["answer_prefix"] == ""
    # Asked again with today's defaults (a prefix), the folder says how to resume it instead.
    config["task"].pop("answer_prefix", None)
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(LongCtxError, match=r"differs in answer_prefix.*--answer-prefix ''"):
        Evaluation(
            PasskeyConfig(
                lengths=[200], depths=[0, 100], max_new_tokens=4, template=PASSKEY_TEMPLATE_V1
            ),
            target,
            out=out,
        )


def test_answer_rows_put_failures_first_and_cut_long_texts():
    record = {"kind": "niah", "task": {"question": "What is the best thing to do?"}}
    cells = [
        {
            "key": "L1000-D0",
            "prompt_tokens": 990,
            "expected": "eat a sandwich",
            "answer": "Eat a sandwich.",
            "score": 1.0,
        },
        {
            "key": "L1000-D50",
            "prompt_tokens": 991,
            "expected": "eat a sandwich",
            "answer": "x" * 500,
            "score": 0.0,
        },
        {
            "key": "L2000-D0",
            "prompt_tokens": 1990,
            "expected": "eat a sandwich",
            "answer": "?",
            "score": None,
        },
    ]
    rows = results.answer_rows(record, cells)
    assert [r[0] for r in rows] == ["L2000-D0", "L1000-D50", "L1000-D0"]
    assert rows[2] == [
        "L1000-D0",
        990,
        "What is the best thing to do?",
        "eat a sandwich",
        "Eat a sandwich.",
        1.0,
    ]
    assert len(rows[1][4]) == 300 and rows[1][4].endswith("…")
    # Held-out samples ask a question per cell; perplexity answers nothing.
    own = results.answer_rows({"kind": "samples"}, [{**cells[0], "question": "Which food?"}])
    assert own[0][2] == "Which food?"
    assert results.answer_rows({"kind": "perplexity"}, [{"key": "L1-W0", "ppl": 3.0}]) == []
