"""Mixtures: counts, ratios, seeds, malformed rows reported (never mixed in), Hub push offline."""

from __future__ import annotations

import json

import pytest
from test_data_support import write_jsonl

from core.data import mix
from core.data.mix import MixPart, MixSpec
from core.errors import ConfigError, LongCtxError


@pytest.fixture
def files(tmp_path):
    qa = write_jsonl(
        tmp_path / "qa.jsonl", [{"text": f"qa {i}", "task": "qa"} for i in range(50)] + ["{oops"]
    )
    red = write_jsonl(
        tmp_path / "red.jsonl", [{"text": f"red {i}", "task": "red"} for i in range(100)]
    )
    return qa, red


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_counts_seed_and_exact_bytes(files, tmp_path):
    qa, red = files
    out = tmp_path / "mix.jsonl"
    spec = MixSpec([MixPart(str(qa), count=10), MixPart(str(red), count=30)], str(out), seed=7)
    report = mix.build_mix(spec)
    rows = _read(out)
    assert report.rows == 40 and len(rows) == 40
    assert sum(r["task"] == "qa" for r in rows) == 10
    assert [(p.valid, p.taken) for p in report.parts] == [(50, 10), (100, 30)]
    assert report.skipped() == [
        f"{qa}: line 51: bad JSON: Expecting property name enclosed in double quotes at column 2"
    ]
    source_lines = set(qa.read_text().splitlines()) | set(red.read_text().splitlines())
    assert set(out.read_text().splitlines()) <= source_lines  # rows are copied byte for byte
    first = out.read_bytes()
    mix.build_mix(spec)
    assert out.read_bytes() == first  # same seed, same mixture
    assert (tmp_path / "mix.jsonl.bak").read_bytes() == first
    mix.build_mix(MixSpec(spec.parts, str(out), seed=8))
    assert out.read_bytes() != first


def test_ratios(files, tmp_path):
    qa, red = files
    out = tmp_path / "mix.jsonl"
    report = mix.build_mix(
        MixSpec([MixPart(str(qa), ratio=0.25), MixPart(str(red), ratio=0.75)], str(out))
    )
    assert [p.taken for p in report.parts] == [33, 100]  # as large as the files allow
    report = mix.build_mix(
        MixSpec([MixPart(str(qa), ratio=0.5), MixPart(str(red), count=40)], str(out))
    )
    assert [p.taken for p in report.parts] == [40, 40]
    report = mix.build_mix(
        MixSpec(
            [MixPart(str(qa), ratio=0.2), MixPart(str(red), ratio=0.8)],
            str(out),
            total=50,
            shuffle=False,
        )
    )
    assert [r["task"] for r in _read(out)] == ["qa"] * 10 + ["red"] * 40


def test_part_syntax_and_refusals(files, tmp_path):
    qa, red = files
    assert MixPart.parse(f"{qa}:12") == MixPart(str(qa), count=12)
    assert MixPart.parse(f"{qa}:0.3") == MixPart(str(qa), ratio=0.3)
    assert MixPart.parse(f"{qa}:30%") == MixPart(str(qa), ratio=0.3)
    assert MixPart.parse(f"{qa}[5]") == MixPart(f"{qa}[5]")
    with pytest.raises(ConfigError, match="ratios add up to 1.2"):
        MixSpec([MixPart("a", ratio=0.6), MixPart("b", ratio=0.6)], "o.jsonl")
    with pytest.raises(ConfigError, match="has 50 valid samples but the mixture needs 60"):
        mix.build_mix(MixSpec([MixPart(str(qa), count=60)], str(tmp_path / "o.jsonl")))
    with pytest.raises(ConfigError, match="also an input"):
        mix.build_mix(MixSpec([MixPart(str(qa), count=1)], str(qa)))


def test_push_without_network_says_so(files):
    qa, _ = files
    with pytest.raises(LongCtxError, match="cannot be reached"):
        mix.push_to_hub(qa, "me/my-mix", token="hf_x")
    with pytest.raises(ConfigError, match="user/name"):
        mix.push_to_hub(qa, "not a repo")
