"""Procedural tasks (passkey, keys, topics): valid samples, the requested length, the evidence at
the requested depth; and `longctx make` writing them."""

from __future__ import annotations

import pytest

from core.cli.main import main
from core.data import io, schema
from core.errors import ConfigError
from core.synth import procedural

pytestmark = pytest.mark.integration
LENGTH = 400


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _depth_of(tokenizer, body: str, needle: str) -> float:
    """Where `needle` sits in the filler around it, in % of the filler's tokens."""
    before, _, after = body.partition(needle)
    return 100 * _tokens(tokenizer, before) / _tokens(tokenizer, before + after)


@pytest.mark.parametrize("task", ["passkey", "keys"])
def test_evidence_sits_at_the_requested_depth(embedded_tokenizer, task):
    depths = [0.0, 25.0, 50.0, 75.0, 100.0]
    samples = procedural.make(task, 5, LENGTH, embedded_tokenizer, seed=3, depths=depths)
    for sample, depth in zip(samples, depths, strict=True):
        assert schema.check(sample) == [] and sample["depth"] == depth
        assert 0.85 * LENGTH <= sample["length"] <= LENGTH
        prompt, answer = (t["content"] for t in sample["conversations"])
        assert answer == sample["answer"]
        body = prompt.split("\n\n")[1]  # intro, body, question
        if task == "passkey":
            needle = f"The pass key is {answer}. Remember it. {answer} is the pass key."
        else:  # the asked key's own line, not a distractor's
            asked = prompt.rsplit("value of key ", 1)[1].split("?")[0]
            needle = f"The value of key {asked} is {answer}."
        assert body.count(needle) == 1
        assert abs(_depth_of(embedded_tokenizer, body, needle) - depth) <= 3, (depth, body)


def test_topics_ask_for_the_first_topic_and_seeds_repeat(embedded_tokenizer):
    samples = procedural.make("topics", 2, LENGTH, embedded_tokenizer, seed=1, n_topics=4)
    for sample in samples:
        assert schema.check(sample) == [] and sample["n_topics"] == 4
        conv = sample["conversations"]
        assert conv[0]["content"].startswith(f"Let's talk about {sample['answer']}.")
        assert conv[-1]["content"] == sample["answer"]
    again = procedural.make("topics", 2, LENGTH, embedded_tokenizer, seed=1, n_topics=4)
    assert again == samples
    with pytest.raises(ConfigError, match="percentages"):
        procedural.make("passkey", 1, LENGTH, embedded_tokenizer, depths=[150.0])


def test_make_command_writes_a_valid_set(tmp_path, capsys):
    out = tmp_path / "pk.jsonl"
    code = main(
        [
            "make",
            "passkey",
            "--n",
            "3",
            "--length",
            "300",
            "--depths",
            "0",
            "50",
            "100",
            "--seed",
            "7",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and "wrote 3 passkey samples" in capsys.readouterr().out
    rows = list(io.iter_raw(io.open_source(out)))
    assert [r.problems for r in rows] == [[], [], []]
    assert [r.record["depth"] for r in rows] == [0.0, 50.0, 100.0]
    assert main(["make", "topics", "--n", "1", "--depth", "50", "--out", str(out)]) == 1
    assert "first topic" in capsys.readouterr().err
    assert main(["make", "keys", "--n", "1", "--depth", "120", "--out", str(out)]) == 1
    assert "percentages" in capsys.readouterr().err
