"""NIAH grids and needle placement: exact values for the pure functions, then real prompts built
with the embedded model's tokenizer (no weights loaded)."""

from __future__ import annotations

import pytest

from core.errors import ConfigError, LongCtxError
from core.evals.niah import (
    DEFAULT_NEEDLE,
    DEFAULT_PREFIX,
    NiahConfig,
    chat_frame,
    depth_grid,
    haystack_end,
    length_grid,
    linear_points,
    needle_position,
    parse_numbers,
    sentence_starts,
)

# ---------------------------------------------------------------------------------------------
# Grids.


def test_parse_numbers_accepts_k_suffixes_and_spaces():
    assert parse_numbers("500, 1k,2K 80k") == [500.0, 1000.0, 2000.0, 80000.0]
    assert parse_numbers([1, 2.5]) == [1.0, 2.5]
    with pytest.raises(ConfigError, match="not numbers: abc"):
        parse_numbers("500,abc")


def test_linear_and_log_grids():
    assert linear_points(0, 100, 5) == [0, 25, 50, 75, 100]
    assert depth_grid(0, 100, 3) == [0.0, 50.0, 100.0]
    assert length_grid(500, 2000, 4) == [500, 1000, 1500, 2000]
    assert length_grid(1000, 8000, 4, "log") == [1000, 2000, 4000, 8000]
    assert depth_grid(10, 10, 1) == [10.0]


def test_sigmoid_depths_hit_the_ends_and_crowd_them():
    assert depth_grid(0, 100, 5, "sigmoid") == [0.0, 14.91, 50.0, 85.09, 100.0]
    assert depth_grid(0, 100, 7, "sigmoid") == [0.0, 7.93, 24.47, 50.0, 75.53, 92.07, 100.0]


def test_bad_spacing_is_refused():
    with pytest.raises(ConfigError, match="linear' or 'sigmoid"):
        depth_grid(0, 100, 3, "cubic")
    with pytest.raises(ConfigError, match="linear' or 'log"):
        length_grid(1, 2, 2, "sigmoid")


# ---------------------------------------------------------------------------------------------
# Placement.

TEXTS = ["Hello", " world", ".", " Next", " one", ".", "\n", "\n", "The", " os", ".", "path", "."]
#         0        1         2     3        4       5     6     7      8      9      10   11    12


def test_sentence_starts_follow_sentence_ends_before_whitespace():
    # after "." at 2 (next " Next"), after "." at 5 (next "\n"), and the end; not after "os."
    assert sentence_starts(TEXTS) == [3, 6, 13]
    assert sentence_starts(['He said "no."', " Then"]) == [1]
    assert sentence_starts(["Why", "?"]) == [2]
    assert sentence_starts(["no", " end"]) == []


def test_haystack_is_cut_after_a_whole_sentence():
    assert haystack_end([3, 6, 13], 12) == 6
    assert haystack_end([3, 6, 13], 13) == 13
    assert haystack_end([3, 6, 13], 2) == 2  # no sentence ends that early: cut at the budget


@pytest.mark.parametrize(
    ("depth", "expected"),
    [(0, 0), (100, 20), (50, 10), (45, 10), (25, 6), (12.5, 0), (1, 0), (99, 20), (80, 14)],
)
def test_needle_goes_to_the_nearest_sentence_boundary(depth, expected):
    # A 20-token haystack with sentences starting at 6, 10 and 14 (20 is its end).
    assert needle_position([6, 10, 14, 20], 20, depth) == expected


def test_needle_ties_go_to_the_earlier_boundary():
    assert needle_position([4, 8], 12, 50) == 4  # target 6: 4 and 8 are both 2 away
    assert needle_position([6, 10, 14, 20], 20, 60) == 10  # target 12: 10 and 14


def test_needle_without_boundaries_uses_the_exact_token():
    assert needle_position([], 200, 37) == 74


# ---------------------------------------------------------------------------------------------
# Config validation.


def test_config_gathers_every_problem():
    with pytest.raises(ConfigError) as info:
        NiahConfig(lengths=[8], depths=[-5, 120], needle=" ", template="no slots", max_new_tokens=0)
    text = str(info.value)
    for fragment in (
        "lengths must",
        "depths must",
        "needle is empty",
        "template",
        "max_new_tokens",
    ):
        assert fragment in text
    assert len(info.value.problems) == 5


