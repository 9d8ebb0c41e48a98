"""Safety rules that hold across the app: keys never land on disk or in logs, paths from the
UI stay inside the allowed roots, names never reach a shell, YAML never runs code."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from core import workspace
from core.errors import LongCtxError

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-NEVER-ON-DISK-7171"
HUB_TOKEN = "hf_test_NEVER_ON_DISK_7272"


# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "datasets/../../../etc/passwd", "~/../../etc/shadow"],
)
def test_traversal_out_of_the_allowed_roots_is_refused(name):
    from ui.data.common import resolve_spec, writable_path

    with pytest.raises(LongCtxError, match="outside"):
        workspace.resolve_inside(name)
    with pytest.raises(LongCtxError, match="outside"):
        resolve_spec(name + "[3]")
    with pytest.raises(LongCtxError, match="outside"):
        writable_path(name)


def test_a_link_inside_the_workspace_pointing_out_is_refused(tmp_path):
    link = workspace.subdir("datasets") / "sneaky-link"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc")
    try:
        with pytest.raises(LongCtxError, match="outside"):
            workspace.resolve_inside("datasets/sneaky-link/passwd")
    finally:
        link.unlink()


def test_pages_show_root_relative_paths_not_the_servers():
    sample = ROOT / "assets" / "sample" / "longctx-sample.jsonl"
    assert workspace.shown(sample) == "assets/sample/longctx-sample.jsonl"
    assert workspace.shown(f"{sample}[5]") == "assets/sample/longctx-sample.jsonl[5]"
    run = workspace.subdir("evals") / "niah-x"
    assert workspace.shown(run) == "workspace/evals/niah-x"
    # Only whole folder names match; other paths and Hub ids stay as they are.
    assert workspace.shown(f"{ROOT / 'assets'}-old/x") == f"{ROOT / 'assets'}-old/x"
    assert workspace.shown("hub:org/name") == "hub:org/name"
    from core.models.loader import ModelSpec

    tuned = ModelSpec(adapter=str(workspace.subdir("runs") / "r1" / "adapter"), rope_theta=1e6)
    assert tuned.label == "embedded + workspace/runs/r1/adapter (rope_theta=1e+06)"


def test_model_folders_from_the_ui_must_be_inside_the_roots(tiny_llama_dir):
    assert workspace.model_from_user("embedded") == "embedded"
    assert workspace.model_from_user("HuggingFaceTB/SmolLM2-135M-Instruct").startswith("Hugging")
    for name in ("/etc", "../../..", "~", str(tiny_llama_dir)):
        with pytest.raises(LongCtxError, match="outside"):
            workspace.model_from_user(name)
    inside = workspace.subdir("runs")
    assert workspace.model_from_user(str(inside)) == str(inside.resolve())


def test_train_form_refuses_data_paths_outside_the_roots():
    from ui.train.tab import config_from_form

    names = ["name", "model", "data"]
    rows = [["../../etc/passwd", "", 0, 0]]
    with pytest.raises(LongCtxError, match="outside"):
        config_from_form(names, ["x", "embedded", rows])


# -- names and YAML ------------------------------------------------------------------------------


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    from core.train.config import TrainConfig

    canary = tmp_path / "canary"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'name: !!python/object/apply:os.system ["touch {canary}"]\nmodel: embedded\n')
    with pytest.raises(LongCtxError):
        TrainConfig.from_yaml(evil)
    assert not canary.exists()


@pytest.mark.integration
def test_a_run_named_like_a_shell_command_is_just_a_name(tiny_llama_dir, tmp_path):
    from core.train import runs
    from core.train.config import DataSource, TrainConfig

    canary = tmp_path / "canary"
    config = TrainConfig(
        name=f"x; touch {canary}; rm -rf /",
        model=str(tiny_llama_dir),
        quantization="none",
        precision="fp32",
        max_length=256,
        max_steps=1,
        global_batch_size=1,
        data=[DataSource(procedural="keys", n=2, length=120)],
    )
    run_dir = runs.launch(config)
    assert ";" not in run_dir.name and " " not in run_dir.name and "/" not in run_dir.name
    command = runs.read_status(run_dir)["command"]
    assert isinstance(command, list) and not any(";" in arg for arg in command)
    assert runs.wait(run_dir, timeout=300)["state"] == "completed", runs.tail_log(run_dir)
    assert TrainConfig.from_yaml(run_dir / "config.yaml").name == config.name  # kept, verbatim
    assert not canary.exists()


# -- keys ----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_no_key_or_token_is_written_after_runs_that_used_them(embedded, caplog, capfd, tmp_path):
    from core import chat as core_chat
    from core.evals.backends import Endpoint, Target
    from core.evals.retrieval import PasskeyConfig
    from core.evals.runner import Evaluation
    from core.models.generation import SamplingParams
    from core.serve.background import BackgroundServer
    from core.synth.client import EndpointConfig
    from core.synth.job import SynthConfig, SynthJob
    from core.train import export

    caplog.set_level(logging.DEBUG)
    card_folder = tmp_path / "model"
    card_folder.mkdir()
    (card_folder / "README.md").write_text("A model card.")
    corpus = workspace.subdir("datasets") / "safety-corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "story.txt").write_text(
        " ".join(
            f"In {1900 + i} Ann Miller walked to the harbour and counted {i + 3} boats."
            for i in range(60)
        )
    )
    with BackgroundServer(embedded) as server:
        endpoint = EndpointConfig(
            base_url=server.base_url,
            model="embedded",
            api_key=KEY,
            answer_tokens=16,
            concurrency=1,
            timeout_s=60.0,
        )
        synth = SynthConfig(
            task="single-detail",
            source=str(corpus),
            n_docs=1,
            min_tokens=50,
            max_tokens=400,
            chunk_tokens=200,
            qa_per_chunk=1,
            endpoint=endpoint,
        )
        SynthJob(synth).run()
        target = Target(endpoint=Endpoint(server.base_url, "embedded", KEY), tokenizer="embedded")
        Evaluation(PasskeyConfig(lengths=[200], depths=[50], max_new_tokens=8), target).run_all()
        chat_target = core_chat.ChatTarget(
            kind=core_chat.ENDPOINT,
            base_url=server.base_url,
            api_key=KEY,
            endpoint_model="embedded",
        )
        reply = core_chat.stream_reply(
            chat_target, [{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=4)
        )
        assert list(reply)
    with pytest.raises(LongCtxError) as pushed:  # offline: the Hub cannot be reached
        export.push(card_folder, "someone/model", token=HUB_TOKEN)
    assert HUB_TOKEN not in str(pushed.value)

    printed = capfd.readouterr()
    for secret in (KEY, HUB_TOKEN):
        assert secret not in caplog.text and secret not in printed.out + printed.err
        for file in workspace.home().rglob("*"):
            if file.is_file() and not file.is_symlink():
                assert secret.encode() not in file.read_bytes(), file
    assert any(workspace.subdir("evals").rglob("cells.jsonl"))  # the runs did write their files
    assert json.loads(next(workspace.subdir("evals").rglob("config.json")).read_text())
