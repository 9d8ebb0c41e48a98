"""Perplexity against context length: exact token losses without a full logit table, windows
that never repeat text, a resumable folder, curves, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from core.errors import ConfigError, LongCtxError
from core.evals import perplexity
from core.evals.backends import Endpoint, LocalBackend, Target
from core.evals.perplexity import PerplexityConfig
from core.evals.runner import Evaluation
from core.models import nll
from core.models.loader import ModelSpec, load_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_model(ModelSpec(str(tiny_llama_dir), dtype="float32"))


def test_token_losses_equal_the_models_own_loss_in_chunks(tiny):
    import torch

    ids = list(range(5, 405, 3))  # 134 tokens
    with torch.inference_mode():
        loss = tiny.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    nlls = nll.token_nlls(tiny.model, ids, chunk=16)  # 9 chunks, the last one short
    assert len(nlls) == len(ids) - 1
    assert sum(nlls) / len(nlls) == pytest.approx(loss, abs=1e-5)


def test_token_losses_go_through_a_lora_adapter(tiny):
    import torch
    from peft import LoraConfig, get_peft_model

    ids = list(range(7, 207, 2))
    plain = nll.token_nlls(tiny.model, ids)
    peft_model = get_peft_model(tiny.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    try:
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.5)  # B starts at zero: make the adapter act
        with torch.inference_mode():
            x = torch.tensor([ids])
            loss = peft_model(input_ids=x, labels=x).loss.item()
        tuned = nll.token_nlls(peft_model, ids, chunk=32)
        assert sum(tuned) / len(tuned) == pytest.approx(loss, abs=1e-5)
        assert tuned != pytest.approx(plain, abs=1e-3)  # the adapter changed the losses
    finally:
        peft_model.unload()


def test_windows_are_distinct_stretches_and_lengths_share_them(embedded_tokenizer):
    task = PerplexityConfig(lengths="100,300", windows=3)
    prompts = list(task.prompts(embedded_tokenizer))
    assert [p.key for p in prompts] == [f"L{n}-W{w}" for n in (100, 300) for w in range(3)]
    assert all(len(p.ids) == p.info["length"] for p in prompts)
    by_key = {p.key: p.ids for p in prompts}
    for w in range(3):  # every length is measured on the same text: shorter is a prefix
        assert by_key[f"L300-W{w}"][:100] == by_key[f"L100-W{w}"]
        assert prompts[w].info["start"] == 300 * w
    # No window repeats another's text.
    starts = [tuple(by_key[f"L300-W{w}"][1:40]) for w in range(3)]
    assert len(set(starts)) == 3
    skipped = list(task.prompts(embedded_tokenizer, skip={"L100-W0", "L300-W2"}))
    assert [p.key for p in skipped] == ["L100-W1", "L100-W2", "L300-W0", "L300-W1"]


def test_a_source_too_short_for_the_windows_is_refused_not_repeated(embedded_tokenizer, tmp_path):
    from core import workspace

    (tmp_path / "short.txt").write_text("Only a few words here. " * 20)
    workspace.allow_root(tmp_path)
    task = PerplexityConfig(lengths="500", windows=2, source=str(tmp_path))
    with pytest.raises(LongCtxError, match=r"holds \d+ tokens, and 1,000 are needed .*repeated"):
        list(task.prompts(embedded_tokenizer))


def test_one_book_is_a_source(embedded_tokenizer, tmp_path):
    from conftest import make_epub

    from core import workspace

    body = "".join(f"<p>Chapter one, line {i}: the tide came in at dawn.</p>" for i in range(60))
    book = make_epub(tmp_path / "tides.epub", [("one.xhtml", body)])
    workspace.allow_root(tmp_path)
    [prompt] = PerplexityConfig(lengths="200", windows=1, source=str(book)).prompts(
        embedded_tokenizer
    )
    assert "Chapter one, line 0" in embedded_tokenizer.decode(prompt.ids)


def test_settings_are_checked():
    with pytest.raises(ConfigError) as err:
        PerplexityConfig(lengths="8, abc", windows=0, source="/no/such/folder")
    text = str(err.value)
    assert "lengths" in text and "windows must be 1..64" in text and "/no/such/folder" in text


def test_an_endpoint_is_refused_with_the_reason():
    target = Target(endpoint=Endpoint("http://127.0.0.1:9/v1", "some-model"))
    with pytest.raises(LongCtxError, match="endpoint does not return"):
        Evaluation(PerplexityConfig(lengths="100", windows=1), target)


def test_cells_resume_and_draw_curves(tiny, workspace_home):
    task = PerplexityConfig(lengths="64,128", windows=2)
    target = Target(model=ModelSpec("tiny"))
    out = workspace_home / "evals" / "ppl-tiny"
    first = Evaluation(task, target, out=out, backend=LocalBackend(tiny))
    cancel = __import__("threading").Event()
    seen = []
    for cell in first.run(cancel=cancel):
        seen.append(cell)
        if len(seen) == 3:
            cancel.set()
    assert len(first.cells()) == 3
    again = Evaluation.open(out, backend=LocalBackend(tiny))
    assert again.pending() == ["L128-W1"]
    new = again.run_all()
    assert len(new) == 4
    cell = next(c for c in new if c["key"] == "L128-W0")
    assert cell["tokens"] == 127 and cell["ppl"] == pytest.approx(math.exp(cell["nll"]), rel=1e-3)
    assert len(cell["position_nll"]) == perplexity.POSITION_BUCKETS
    # A random model is about as unsure as its vocabulary is large.
    assert 0.2 * len(tiny.tokenizer) < cell["ppl"] < 5 * len(tiny.tokenizer)
    fig = again.figure()
    assert [t.x for t in fig.data][0] == (64, 128)  # one point per length
    assert (out / "heatmap.html").exists()


def test_a_rope_base_far_from_the_trained_one_shows_as_higher_perplexity(embedded, workspace_home):
    task = PerplexityConfig(lengths="400", windows=2)
    ppl = {}
    for theta in (None, 50.0):
        target = Target(model=ModelSpec("embedded", rope_theta=theta))
        cells = Evaluation(task, target).run_all()
        ppl[theta] = perplexity.perplexity_by_length(cells)[400][0]
    assert ppl[None] < 40  # the model reads its own documentation well
    assert ppl[50.0] > 2 * ppl[None], ppl


def test_cli_prints_each_window_and_a_curve_per_length(workspace_home, tmp_path, embedded):
    out = tmp_path / "ppl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "perplexity",
            "--model",
            "embedded",
            "--lengths",
            "200,400",
            "--windows",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "L400-W0" in proc.stdout and "perplexity" in proc.stdout
    assert "     400 tokens: perplexity" in proc.stdout
    record = json.loads((out / "config.json").read_text())
    assert record["kind"] == "perplexity" and record["scorer"]["kind"] == "perplexity"
    assert record["window"] == 8192
    # Two of them overlay as curves.
    other = tmp_path / "ppl-rope"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "perplexity",
            "--model",
            "embedded",
            "--rope-theta",
            "1e6",
            "--lengths",
            "200,400",
            "--windows",
            "1",
            "--out",
            str(other),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    diff = tmp_path / "both.html"
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "eval-diff", str(out), str(other), "-o", str(diff)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rope" in diff.read_text()  # both labels are in the figure
