"""core.rope.advisor, the RoPE base advisor: hand-derived values for the formulas, the Men et al. bound
against a brute-force check, the figure's panels, and `longctx rope` on real configs."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from core.cli import main
from core.errors import LongCtxError
from core.rope import advisor, figures

LLAMA3 = advisor.RopeShape(base=5e5, head_dim=128, window=8192)  # Llama-3-8B-Instruct
EMBEDDED = advisor.RopeShape(base=1e5, head_dim=64, window=8192)  # SmolLM2-135M-Instruct


def brute_bias(base: float, head_dim: int, target: int) -> np.ndarray:
    """B(m) = sum_i cos(m theta_i) the slow way, one cosine per (m, i)."""
    m = np.arange(target + 1, dtype=np.float64)[:, None]
    return np.cos(m * advisor.frequencies(base, head_dim)).sum(axis=1)


def test_wavelengths_by_hand():
    # head_dim 4: pairs i = 0, 1 turn once every 2*pi*10000**(0/4) and 2*pi*10000**(2/4) tokens.
    assert np.allclose(advisor.wavelengths(10000, 4), [2 * math.pi, 200 * math.pi])
    assert np.allclose(advisor.frequencies(10000, 4), [1.0, 0.01])


def test_critical_dimension_by_hand():
    # Llama-3: 64 * ln(8192 / 2pi) / ln(5e5) = 64 * 7.17303 / 13.12236 = 34.98 -> 2 * 35.
    assert advisor.critical_dimension(5e5, 128, 8192) == 70
    # Llama-2 (base 1e4, 4K): 64 * 6.48000 / 9.21034 = 45.03 -> 92, the value Liu et al. give.
    assert advisor.critical_dimension(1e4, 128, 4096) == 92
    # The embedded model: 32 * 7.17303 / 11.51293 = 19.94 -> 40.
    assert advisor.critical_dimension(1e5, 64, 8192) == 40
    # Clipped: no turn fits in 5 tokens; every pair turns within a billion.
    assert advisor.critical_dimension(1e4, 128, 5) == 0
    assert advisor.critical_dimension(1e4, 128, 10**9) == 128


def test_ntk_and_critical_formulas():
    assert advisor.ntk_base(LLAMA3, 81920) == pytest.approx(5e5 * 10 ** (128 / 126))
    assert advisor.ntk_base(EMBEDDED, 16384) == pytest.approx(1e5 * 2 ** (64 / 62))
    base = advisor.critical_base(LLAMA3, 81920)
    assert base == pytest.approx((81920 / (2 * math.pi)) ** (128 / 70))
    # Its point: pair d_c/2 = 35 (the first that did not turn in training) turns once in 80K,
    # and training at 80K with it keeps the critical dimension where it was.
    assert advisor.wavelengths(base, 128)[35] == pytest.approx(81920)
    assert advisor.critical_dimension(base, 128, 81920) == 70


def test_attention_bias_matches_the_slow_sum():
    for base, head_dim in ((5e5, 128), (1e5, 64), (2e8, 128)):
        fast = advisor.attention_bias(base, head_dim, 0, 20000)
        assert np.allclose(fast, brute_bias(base, head_dim, 20000), atol=1e-8)
    # Any range, not only from 0.
    assert np.allclose(
        advisor.attention_bias(5e5, 128, 777, 1234), brute_bias(5e5, 128, 1234)[777:], atol=1e-8
    )
    assert advisor.attention_bias(5e5, 128, 0, 0)[0] == pytest.approx(64)  # cos(0) for every pair


@pytest.mark.parametrize("head_dim,target", [(128, 81920), (64, 81920), (128, 8192)])
def test_bound_holds_at_the_returned_base_and_fails_below(head_dim, target):
    started = time.perf_counter()
    base = advisor.bound_base.__wrapped__(head_dim, target)  # not the cached value: time it
    elapsed = time.perf_counter() - started
    assert brute_bias(base, head_dim, target).min() >= 0
    below = brute_bias(0.9 * base, head_dim, target)
    assert below.min() < 0
    assert advisor.negative_bias_at(0.9 * base, head_dim, target) == int(np.argmax(below < 0))
    assert elapsed < 15, f"bound for {target} tokens took {elapsed:.2f} s"  # ~0.4 s unloaded


def test_bound_grows_with_the_target_and_agrees_with_men_et_al():
    bounds = [advisor.bound_base(128, t) for t in (8192, 16384, 32768, 81920, 131072)]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
    # Table 1 of Men et al. 2024 (head_dim 128): 8K -> 8.4e4, 64K -> 2.1e6.
    assert advisor.bound_base(128, 8192) == pytest.approx(8.4e4, rel=0.02)
    assert advisor.bound_base(128, 65536) == pytest.approx(2.1e6, rel=0.02)


def test_suggestions_for_llama3_at_80k():
    by_name = {s.name: s for s in advisor.suggestions(LLAMA3, 81920)}
    assert list(by_name) == ["ntk", "critical", "bound"]
    assert by_name["ntk"].base == pytest.approx(5.19e6)  # rounded up to 3 digits
    assert by_name["critical"].base == pytest.approx(3.35e7)
    assert by_name["bound"].base >= advisor.bound_base(128, 81920)
    assert by_name["bound"].base == pytest.approx(advisor.bound_base(128, 81920), rel=1e-3)
    for s in by_name.values():
        assert s.why and s.source
        assert advisor.negative_bias_at(s.base, 128, 81920) is None  # all three pass for Llama-3


def test_check_base_for_the_papers_numbers():
    check = advisor.check_base(LLAMA3, 2e8, 81920)
    assert check.longest_wavelength == pytest.approx(2 * math.pi * 2e8 ** (126 / 128))
    # 64 * ln(81920 / 2pi) / ln(2e8) = 64 * 9.47561 / 19.11383 = 31.73 -> 2 * 32.
    assert check.critical_dim == 64 and check.original_critical_dim == 70
    assert check.bias_ok and check.first_negative is None
    assert any("stays >= 0" in line for line in check.summary())

    # Llama-3's own base does not reach 80K: B(m) dips below zero, first at the distance given.
    own = advisor.check_base(LLAMA3, 5e5, 81920)
    slow = brute_bias(5e5, 128, 81920)
    assert not own.bias_ok and own.first_negative == int(np.argmax(slow < 0))
    assert any(f"{own.first_negative:,}" in line for line in own.summary())

    # The same 200M on a head_dim-64 model is not enough: the paper's base is no general rule.
    assert not advisor.check_base(EMBEDDED, 2e8, 81920).bias_ok


def test_targets_that_do_not_extend_the_window_are_refused():
    for target in (512, 8192):
        with pytest.raises(LongCtxError, match="does not extend the model's window"):
            advisor.suggestions(EMBEDDED, target)
    with pytest.raises(LongCtxError, match="beyond what the advisor computes"):
        advisor.advise(EMBEDDED, 10**8)
    with pytest.raises(LongCtxError, match="head_dim must be an even number"):
        advisor.RopeShape(base=1e4, head_dim=63, window=4096)


def test_rope_shape_reads_configs():
    from transformers import GPT2Config, LlamaConfig

    plain = LlamaConfig(
        hidden_size=4096, num_attention_heads=32, rope_theta=5e5, max_position_embeddings=8192
    )
    assert advisor.rope_shape(plain) == LLAMA3
    scaled = LlamaConfig(
        hidden_size=4096,
        num_attention_heads=32,
        max_position_embeddings=131072,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 5e5,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    shape = advisor.rope_shape(scaled)
    assert shape.scaling == "llama3" and shape.window == 131072
    assert "llama3" in advisor.advise(shape, 262144).shape_line()
    with pytest.raises(LongCtxError, match="no RoPE base"):
        advisor.rope_shape(GPT2Config())


def test_figure_has_both_panels_and_keeps_every_dip():
    fig = figures.base_figure(EMBEDDED, 2e8, 81920)
    left = [t for t in fig.data if t.xaxis == "x"]
    right = [t for t in fig.data if t.xaxis == "x2"]
    assert [t.name for t in left] == [
        "original base 100K",
        "new base 200M",
        "window 8,192 tokens",
        "target 81,920 tokens",
    ]
    assert np.allclose(left[1].y, advisor.wavelengths(2e8, 64))
    assert list(left[2].y) == [8192, 8192] and list(left[3].y) == [81920, 81920]
    assert fig.layout.yaxis.type == "log"

    assert [t.name for t in right] == ["B(m), original base 100K", "B(m), new base 200M"]
    slow = brute_bias(2e8, 64, 81920) / 32
    new = right[1]
    assert len(new.x) <= 4000  # drawn: a few thousand points, not 81,921
    # Every bucket's extremes are kept: the lowest dip (below zero) and the highest point show.
    assert min(new.y) == pytest.approx(slow.min()) and min(new.y) < 0
    assert max(new.y) == pytest.approx(slow.max())
    assert np.allclose(new.y, slow[np.asarray(new.x)])

    shapes = fig.layout.shapes
    assert any(s.y0 == 0 and s.y1 == 0 and s.yref == "y2" for s in shapes)  # the zero line
    assert any(s.x0 == 8192 and s.x1 == 8192 and s.xref == "x2" for s in shapes)  # the window
    titles = [a.text for a in fig.layout.annotations]
    assert "Wavelength of each dimension pair" in titles
    assert fig.layout.xaxis2.title.text == "distance m (tokens)"


def test_compact_numbers():
    assert [advisor.compact(x) for x in (2e8, 5e5, 5186130, 81920, 999.6e3, 12, 3e15)] == [
        "200M",
        "500K",
        "5.19M",
        "81.9K",
        "1M",
        "12",
        "3e+15",
    ]


def test_cli_on_a_llama3_shaped_folder(tmp_path, capsys):
    from transformers import LlamaConfig

    LlamaConfig(
        hidden_size=4096,
        num_attention_heads=32,
        num_key_value_heads=8,
        rope_theta=5e5,
        max_position_embeddings=8192,
    ).save_pretrained(tmp_path)
    assert main.main(["rope", "--model", str(tmp_path), "--target", "81920", "--base", "200M"]) == 0
    out = capsys.readouterr().out
    assert "RoPE base 500K, head_dim 128, window 8,192 tokens; critical dimension 70" in out
    for name, base in (
        ("ntk", "5.19M"),
        ("critical", "33.5M"),
        ("bound", "3.48M"),
        ("paper", "200M"),
    ):
        assert any(line.split()[:2] == [name, base] for line in out.splitlines()), (name, out)
    assert "critical dimension at the target 64 of 128" in out
    assert "B(m) stays >= 0 up to 81,920 tokens" in out


@pytest.mark.integration
def test_cli_on_the_embedded_model_writes_the_figure(tmp_path, capsys):
    html = tmp_path / "advisor.html"
    args = ["rope", "--model", "embedded", "--target", "81920", "--base", "2e8", "--html"]
    assert main.main([*args, str(html)]) == 0
    out = capsys.readouterr().out
    assert "embedded: RoPE base 100K, head_dim 64, window 8,192 tokens" in out
    for name in ("ntk", "critical", "bound", "paper"):
        assert any(line.split()[:1] == [name] for line in out.splitlines()), (name, out)
    assert "B(m) goes negative at distance" in out
    text = html.read_text()
    assert "plotly" in text and "Attention bias B(m)" in text

    assert main.main(["rope", "--model", "embedded", "--target", "4k"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "longctx rope: error: target 4,000 tokens does not extend the model's window (8,192); "
        "set a longer target length (the paper: 8K -> 80K)"
    )
