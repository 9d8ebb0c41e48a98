"""lm-evaluation-harness as the engine for standard suites: a tiny custom task built here from a
local JSON file, run on the embedded model (loaded once, handed to lm-eval) and through our own
OpenAI-compatible server on 127.0.0.1 (lm-eval's local-chat-completions); cells land in an
evaluation folder, resume and grow. MMLU 0-shot on a local multiple-choice file, averaged per subject
then per category."""

from __future__ import annotations

import json

import pytest

from core.cli.harness import mmlu_run
from core.errors import ConfigError, LongCtxError
from core.evals.backends import Endpoint, Target
from core.evals.harness import HarnessConfig, HarnessRun, summary
from core.evals.mmlu import scores
from core.models.loader import ModelSpec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]
ROWS = [("1", "1"), ("2", "3"), ("4", "4"), ("10", "5")]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """A generate-until task over a local JSON file, exact match as its metric."""
    folder = tmp_path_factory.mktemp("tasks")
    data = folder / "sums.json"
    rows = [{"question": f"What is {a} plus {b}?", "answer": str(int(a) + int(b))} for a, b in ROWS]
    data.write_text(json.dumps(rows))
    (folder / "sums.yaml").write_text(
        "task: longctx_sums\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}} Reply with the number only."\n'
        'doc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 8\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\n    ignore_case: true\n"
    )
    return folder


def test_a_config_refuses_what_cannot_run(tmp_path):
    with pytest.raises(ConfigError, match="tasks is empty"):
        HarnessConfig(tasks=[])
    with pytest.raises(ConfigError, match="is not a folder of task YAMLs"):
        HarnessConfig(tasks=["x"], include_path=str(tmp_path / "missing"))


def test_the_embedded_model_answers_a_local_task_and_resumes(embedded, task_dir, tmp_path):
    models = None  # the app's model cache, which already holds the session's embedded model
    config = HarnessConfig(tasks=["longctx_sums"], limit=2, include_path=str(task_dir))
    run = HarnessRun(config, Target(ModelSpec()), tmp_path / "h", models=models)
    cells = run.run_all()
    assert [c["key"] for c in cells] == ["longctx_sums-0", "longctx_sums-1"]
    for cell in cells:
        assert cell["expected"] in ("2", "5") and cell["answer"]
        assert cell["metrics"]["exact_match"] in (0.0, 1.0) and cell["score"] is not None
    record = json.loads((tmp_path / "h" / "config.json").read_text())
    assert record["kind"] == "harness" and record["total"] == 2 and record["window"] == 8192
    # Rerun: nothing asked again; a larger limit asks only the new documents.
    again = HarnessRun(config, Target(ModelSpec()), tmp_path / "h", models=models)
    assert list(again.run()) == []
    grown = HarnessRun(
        HarnessConfig(tasks=["longctx_sums"], limit=3, include_path=str(task_dir)),
        Target(ModelSpec()),
        tmp_path / "h",
        models=models,
    )
    assert [c["key"] for c in grown.run()] == ["longctx_sums-2"]
    assert set(summary(grown.cells())) == {"longctx_sums"}
    from core.evals.runner import folder_figure

    assert folder_figure(tmp_path / "h").data[0].x == ("longctx_sums",)
    with pytest.raises(LongCtxError, match="knows no task or group nope"):
        list(
            HarnessRun(
                HarnessConfig(tasks=["nope"], include_path=str(task_dir)),
                Target(ModelSpec()),
                tmp_path / "n",
                models=models,
            ).run()
        )


def test_a_stopped_lm_eval_folder_resumes_as_an_app_job(embedded, task_dir, tmp_path):
    """The Evaluate tab's Resume reopens an lm-eval folder from its config.json alone."""
    from core.evals import jobs

    config = HarnessConfig(tasks=["longctx_sums"], limit=3, chunk=1, include_path=str(task_dir))
    first = HarnessRun(config, Target(ModelSpec()), tmp_path / "h")
    for _ in first.run():
        break  # stopped after its first document
    reopened = jobs.reopen(tmp_path / "h")
    assert isinstance(reopened, HarnessRun) and reopened.config == config
    assert reopened.counts() == (1, 3)
    job = jobs.start(["harness-resume-test"], reopened)
    job.thread.join(timeout=300)
    assert job.state == "completed" and not job.error, job.error
    assert (job.already, job.done, job.total) == (1, 3, 3)
    assert [c["key"] for c in reopened.cells()] == [f"longctx_sums-{i}" for i in range(3)]
    assert reopened.figure().data[0].x == ("longctx_sums",)
    with pytest.raises(LongCtxError, match="is not an evaluation folder"):
        HarnessRun.open(tmp_path / "not-there")


@pytest.fixture(scope="module")
def server(embedded):
    from core.serve.background import BackgroundServer

    with BackgroundServer(embedded) as running:
        yield running


def test_our_server_answers_the_same_task_through_lm_eval(server, task_dir, tmp_path):
    target = Target(endpoint=Endpoint(server.base_url, "embedded", "local"))
    config = HarnessConfig(tasks=["longctx_sums"], limit=2, include_path=str(task_dir))
    cells = HarnessRun(config, target, tmp_path / "ep").run_all()
    assert [c["key"] for c in cells] == ["longctx_sums-0", "longctx_sums-1"]
    assert all(c["answer"] and c["score"] in (0.0, 1.0) for c in cells)


def test_mmlu_averages_per_subject_then_per_category():
    cells = [
        {"subject": "anatomy", "score": 1.0},
        {"subject": "anatomy", "score": 0.0},
        {"task": "mmlu_college_physics", "score": 1.0},
        {"subject": "philosophy", "score": 0.0},
        {"subject": "cooking", "score": 1.0},
    ]
    got = scores(cells)
    assert got["subjects"] == {
        "anatomy": 50.0,
        "college_physics": 100.0,
        "cooking": 100.0,
        "philosophy": 0.0,
    }
    assert got["categories"] == {"humanities": 0.0, "other": 100.0, "stem": 75.0}
    assert got["overall"] == pytest.approx(175 / 3) and got["questions"] == 5


def test_mmlu_on_a_local_file_scores_answer_letters(tmp_path):
    rows = [
        ("anatomy", "Which organ pumps blood?", ["Liver", "Heart", "Lung", "Skin"], 1),
        ("anatomy", "How many lungs do people have?", ["One", "Two", "Three", "Four"], 1),
        ("philosophy", "Who wrote the Republic?", ["Plato", "Kant", "Hume", "Locke"], 0),
    ]
    file = tmp_path / "mc.jsonl"
    file.write_text(
        "".join(
            json.dumps({"subject": s, "question": q, "choices": c, "answer": a}) + "\n"
            for s, q, c, a in rows
        )
    )
    run = mmlu_run(Target(ModelSpec()), str(file), out=str(tmp_path / "m"))
    cells = run.run_all()
    assert len(cells) == 3 and {c["answer"] for c in cells} <= {"A", "B", "C", "D"}
    assert [c["subject"] for c in cells] == ["anatomy", "anatomy", "philosophy"]
    got = scores(cells)
    assert set(got["categories"]) == {"stem", "humanities"} and got["questions"] == 3