def test_config_sorts_and_deduplicates_the_grid():
    task = NiahConfig(lengths="2k,500,500", depths=[100, 0, 50])
    assert task.lengths == [500, 2000] and task.depths == [0.0, 50.0, 100.0]
    assert task.cell_keys()[:3] == ["L500-D0", "L500-D50", "L500-D100"]


# ---------------------------------------------------------------------------------------------
# Prompts on the embedded tokenizer.


@pytest.fixture(scope="module")
def tokenizer():
    from core.models.tokenizers import load_tokenizer

    return load_tokenizer("embedded")


@pytest.fixture(scope="module")
def prompts(tokenizer):
    task = NiahConfig(lengths=[400, 800], depths=[0, 50, 100])
    return {p.key: p for p in task.prompts(tokenizer)}


def _context(tokenizer, prompt) -> str:
    content = prompt.messages[0]["content"]
    return content.split("<document>\n", 1)[1].rsplit("\n</document>", 1)[0]


def test_depth_0_and_100_put_the_needle_at_the_start_and_the_end(tokenizer, prompts):
    for length in (400, 800):
        start = _context(tokenizer, prompts[f"L{length}-D0"])
        end = _context(tokenizer, prompts[f"L{length}-D100"])
        assert start.startswith(DEFAULT_NEEDLE + " ")
        assert end.endswith(". " + DEFAULT_NEEDLE)
        assert prompts[f"L{length}-D0"].info["needle_token"] == 0
        info = prompts[f"L{length}-D100"].info
        assert info["needle_token"] == info["haystack_tokens"] and info["actual_depth"] == 100


def test_middle_needle_sits_between_sentences_near_the_depth(tokenizer, prompts):
    prompt = prompts["L800-D50"]
    before, after = _context(tokenizer, prompt).split(" " + DEFAULT_NEEDLE)
    assert before.rstrip().endswith((".", "!", "?")) and after[:1].isspace()
    assert abs(prompt.info["actual_depth"] - 50) < 5


def test_prompts_fit_their_length_and_render_the_chat_template(tokenizer, prompts):
    head, tail = chat_frame(tokenizer, NiahConfig().template, NiahConfig().question)
    prefix = tokenizer(DEFAULT_PREFIX, add_special_tokens=False)["input_ids"]
    for prompt in prompts.values():
        assert prompt.info["length"] - 40 < len(prompt.ids) <= prompt.info["length"]
        assert prompt.ids[: len(head)] == head and prompt.ids[-len(tail) - len(prefix) :] == [
            *tail,
            *prefix,
        ]
        # The answer is started where an endpoint continuing the last message would start it.
        assert prompt.answer_prefix == DEFAULT_PREFIX
        assert prompt.messages[-1] == {"role": "assistant", "content": DEFAULT_PREFIX}
        rendered = tokenizer.apply_chat_template(
            prompt.messages, tokenize=False, continue_final_message=True
        )
        assert tokenizer.decode(prompt.ids) == rendered
        assert rendered.endswith("<|im_start|>assistant\n" + DEFAULT_PREFIX)


def test_without_a_prefix_the_prompt_opens_the_answer(tokenizer):
    task = NiahConfig(lengths=[400], depths=[50], answer_prefix="  ")
    (prompt,) = task.prompts(tokenizer)
    assert prompt.answer_prefix == "" and prompt.messages[-1]["role"] == "user"
    rendered = tokenizer.apply_chat_template(
        prompt.messages, tokenize=False, add_generation_prompt=True
    )
    assert tokenizer.decode(prompt.ids) == rendered


def test_cells_come_deepest_needle_first_for_prefix_reuse(prompts):
    positions = [p.info["needle_token"] for p in prompts.values()]
    assert positions == sorted(positions, reverse=True)


def test_skipped_cells_are_not_built(tokenizer):
    task = NiahConfig(lengths=[400], depths=[0, 100])
    assert [p.key for p in task.prompts(tokenizer, skip={"L400-D0"})] == ["L400-D100"]


def test_a_length_smaller_than_the_frame_is_refused(tokenizer):
    with pytest.raises(LongCtxError, match=r"lengths \[40\] leave no room"):
        list(NiahConfig(lengths=[40, 400], depths=[0]).prompts(tokenizer))


def test_frame_without_a_chat_template_is_plain_text(tokenizer):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    head, tail = chat_frame(plain, "Doc:{context}\nQ: {question}", "Why?")
    hay = plain(" some hay.", add_special_tokens=False)["input_ids"]
    assert plain.decode(head + hay + tail) == "Doc: some hay.\nQ: Why?\n"


# ---------------------------------------------------------------------------------------------
# The paper's NIAH presets.


def test_paper_preset_is_the_papers_grid_needle_and_scorer():
    from core.evals.niah import PAPER_QUESTION, PRESETS, WHOLE_NEEDLE

    paper, judged = PRESETS["paper"], PRESETS["paper-judge"]
    task = paper.config()
    assert task.lengths == length_grid(8192, 131072, 10)
    assert task.lengths[0] == 8192 and task.lengths[-1] == 131072 and len(task.lengths) == 10
    assert task.depths == [float(d) for d in range(0, 101, 10)]  # 11 depths
    # Scored against the whole needle, which stays an editable field.
    assert task.answer == WHOLE_NEEDLE and task.expected() == DEFAULT_NEEDLE
    assert paper.config(needle="Otters hold hands when they sleep.").expected() == (
        "Otters hold hands when they sleep."
    )
    assert task.needle == DEFAULT_NEEDLE and task.question == PAPER_QUESTION
    assert task.needle_spacing == "blank_lines" and task.answer_prefix == ""
    assert task.template.endswith("\n\n{question}\nAnswer:") and task.max_new_tokens == 50
    assert (paper.scorer, judged.scorer) == ("rouge_l_f1", "judge")
    assert judged.config() == task  # the same prompts, another scorer
    for preset in (paper, judged):
        assert "differs from the paper" in preset.description
        assert "Paul Graham" in preset.description and "--haystack" in preset.description


def test_paper_preset_grid_follows_a_lower_longest_length():
    from core.evals.niah import PRESETS

    paper = PRESETS["paper"]
    assert paper.lengths(max_length=32768) == length_grid(8192, 32768, 10)
    assert paper.lengths(max_length=8192) == length_grid(512, 8192, 10)  # 8192 / 16
    assert paper.lengths(max_length=512, num_lengths=2) == [256, 512]  # at least 256
    assert paper.lengths(min_length=300, max_length=600, num_lengths=3) == [300, 450, 600]


def test_paper_prompts_set_the_needle_apart_and_end_with_the_answer_prefix(tokenizer):
    from core.evals.niah import PAPER_QUESTION, PRESETS

    task = PRESETS["paper"].config(lengths=[400, 800], depths=[0, 50, 100])
    prompts = {p.key: p for p in task.prompts(tokenizer)}
    assert sorted(prompts) == sorted(task.cell_keys())
    for prompt in prompts.values():
        (turn,) = prompt.messages  # one user turn; no reply is prefilled
        content = turn["content"]
        assert f"\n\n{DEFAULT_NEEDLE}\n\n" in content
        assert content.endswith(f"\n\n{PAPER_QUESTION}\nAnswer:")
        assert prompt.info["expected"] == DEFAULT_NEEDLE and prompt.answer_prefix == ""
        rendered = tokenizer.apply_chat_template(
            prompt.messages, tokenize=False, add_generation_prompt=True
        )
        assert tokenizer.decode(prompt.ids) == rendered
        assert rendered.endswith("\nAnswer:<|im_end|>\n<|im_start|>assistant\n")
        assert prompt.info["length"] - 40 < len(prompt.ids) <= prompt.info["length"]
    # In the middle the needle is a paragraph of its own after a whole sentence.
    before = prompts["L800-D50"].messages[0]["content"].split(f"\n\n{DEFAULT_NEEDLE}\n\n")[0]
    assert before.rstrip().endswith((".", "!", "?"))
    assert abs(prompts["L800-D50"].info["actual_depth"] - 50) < 5


def test_needle_spacing_is_checked():
    with pytest.raises(ConfigError, match="needle_spacing must be one of space, blank_lines"):
        NiahConfig(needle_spacing="tabs")
